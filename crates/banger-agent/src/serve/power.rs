//! Powering the guest off or restarting it after a `Shutdown` request.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use banger_agent_proto::ShutdownAction;
use nix::sys::reboot::RebootMode;

use crate::process::run_checked;
use crate::system::reboot_now;

/// Exists while systemd is the init system (see `sd_booted(3)`).
const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";

/// Time allowed for `systemctl --no-block` to queue the job.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks systemd to power off or reboot when it is the init system, so
/// services stop cleanly; otherwise, or when `systemctl` fails, calls
/// `reboot(2)` directly. File systems were synced before.
pub fn shut_down_guest(action: ShutdownAction) {
    if Path::new(SYSTEMD_RUNTIME_DIR).exists() {
        let verb = match action {
            ShutdownAction::Poweroff => "poweroff",
            ShutdownAction::Reboot => "reboot",
        };
        let mut command = Command::new("systemctl");
        command.args(["--no-block", verb]);
        match run_checked(&mut command, SYSTEMCTL_TIMEOUT) {
            Ok(_) => {
                log_line!("systemd is running the {verb} job");
                return;
            }
            Err(error) => log_line!("{}; calling reboot(2) directly", crate::error_chain(&error)),
        }
    }
    let mode = match action {
        ShutdownAction::Poweroff => RebootMode::RB_POWER_OFF,
        ShutdownAction::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let error = reboot_now(mode);
    log_line!("{}", crate::error_chain(&error));
}
