//! Starting Firecracker as a daemon, configuring the VM over the API and
//! starting the instance.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use banger_process::{CommandError, describe_std, spawn_detached};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::api::{
    ActionType, ApiClient, ApiError, BootSource, CacheType, Drive, LogLevel, Logger, MachineConfig,
    Metrics, NetworkInterface, Vsock,
};
use super::rundir::{
    OpenMode, log_tail, open_private, prepare_run_dir, remove_sockets, socket_owner,
};
use super::{CONSOLE_CMDLINE, FirecrackerVmm, GUEST_CID, RunPaths, check_version, resolve_binary};
use crate::error_chain;
use crate::process;
use crate::types::{Accel, BackendKind, LaunchSpec, VmProcess};
use crate::validate;
use crate::vmm::VmmError;

/// Interval between checks for the API socket.
const STARTUP_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long a failed API connection waits for a dying Firecracker to exit.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Deadline for one probing request while the API socket comes up.
const PROBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Returns the kernel command line: [`CONSOLE_CMDLINE`], then `cmdline`.
pub fn boot_args(cmdline: &str) -> String {
    let cmdline = cmdline.trim();
    if cmdline.is_empty() {
        CONSOLE_CMDLINE.to_owned()
    } else {
        format!("{CONSOLE_CMDLINE} {cmdline}")
    }
}

