//! Subcommands.

mod daemon;
mod doctor;
mod image;
mod kernel;
mod ssh;
mod stats;
mod system;
mod vm;
mod workspace;

use clap::Subcommand;

use crate::render::CliError;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// List VMs (same as `banger vm list`).
    Ps(vm::ListArgs),
    /// Manage guest kernels.
    #[command(subcommand)]
    Kernel(kernel::KernelCommand),
    /// Manage root file system images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Check the host: KVM, QEMU, Firecracker, the boot probe, disk space, tools.
    Doctor,
    /// Inspect or stop the daemon.
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// Print the path of banger's ssh_config file, or include it in ~/.ssh/config.
    SshConfig(ssh::SshConfigArgs),
    /// Install, inspect or remove the systemd units of banger-root and bangerd.
    #[command(subcommand)]
    System(system::SystemCommand),
}

/// An error with the exit code it ends the process with.
pub struct Failure {
    pub error: CliError,
    pub exit_code: u8,
}

/// Exit code for banger's own failures in commands that otherwise return the
/// guest command's code (the same convention as `docker run`).
pub const EXIT_BANGER_FAILED: u8 = 125;

impl From<CliError> for Failure {
    fn from(error: CliError) -> Self {
        Failure {
            error,
            exit_code: 1,
        }
    }
}

pub async fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Vm(command) => vm::run(command).await,
        Command::Ps(args) => vm::list(args).await.map_err(Failure::from),
        Command::Kernel(command) => kernel::run(command).await.map_err(Failure::from),
        Command::Image(command) => image::run(command).await.map_err(Failure::from),
        Command::Daemon(command) => daemon::run(command).await.map_err(Failure::from),
        Command::Doctor => doctor::run().await.map_err(Failure::from),
        Command::SshConfig(args) => ssh::ssh_config(args),
        Command::System(command) => system::run(command).await,
    }
}
