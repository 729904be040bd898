//! API requests and the stop sequence of a running Firecracker.

use std::time::Duration;

use super::api::{ActionType, VmState};
use super::rundir::{remove_sockets, socket_owner};
use super::{FirecrackerVmm, RunPaths};
use crate::error_chain;
use crate::process;
use crate::signals;
use crate::types::{StopPath, VmProcess, VmRunState};
use crate::vmm::VmmError;

pub async fn send_ctrl_alt_del(vmm: &FirecrackerVmm, process: &VmProcess) -> Result<(), VmmError> {
    vmm.api(process)
        .action(ActionType::SendCtrlAltDel)
        .await
        .map_err(|source| VmmError::Api {
            pid: process.pid,
            request: "PUT /actions SendCtrlAltDel",
            source: Box::new(source),
        })
}

pub async fn set_state(
    vmm: &FirecrackerVmm,
    process: &VmProcess,
    state: VmState,
) -> Result<(), VmmError> {
    let request = match state {
        VmState::Paused => "PATCH /vm Paused",
        VmState::Resumed => "PATCH /vm Resumed",
    };
    vmm.api(process)
        .set_vm_state(state)
        .await
        .map_err(|source| VmmError::Api {
            pid: process.pid,
            request,
            source: Box::new(source),
        })
}

pub async fn run_state(vmm: &FirecrackerVmm, process: &VmProcess) -> Result<VmRunState, VmmError> {
    let info = vmm
        .api(process)
        .instance_info()
        .await
        .map_err(|source| VmmError::Api {
            pid: process.pid,
            request: "GET /",
            source: Box::new(source),
        })?;
    Ok(match info.state.as_str() {
        "Running" => VmRunState::Running,
        "Paused" => VmRunState::Paused,
        _ => VmRunState::Other(info.state),
    })
}

/// Runs the stop sequence: Ctrl+Alt+Del, then SIGTERM, then SIGKILL.
///
/// A guest kernel booted with `reboot=k` reboots on Ctrl+Alt+Del through the
/// keyboard controller, and Firecracker exits when the guest resets. A
/// failed request is logged and the next step runs, unless the process is
/// gone by then: the request may have reached Firecracker before the
/// connection failed, so that step counts as the one that ended it.
pub async fn stop(
    vmm: &FirecrackerVmm,
    process: &VmProcess,
    grace: Duration,
) -> Result<StopPath, VmmError> {
    let pid = process.pid;
    if !process::is_running(pid, process.start_time) {
        cleanup(process).await?;
        return Ok(StopPath::AlreadyExited);
    }

    tracing::info!(
        pid,
        grace_s = grace.as_secs_f64(),
        "stopping Firecracker with Ctrl+Alt+Del"
    );
    match send_ctrl_alt_del(vmm, process).await {
        Ok(()) => {
            if process::wait_gone(pid, process.start_time, grace).await {
                return finish(process, StopPath::CtrlAltDel).await;
            }
            tracing::info!(pid, "guest did not reboot in time; sending SIGTERM");
        }
        Err(error) => {
            if !process::is_running(pid, process.start_time) {
                return finish(process, StopPath::CtrlAltDel).await;
            }
            tracing::warn!(pid, error = %error_chain(&error), "Ctrl+Alt+Del request failed; sending SIGTERM");
        }
    }

    let path = signals::terminate(process, vmm.step_timeout, "Firecracker").await?;
    finish(process, path).await
}

/// Sends SIGKILL and waits until the process is gone, then removes its sockets.
pub async fn kill(vmm: &FirecrackerVmm, process: &VmProcess) -> Result<(), VmmError> {
    tracing::info!(pid = process.pid, "killing Firecracker");
    signals::kill(process, vmm.step_timeout).await?;
    cleanup(process).await
}

async fn finish(process: &VmProcess, path: StopPath) -> Result<StopPath, VmmError> {
    tracing::info!(pid = process.pid, stop_path = %path, "Firecracker stopped");
    cleanup(process).await?;
    Ok(path)
}

/// Removes the sockets of a process that is gone, unless a newer Firecracker
/// launched in the same run directory serves the API socket. Firecracker
/// 1.12.1 leaves its API socket behind when it exits.
async fn cleanup(process: &VmProcess) -> Result<(), VmmError> {
    let mut paths = RunPaths::new(&process.run_dir);
    paths.api_socket = process.control_socket.clone();
    paths.vsock_socket = process.agent_socket.clone();

    if let Some(owner) = socket_owner(&paths.api_socket).await
        && u32::try_from(owner).ok() != Some(process.pid)
    {
        tracing::info!(
            pid = process.pid,
            owner,
            "leaving the run directory sockets in place: another Firecracker serves the API socket"
        );
        return Ok(());
    }
    remove_sockets(&paths)
}
