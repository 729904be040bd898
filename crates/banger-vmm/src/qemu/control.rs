//! QMP requests and the stop sequence of a running QEMU.

use std::time::Duration;

use super::launch::remove_stale_files;
use super::{QemuVmm, RunPaths, pidfile};
use crate::error_chain;
use crate::process;
use crate::qmp::QmpClient;
use crate::signals;
use crate::types::{StopPath, VmProcess, VmRunState};
use crate::vmm::VmmError;

/// Sends one QMP command that returns nothing of interest.
pub async fn execute(
    vmm: &QemuVmm,
    process: &VmProcess,
    request: &'static str,
) -> Result<(), VmmError> {
    let control_error = |source| VmmError::Control {
        pid: process.pid,
        request,
        source,
    };
    let mut client = QmpClient::connect(&process.control_socket, vmm.step_timeout)
        .await
        .map_err(control_error)?;
    client.execute(request, None).await.map_err(control_error)?;
    Ok(())
}

pub async fn run_state(vmm: &QemuVmm, process: &VmProcess) -> Result<VmRunState, VmmError> {
    let control_error = |source| VmmError::Control {
        pid: process.pid,
        request: "query-status",
        source,
    };
    let mut client = QmpClient::connect(&process.control_socket, vmm.step_timeout)
        .await
        .map_err(control_error)?;
    let status = client.query_status().await.map_err(control_error)?;
    Ok(match status.status.as_str() {
        "running" => VmRunState::Running,
        "paused" => VmRunState::Paused,
        _ => VmRunState::Other(status.status),
    })
}

async fn quit(vmm: &QemuVmm, process: &VmProcess) -> Result<(), VmmError> {
    let control_error = |source| VmmError::Control {
        pid: process.pid,
        request: "quit",
        source,
    };
    let mut client = QmpClient::connect(&process.control_socket, vmm.step_timeout)
        .await
        .map_err(control_error)?;
    client.quit().await.map_err(control_error)
}

/// Runs the stop sequence: ACPI power button, QMP `quit`, SIGTERM, SIGKILL.
/// A failed step is logged and the next one runs, unless the process is gone
/// by then: the request may have reached QEMU before the connection failed,
/// so that step counts as the one that ended it.
pub async fn stop(
    vmm: &QemuVmm,
    process: &VmProcess,
    grace: Duration,
) -> Result<StopPath, VmmError> {
    let pid = process.pid;
    if !process::is_running(pid, process.start_time) {
        cleanup(process)?;
        return Ok(StopPath::AlreadyExited);
    }

    tracing::info!(
        pid,
        grace_s = grace.as_secs_f64(),
        "stopping VMM with the ACPI power button"
    );
    match execute(vmm, process, "system_powerdown").await {
        Ok(()) => {
            if process::wait_gone(pid, process.start_time, grace).await {
                return finish(process, StopPath::Acpi);
            }
            tracing::info!(pid, "guest did not power off in time; sending QMP quit");
        }
        Err(error) => {
            if !process::is_running(pid, process.start_time) {
                return finish(process, StopPath::Acpi);
            }
            tracing::warn!(pid, error = %error_chain(&error), "ACPI power button request failed; sending QMP quit");
        }
    }

    match quit(vmm, process).await {
        Ok(()) => {
            if process::wait_gone(pid, process.start_time, vmm.step_timeout).await {
                return finish(process, StopPath::ControlQuit);
            }
            tracing::warn!(pid, "QEMU did not exit after QMP quit; sending SIGTERM");
        }
        Err(error) => {
            if !process::is_running(pid, process.start_time) {
                return finish(process, StopPath::ControlQuit);
            }
            tracing::warn!(pid, error = %error_chain(&error), "QMP quit failed; sending SIGTERM");
        }
    }

    let path = signals::terminate(process, vmm.step_timeout, "QEMU").await?;
    finish(process, path)
}

/// Sends SIGKILL and waits until the process is gone, then removes its files.
pub async fn kill(vmm: &QemuVmm, process: &VmProcess) -> Result<(), VmmError> {
    tracing::info!(pid = process.pid, "killing VMM");
    signals::kill(process, vmm.step_timeout).await?;
    cleanup(process)
}

fn finish(process: &VmProcess, path: StopPath) -> Result<StopPath, VmmError> {
    tracing::info!(pid = process.pid, stop_path = %path, "VMM stopped");
    cleanup(process)?;
    Ok(path)
}

/// Removes the sockets and pid file of a process that is gone, unless a newer
/// QEMU launched in the same run directory holds the lock on the pid file.
fn cleanup(process: &VmProcess) -> Result<(), VmmError> {
    let mut paths = RunPaths::new(&process.run_dir);
    paths.qmp_socket = process.control_socket.clone();
    paths.agent_socket = process.agent_socket.clone();

    match pidfile::lock_holder(&paths.pid_file) {
        Ok(Some(holder)) if u32::try_from(holder).ok() != Some(process.pid) => {
            tracing::info!(
                pid = process.pid,
                holder,
                "leaving the run directory files in place: another QEMU holds the pid file"
            );
            Ok(())
        }
        Ok(_) => remove_stale_files(&paths),
        Err(source) => Err(VmmError::ReadPidFile {
            path: paths.pid_file,
            source,
        }),
    }
}
