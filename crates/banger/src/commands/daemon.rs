use clap::Subcommand;

use crate::client::Client;
use crate::render::CliError;

#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Show whether the daemon runs, and its pid and socket.
    Status,
    /// Stop the daemon; running VMs keep running and are found again at its next start.
    Stop,
}

pub async fn run(command: DaemonCommand) -> Result<u8, CliError> {
    let client = Client::existing();
    let socket = client.paths.socket();
    match command {
        DaemonCommand::Status => match client.get::<banger_api::Health>("/health").await {
            Ok(health) => {
                println!(
                    "running: pid {} · version {} · {}",
                    health.pid,
                    health.version,
                    socket.display()
                );
                Ok(0)
            }
            Err(_) => {
                println!("not running (socket {})", socket.display());
                Ok(3)
            }
        },
        DaemonCommand::Stop => {
            let health = match client.get::<banger_api::Health>("/health").await {
                Ok(health) => health,
                Err(_) => {
                    eprintln!("the daemon is not running");
                    return Ok(0);
                }
            };
            client.post_empty("/shutdown").await?;
            // Wait until the process is gone so a following start finds the socket free.
            let proc_dir = std::path::PathBuf::from(format!("/proc/{}", health.pid));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while proc_dir.exists() && std::time::Instant::now() < deadline {
                if is_zombie(&proc_dir) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if proc_dir.exists() && !is_zombie(&proc_dir) {
                return Err(CliError::local(format!(
                    "the daemon (pid {}) did not exit within 30 s",
                    health.pid
                )));
            }
            eprintln!("daemon stopped (pid {})", health.pid);
            Ok(0)
        }
    }
}

fn is_zombie(proc_dir: &std::path::Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
