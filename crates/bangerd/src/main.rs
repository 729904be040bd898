//! bangerd: the per-user daemon that owns banger's state and runs the VMs.

mod agent;
mod agent_bin;
mod artifacts;
mod backend;
mod boot;
mod config;
mod daemon;
mod dns;
mod doctor;
mod error;
mod events;
mod exec;
mod logs;
mod net_routes;
mod network;
mod ports;
mod reconcile;
mod routes;
mod server;
mod ssh;
mod stats;
mod vms;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

/// banger's daemon. The `banger` CLI starts it on first use; it listens on
/// `$XDG_RUNTIME_DIR/banger/bangerd.sock`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Log filter, e.g. `info` or `bangerd=debug` (also `BANGER_LOG`).
    #[arg(long, env = "BANGER_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(server::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("bangerd failed: {error:#}");
            eprintln!("bangerd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The current time as RFC 3339 in UTC, second precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
