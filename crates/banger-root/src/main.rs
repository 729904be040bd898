//! banger-root: the privileged helper of banger. It creates the bridge and
//! the VMs' taps, sets up NAT and routes the `vm` DNS domain, on requests
//! from root or the one user named in its configuration file.

mod config;
mod server;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use banger_net::command::SystemRunner;
use banger_net::error_chain;
use banger_net::helper::{DEFAULT_CONFIG_PATH, Executor};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use config::RootConfig;

/// banger's privileged network helper. Serves one JSON request per
/// connection on a Unix socket that only root and the configured owner uid
/// can use.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML with `owner_uid`, optional `bridge`,
    /// `pool`, `uplink` and `socket`).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Socket path; overrides `socket` in the configuration file.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Log filter, e.g. `info` or `banger_root=debug` (also `BANGER_ROOT_LOG`).
    #[arg(long, env = "BANGER_ROOT_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("banger-root: starting the async runtime failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "banger-root must run as root: it changes network devices and nftables rules"
                .to_owned(),
        );
    }
    let config = RootConfig::load(&args.config).map_err(|error| error_chain(&error))?;
    let socket = args.socket.unwrap_or_else(|| config.socket.clone());
    let executor = Executor::new(config.helper_config(), Arc::new(SystemRunner))
        .map_err(|error| error_chain(&error))?;
    let listener = server::bind(&socket, config.owner_uid).map_err(|error| error_chain(&error))?;
    tracing::info!(
        socket = %socket.display(),
        owner_uid = config.owner_uid,
        bridge = %config.bridge,
        pool = %config.pool,
        "banger-root {} listening",
        env!("CARGO_PKG_VERSION")
    );

    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| format!("installing the SIGTERM handler failed: {error}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| format!("installing the SIGINT handler failed: {error}"))?;
    tokio::select! {
        () = server::serve(listener, Arc::new(executor)) => {}
        _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT received; stopping"),
    }
    if let Err(error) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), %error, "removing the socket failed");
    }
    Ok(())
}
