//! banger: persistent development VMs on microVMs.

mod client;
mod commands;
mod remote;
mod render;
mod terminal;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Command;

/// Persistent development VMs on microVMs.
#[derive(Parser, Debug)]
#[command(name = "banger", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            render::print_error(&failure.error);
            ExitCode::from(failure.exit_code)
        }
    }
}
