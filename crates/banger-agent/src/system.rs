//! Small wrappers around system calls used by both modes.

use nix::sys::reboot::{RebootMode, reboot};
use nix::unistd::{Pid, getpid, sync};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SystemError {
    #[error("uname failed")]
    Uname(#[source] nix::Error),
    #[error("reboot({mode:?}) failed")]
    Reboot {
        mode: RebootMode,
        #[source]
        source: nix::Error,
    },
}

/// Returns the kernel release (`uname -r`).
pub fn kernel_release() -> Result<String, SystemError> {
    let name = nix::sys::utsname::uname().map_err(SystemError::Uname)?;
    Ok(name.release().to_string_lossy().into_owned())
}

/// Returns the kernel release, or `unknown` when `uname` fails.
pub fn kernel_release_or_unknown() -> String {
    kernel_release().unwrap_or_else(|error| {
        log_line!("{}", crate::error_chain(&error));
        "unknown".to_owned()
    })
}

/// Returns true when this process is the init process of its PID namespace.
pub fn is_pid1() -> bool {
    getpid() == Pid::from_raw(1)
}

/// Syncs file systems and powers the machine off or restarts it at once,
/// without stopping services. Returns only when the kernel rejects the call.
pub fn reboot_now(mode: RebootMode) -> SystemError {
    sync();
    match reboot(mode) {
        Ok(never) => match never {},
        Err(source) => SystemError::Reboot { mode, source },
    }
}