/// Returns the `--id` for a VM id, with every character other than an ASCII
/// letter or digit replaced by `-`. Firecracker 1.12.1 aborts on an id with
/// other characters. The id only labels log lines.
pub fn instance_id(vm_id: &str) -> String {
    vm_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Builds the arguments (without the program name) for the VM's process.
/// Until `PUT /logger` points the log at [`RunPaths::log`], Firecracker logs
/// to standard output, which is the console log, so only warnings and
/// errors go there.
pub fn firecracker_args(vm_id: &str, paths: &RunPaths) -> Vec<OsString> {
    vec![
        OsString::from("--api-sock"),
        paths.api_socket.clone().into_os_string(),
        OsString::from("--id"),
        OsString::from(instance_id(vm_id)),
        OsString::from("--level"),
        OsString::from("Warning"),
    ]
}

pub async fn launch(vmm: &FirecrackerVmm, spec: &LaunchSpec) -> Result<VmProcess, VmmError> {
    validate::validate_spec(spec)?;
    if spec.accel != Accel::Kvm {
        return Err(VmmError::UnsupportedAccel {
            vm_id: spec.vm_id.clone(),
            accel: spec.accel,
        });
    }
    let boot_args = boot_args(&spec.cmdline);
    validate::validate_cmdline(&spec.vm_id, &boot_args)?;
    let paths = RunPaths::new(&spec.run_dir);
    validate::check_socket_path(&paths.api_socket)?;
    validate::check_socket_path(&paths.vsock_socket)?;
    validate::check_host_files(spec)?;
    let binary = resolve_binary(&vmm.binary)?;
    check_version(&binary).await?;
    prepare_run_dir(spec, &paths).await?;

    let started = spawn(vmm, spec, &paths, &binary).await?;
    let pid = started.pid;
    match configure_and_start(vmm, spec, &paths, &boot_args, started).await {
        Ok(()) => {
            tracing::info!(vm = %spec.vm_id, pid, "Firecracker started the instance");
            Ok(VmProcess {
                backend: BackendKind::Firecracker,
                pid,
                start_time: started.start_time,
                control_socket: paths.api_socket.clone(),
                agent_socket: paths.vsock_socket.clone(),
                run_dir: spec.run_dir.clone(),
                accel: None,
            })
        }
        Err(error) => {
            abort_launch(vmm, spec, &paths, started).await;
            Err(error)
        }
    }
}

/// Starts Firecracker as a daemon with its console and standard error in
/// fresh files, and returns the process.
async fn spawn(
    vmm: &FirecrackerVmm,
    spec: &LaunchSpec,
    paths: &RunPaths,
    binary: &Path,
) -> Result<Started, VmmError> {
    let console = open_private(&spec.console_log, OpenMode::Append)?;
    open_private(&paths.log, OpenMode::Truncate)?;
    let stderr = open_private(&paths.stderr, OpenMode::Truncate)?;
    open_private(&paths.metrics, OpenMode::Truncate)?;

    let mut command = std::process::Command::new(binary);
    command
        .args(firecracker_args(&spec.vm_id, paths))
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(stderr);
    let description = describe_std(&command);
    tracing::info!(vm = %spec.vm_id, command = %description, "starting Firecracker");
    let spawned = tokio::task::spawn_blocking(move || spawn_detached(command))
        .await
        .unwrap_or_else(|join_error| {
            Err(CommandError::Spawn {
                command: description,
                source: io::Error::other(join_error),
            })
        });
    let pid = match spawned {
        Ok(pid) => pid,
        Err(CommandError::NotFound { source, .. }) => {
            return Err(VmmError::FirecrackerNotFound {
                binary: vmm.binary.clone(),
                source: crate::vmm::not_found_source(source),
            });
        }
        Err(source) => {
            return Err(VmmError::Launch {
                vm_id: spec.vm_id.clone(),
                log: paths.stderr.clone(),
                log_tail: log_tail(paths),
                source: Box::new(source),
            });
        }
    };

    match process::read_stat(pid) {
        Ok(Some(stat)) if !stat.is_exited() => Ok(Started {
            pid,
            start_time: stat.start_time,
        }),
        Ok(_) => Err(exited_during_startup(spec, paths)),
        Err(source) => Err(VmmError::Process { pid, source }),
    }
}

/// The Firecracker process of a launch.
#[derive(Debug, Clone, Copy)]
struct Started {
    pid: u32,
    start_time: u64,
}

impl Started {
    fn is_running(self) -> bool {
        process::is_running(self.pid, self.start_time)
    }
}

/// Waits for the API, configures the VM and starts the instance.
async fn configure_and_start(
    vmm: &FirecrackerVmm,
    spec: &LaunchSpec,
    paths: &RunPaths,
    boot_args: &str,
    started: Started,
) -> Result<(), VmmError> {
    wait_for_api(vmm, spec, paths, started).await?;
    let api = ApiClient::new(&paths.api_socket, vmm.step_timeout);
    let step = |action: String, result: Result<(), ApiError>| async move {
        let Err(source) = result else {
            return Ok(());
        };
        if vmm_survived(&source, started).await {
            Err(VmmError::Configure {
                vm_id: spec.vm_id.clone(),
                action,
                log: paths.log.clone(),
                source: Box::new(source),
            })
        } else {
            tracing::warn!(vm = %spec.vm_id, error = %error_chain(&source), "Firecracker exited during configuration");
            Err(exited_during_startup(spec, paths))
        }
    };

    let logger = Logger {
        log_path: paths.log.clone(),
        level: LogLevel::Info,
    };
    step(
        "configure its log".to_owned(),
        api.put_logger(&logger).await,
    )
    .await?;
    let metrics = Metrics {
        metrics_path: paths.metrics.clone(),
    };
    step(
        "configure its metrics".to_owned(),
        api.put_metrics(&metrics).await,
    )
    .await?;
    let machine = MachineConfig {
        vcpu_count: spec.vcpus,
        mem_size_mib: spec.memory_mib,
    };
    step(
        format!(
            "set {} vCPUs and {} MiB of memory",
            spec.vcpus, spec.memory_mib
        ),
        api.put_machine_config(&machine).await,
    )
    .await?;
    let boot_source = BootSource {
        kernel_image_path: spec.kernel.clone(),
        initrd_path: spec.initrd.clone(),
        boot_args: boot_args.to_owned(),
    };
    step(
        format!("set the boot source (kernel {})", spec.kernel.display()),
        api.put_boot_source(&boot_source).await,
    )
    .await?;

    // Without a root device, Firecracker attaches the drives in the order
    // they are put, so the guest's block devices follow `spec.disks`.
    for (index, disk) in spec.disks.iter().enumerate() {
        let drive = Drive {
            drive_id: format!("disk{index}"),
            path_on_host: disk.path.clone(),
            is_root_device: false,
            is_read_only: disk.read_only,
            cache_type: CacheType::Writeback,
        };
        let action = format!("attach drive {} ({})", drive.drive_id, disk.path.display());
        step(action, api.put_drive(&drive).await).await?;
    }
    for (index, nic) in spec.nics.iter().enumerate() {
        let interface = NetworkInterface {
            iface_id: format!("net{index}"),
            host_dev_name: nic.tap.clone(),
            guest_mac: nic.mac.clone(),
        };
        let action = format!(
            "attach network interface {} on tap {}",
            interface.iface_id, nic.tap
        );
        step(action, api.put_network_interface(&interface).await).await?;
    }
    let vsock = Vsock {
        guest_cid: GUEST_CID,
        uds_path: paths.vsock_socket.clone(),
    };
    step(
        "attach the vsock device".to_owned(),
        api.put_vsock(&vsock).await,
    )
    .await?;

    step(
        "start the instance".to_owned(),
        api.action(ActionType::InstanceStart).await,
    )
    .await?;
    // NOTE: Firecracker 1.12.1 can deadlock when an API request arrives
    // while it stops after a guest reset, so no request checks on the guest
    // here. A guest that fails at once ends Firecracker, which the caller
    // sees through `Vmm::is_running`.
    if !started.is_running() {
        return Err(exited_during_startup(spec, paths));
    }
    Ok(())
}

/// Returns whether Firecracker still runs after a failed request.
///
/// A process that crashes closes its API socket a moment before it is gone
/// from the process table, so a failure on the connection itself waits up
/// to [`EXIT_GRACE`] for the exit before it counts as a refusal.
async fn vmm_survived(error: &ApiError, started: Started) -> bool {
    if error.fault_message().is_some() {
        return started.is_running();
    }
    !process::wait_gone(started.pid, started.start_time, EXIT_GRACE).await
}

/// Waits until Firecracker serves `GET /` on its API socket, and checks that
/// the socket belongs to the process just started.
async fn wait_for_api(
    vmm: &FirecrackerVmm,
    spec: &LaunchSpec,
    paths: &RunPaths,
    started: Started,
) -> Result<(), VmmError> {
    let deadline = Instant::now() + vmm.startup_timeout;
    let probe = ApiClient::new(&paths.api_socket, PROBE_REQUEST_TIMEOUT);
    loop {
        if let Some(owner) = socket_owner(&paths.api_socket).await {
            if u32::try_from(owner).ok() != Some(started.pid) {
                return Err(VmmError::ForeignSocketOwner {
                    socket: paths.api_socket.clone(),
                    expected: started.pid,
                    found: owner,
                });
            }
            if probe.instance_info().await.is_ok() {
                return Ok(());
            }
        }
        if !started.is_running() {
            return Err(exited_during_startup(spec, paths));
        }
        if Instant::now() >= deadline {
            return Err(VmmError::StartupTimedOut {
                vm_id: spec.vm_id.clone(),
                path: paths.api_socket.clone(),
                timeout: vmm.startup_timeout,
                log: paths.stderr.clone(),
                log_tail: log_tail(paths),
            });
        }
        tokio::time::sleep(STARTUP_POLL_INTERVAL).await;
    }
}

/// Kills the Firecracker of a failed launch if it still runs, and removes
/// its sockets.
async fn abort_launch(vmm: &FirecrackerVmm, spec: &LaunchSpec, paths: &RunPaths, started: Started) {
    let pid = started.pid;
    match process::send_signal(pid, started.start_time, Signal::SIGKILL) {
        Ok(true) => {
            tracing::warn!(vm = %spec.vm_id, pid, "killed Firecracker after its launch failed")
        }
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(vm = %spec.vm_id, pid, error = %error_chain(&error), "failed to kill Firecracker");
            return;
        }
    }
    if !process::wait_gone(pid, started.start_time, vmm.step_timeout).await {
        tracing::warn!(vm = %spec.vm_id, pid, "Firecracker still runs after SIGKILL; leaving its sockets");
        return;
    }
    if let Err(error) = remove_sockets(paths) {
        tracing::warn!(vm = %spec.vm_id, error = %error_chain(&error), "failed to clean up after a failed launch");
    }
}

fn exited_during_startup(spec: &LaunchSpec, paths: &RunPaths) -> VmmError {
    VmmError::ExitedDuringStartup {
        vm_id: spec.vm_id.clone(),
        log: paths.log.clone(),
        log_tail: log_tail(paths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_args_put_console_first() {
        assert_eq!(
            boot_args(" root=LABEL=bangerroot quiet "),
            "console=ttyS0 reboot=k panic=1 pci=off root=LABEL=bangerroot quiet"
        );
        assert_eq!(boot_args(""), CONSOLE_CMDLINE);
    }

    #[test]
    fn instance_id_keeps_letters_digits_and_dashes() {
        assert_eq!(instance_id("web-1"), "web-1");
        assert_eq!(instance_id("a.b_c"), "a-b-c");
    }

    #[test]
    fn firecracker_args_name_socket_id_and_level() {
        let paths = RunPaths::new(Path::new("/run/banger/vms/a.b"));
        let args = firecracker_args("a.b", &paths);
        let args: Vec<&str> = args.iter().map(|arg| arg.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--api-sock",
                "/run/banger/vms/a.b/fc.sock",
                "--id",
                "a-b",
                "--level",
                "Warning"
            ]
        );
    }
}
