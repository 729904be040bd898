//! Starting QEMU as a daemon and waiting until it can be controlled.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use banger_process::{CommandError, CommandSpec, quote_output};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{QemuVmm, RunPaths, args, pidfile, tsc};
use crate::error_chain;
use crate::process;
use crate::types::{Accel, BackendKind, LaunchSpec, VmProcess};
use crate::validate;
use crate::vmm::VmmError;

/// Interval between checks for the pid file and sockets.
const STARTUP_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Maximum number of bytes from the end of the VMM log quoted in errors.
const MAX_LOG_TAIL: u64 = 4096;

pub async fn launch(vmm: &QemuVmm, spec: &LaunchSpec) -> Result<VmProcess, VmmError> {
    let paths = RunPaths::new(&spec.run_dir);
    let host_tsc_khz = match spec.accel {
        Accel::Tcg => tsc::host_tsc_khz().await,
        Accel::Kvm => None,
    };
    let qemu_args = args::qemu_args(spec, &paths, host_tsc_khz)?;
    validate::check_host_files(spec)?;
    prepare_run_dir(&spec.run_dir, &paths)?;
    create_private_file(&spec.console_log)?;
    create_private_file(&paths.log)?;

    // The umask covers what QEMU creates before it daemonizes and sets its
    // own umask; the sockets are fixed up after they appear.
    let command = CommandSpec::new(&vmm.binary)
        .args(&qemu_args)
        .umask(0o077)
        .timeout(vmm.startup_timeout);

    tracing::info!(vm = %spec.vm_id, accel = %spec.accel, binary = %vmm.binary.display(), "starting QEMU");
    // With -daemonize the command returns once the daemon has initialised
    // (status 0) or failed (non-zero), so its exit status covers startup.
    match command.run_async().await {
        Ok(output) => {
            if !output.stderr.is_empty() {
                let stderr = quote_output(&output.stderr);
                tracing::warn!(vm = %spec.vm_id, %stderr, "QEMU wrote to stderr while starting");
            }
        }
        Err(CommandError::NotFound { source, .. }) => {
            return Err(VmmError::QemuNotFound {
                binary: vmm.binary.clone(),
                source: crate::vmm::not_found_source(source),
            });
        }
        Err(source) => {
            let error = VmmError::Launch {
                vm_id: spec.vm_id.clone(),
                log_tail: read_log_tail(&paths.log),
                log: paths.log.clone(),
                source: Box::new(source),
            };
            abort_launch(vmm, spec, &paths).await;
            return Err(error);
        }
    }

    match wait_until_ready(vmm, spec, &paths).await {
        Ok(process) => {
            tracing::info!(vm = %spec.vm_id, pid = process.pid, "QEMU started");
            Ok(process)
        }
        Err(error) => {
            abort_launch(vmm, spec, &paths).await;
            Err(error)
        }
    }
}

/// Waits for the pid file and both sockets, and returns the process record.
async fn wait_until_ready(
    vmm: &QemuVmm,
    spec: &LaunchSpec,
    paths: &RunPaths,
) -> Result<VmProcess, VmmError> {
    let deadline = Instant::now() + vmm.startup_timeout;
    let pid = wait_for_pid(vmm, spec, paths, deadline).await?;
    let start_time = match process::read_stat(pid) {
        Ok(Some(stat)) if !stat.is_exited() => stat.start_time,
        Ok(_) => return Err(exited_during_startup(spec, paths)),
        Err(source) => return Err(VmmError::Process { pid, source }),
    };

    for socket in [&paths.qmp_socket, &paths.agent_socket] {
        wait_for_socket(vmm, spec, paths, socket, pid, start_time, deadline).await?;
        // QEMU 7.2 sets umask 027 when it daemonizes, which overrides the
        // umask above, so its sockets come out 0750. Connecting needs write
        // permission, so group and others still cannot connect, and 0600
        // makes that plain.
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| VmmError::SetPermissions {
                path: socket.clone(),
                source,
            },
        )?;
    }

    Ok(VmProcess {
        backend: BackendKind::Qemu,
        pid,
        start_time,
        control_socket: paths.qmp_socket.clone(),
        agent_socket: paths.agent_socket.clone(),
        run_dir: spec.run_dir.clone(),
        accel: Some(spec.accel),
    })
}

