use std::process::ExitCode;

use banger_agent::cli::{self, Command, USAGE};
use banger_agent::{VERSION, error_chain, initramfs, serve, system};

fn main() -> ExitCode {
    // The kernel starts the initramfs init as PID 1 with argv[0] "/init".
    let argv0 = std::env::args_os().next();
    if system::is_pid1() && argv0.as_deref() == Some("/init".as_ref()) {
        initramfs::run();
    }

    let command = match cli::parse_args(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("banger-agent: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Version => {
            println!("banger-agent {VERSION}");
            ExitCode::SUCCESS
        }
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Serve(target) => match serve::run(&target) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("banger-agent: serve: {}", error_chain(&error));
                ExitCode::FAILURE
            }
        },
    }
}
