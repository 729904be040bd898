//! The last steps of stopping any VMM: SIGTERM, then SIGKILL, each given
//! the backend's step timeout to take effect.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process;
use crate::types::{StopPath, VmProcess};
use crate::vmm::VmmError;

/// Sends `signal` and returns whether the process is gone within `timeout`.
/// A process that is already gone counts as gone.
pub async fn signal_and_wait(
    process: &VmProcess,
    signal: Signal,
    timeout: Duration,
) -> Result<bool, VmmError> {
    process::send_signal(process.pid, process.start_time, signal).map_err(|source| {
        VmmError::Process {
            pid: process.pid,
            source,
        }
    })?;
    Ok(process::wait_gone(process.pid, process.start_time, timeout).await)
}

/// Ends a VMM that outlived its backend's gentler requests: SIGTERM, then
/// SIGKILL. Returns the step that ended it; `name` is for the log.
pub async fn terminate(
    process: &VmProcess,
    timeout: Duration,
    name: &str,
) -> Result<StopPath, VmmError> {
    if signal_and_wait(process, Signal::SIGTERM, timeout).await? {
        return Ok(StopPath::Sigterm);
    }
    tracing::warn!(
        pid = process.pid,
        "{name} did not exit after SIGTERM; sending SIGKILL"
    );
    kill(process, timeout).await?;
    Ok(StopPath::Sigkill)
}

/// Sends SIGKILL and waits until the process is gone.
pub async fn kill(process: &VmProcess, timeout: Duration) -> Result<(), VmmError> {
    if signal_and_wait(process, Signal::SIGKILL, timeout).await? {
        return Ok(());
    }
    Err(VmmError::KillTimedOut {
        pid: process.pid,
        waited: timeout,
    })
}