/// Kills the QEMU of a failed launch if it still runs, and removes its files.
/// Only the process that holds the pid file lock is killed.
async fn abort_launch(vmm: &QemuVmm, spec: &LaunchSpec, paths: &RunPaths) {
    if let Ok(Some(holder)) = pidfile::lock_holder(&paths.pid_file)
        && let Ok(pid) = u32::try_from(holder)
        && let Ok(Some(stat)) = process::read_stat(pid)
    {
        tracing::warn!(vm = %spec.vm_id, pid, "killing QEMU after its launch failed");
        if let Err(error) = process::send_signal(pid, stat.start_time, Signal::SIGKILL) {
            tracing::warn!(vm = %spec.vm_id, pid, error = %error_chain(&error), "failed to kill QEMU");
            return;
        }
        if !process::wait_gone(pid, stat.start_time, vmm.step_timeout).await {
            tracing::warn!(vm = %spec.vm_id, pid, "QEMU still runs after SIGKILL; leaving its files");
            return;
        }
    }
    if let Err(error) = remove_stale_files(paths) {
        tracing::warn!(vm = %spec.vm_id, error = %error_chain(&error), "failed to clean up after a failed launch");
    }
}

/// Creates `path` with mode 0600 unless it exists, so that QEMU appends to or
/// truncates a file that only the owner can read.
fn create_private_file(path: &Path) -> Result<(), VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| VmmError::CreateFile {
            path: path.to_owned(),
            source,
        })
}

/// Refuses a run directory whose QEMU still runs, then removes the files a
/// previous QEMU left behind after it was killed.
fn prepare_run_dir(run_dir: &Path, paths: &RunPaths) -> Result<(), VmmError> {
    let holder = pidfile::lock_holder(&paths.pid_file).map_err(|source| VmmError::ReadPidFile {
        path: paths.pid_file.clone(),
        source,
    })?;
    if let Some(pid) = holder {
        return Err(VmmError::AlreadyRunning {
            run_dir: run_dir.to_owned(),
            pid,
        });
    }
    remove_stale_files(paths)
}

/// Removes the sockets and pid file of a QEMU that is gone. Only sockets are
/// removed from the socket paths, so a file put there by someone else stays.
pub fn remove_stale_files(paths: &RunPaths) -> Result<(), VmmError> {
    for socket in [&paths.qmp_socket, &paths.agent_socket] {
        match std::fs::symlink_metadata(socket) {
            Ok(metadata) if metadata.file_type().is_socket() => remove_file(socket)?,
            _ => {}
        }
    }
    remove_file(&paths.pid_file)
}

fn remove_file(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VmmError::RemoveFile {
            path: path.to_owned(),
            source,
        }),
    }
}

async fn wait_for_pid(
    vmm: &QemuVmm,
    spec: &LaunchSpec,
    paths: &RunPaths,
    deadline: Instant,
) -> Result<u32, VmmError> {
    loop {
        if let Some(pid) = pidfile::read_pid(&paths.pid_file)? {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(startup_timed_out(vmm, spec, paths, &paths.pid_file));
        }
        tokio::time::sleep(STARTUP_POLL_INTERVAL).await;
    }
}

async fn wait_for_socket(
    vmm: &QemuVmm,
    spec: &LaunchSpec,
    paths: &RunPaths,
    socket: &Path,
    pid: u32,
    start_time: u64,
    deadline: Instant,
) -> Result<(), VmmError> {
    loop {
        if let Ok(metadata) = std::fs::symlink_metadata(socket)
            && metadata.file_type().is_socket()
        {
            return Ok(());
        }
        if !process::is_running(pid, start_time) {
            return Err(exited_during_startup(spec, paths));
        }
        if Instant::now() >= deadline {
            return Err(startup_timed_out(vmm, spec, paths, socket));
        }
        tokio::time::sleep(STARTUP_POLL_INTERVAL).await;
    }
}

fn exited_during_startup(spec: &LaunchSpec, paths: &RunPaths) -> VmmError {
    VmmError::ExitedDuringStartup {
        vm_id: spec.vm_id.clone(),
        log: paths.log.clone(),
        log_tail: read_log_tail(&paths.log),
    }
}

fn startup_timed_out(vmm: &QemuVmm, spec: &LaunchSpec, paths: &RunPaths, path: &Path) -> VmmError {
    VmmError::StartupTimedOut {
        vm_id: spec.vm_id.clone(),
        path: path.to_owned(),
        timeout: vmm.startup_timeout,
        log: paths.log.clone(),
        log_tail: read_log_tail(&paths.log),
    }
}

/// Returns the end of the VMM log for an error message, or a note on why it
/// could not be read.
pub fn read_log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG_TAIL)))?;
        let mut bytes = Vec::new();
        file.take(MAX_LOG_TAIL).read_to_end(&mut bytes)?;
        Ok(quote_output(&bytes))
    };
    read().unwrap_or_else(|error| format!("(log unreadable: {error})"))
}
