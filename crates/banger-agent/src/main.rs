use std::process::ExitCode;

use banger_agent::cli::{self, Command, NetSetupOptions, ServeTarget, USAGE};
use banger_agent::net::{self, SetupPaths};
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
        Command::Serve(target) => {
            // A guest serves a virtio-serial port or device. The Unix socket
            // mode runs on hosts for tests and leaves the network alone.
            if !matches!(target, ServeTarget::UnixSocket(_)) {
                net::setup_at_serve_start();
            }
            match serve::run(&target) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("banger-agent: serve: {}", error_chain(&error));
                    ExitCode::FAILURE
                }
            }
        }
        Command::NetSetup(options) => net_setup(&options),
    }
}

fn net_setup(options: &NetSetupOptions) -> ExitCode {
    let paths = SetupPaths {
        etc_dir: options.etc_dir.clone(),
        ..SetupPaths::default()
    };
    match net::setup_from_cmdline(&options.cmdline_file, &paths) {
        Ok(None) => {
            eprintln!(
                "banger-agent: net-setup: no banger.* network parameters in {}; nothing to do",
                options.cmdline_file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(Some(steps)) => {
            eprintln!("banger-agent: net-setup: {}", steps.join(", "));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("banger-agent: net-setup: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
