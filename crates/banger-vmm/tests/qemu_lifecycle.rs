//! Lifecycle of real QEMU processes under TCG with the Debian cloud kernel
//! and no initramfs: the kernel panics for want of a root file system, which
//! is enough to launch, query, pause, stop and kill.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use banger_vmm::{SpecError, StopPath, VmRunState, Vmm, VmmError};

/// Wall-clock allowance for a TCG guest to reach a kernel panic; about 1 s is
/// typical on a 2-core development VM.
const PANIC_TIMEOUT: Duration = Duration::from_secs(60);

fn assert_no_run_files(run_dir: &Path) {
    for name in ["qmp.sock", "agent.sock", "qemu.pid"] {
        let path = run_dir.join(name);
        assert!(!path.exists(), "{} still exists", path.display());
    }
}

#[tokio::test]
async fn panicking_kernel_exits() {
    let (Some(vmm), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tcg_spec("panic-exit", kernel, dir.path(), "panic=-1");

    let process = vmm.launch(&spec).await.unwrap();
    let _guard = common::KillOnDrop(process.clone());
    assert!(process.pid > 0);
    assert_eq!(process.control_socket, spec.run_dir.join("qmp.sock"));
    assert_eq!(process.agent_socket, spec.run_dir.join("agent.sock"));

    // panic=-1 reboots at once, and -no-reboot turns the reboot into an exit.
    assert!(
        vmm.wait_exit(&process, PANIC_TIMEOUT).await,
        "QEMU did not exit"
    );
    assert!(!vmm.is_running(&process));
    let console = std::fs::read_to_string(&spec.console_log).unwrap();
    assert!(console.contains("Kernel panic"), "console:\n{console}");

    assert_eq!(
        vmm.stop(&process, Duration::from_secs(1)).await.unwrap(),
        StopPath::AlreadyExited
    );
    assert_no_run_files(&spec.run_dir);
}

#[tokio::test]
async fn launch_query_pause_stop() {
    let (Some(vmm), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // panic=0 keeps the panicked guest halted, so QEMU stays up.
    let spec = common::tcg_spec("lifecycle", kernel, dir.path(), "panic=0");

    let process = vmm.launch(&spec).await.unwrap();
    let _guard = common::KillOnDrop(process.clone());
    assert!(vmm.is_running(&process));
    let stat = banger_vmm::process::read_stat(process.pid)
        .unwrap()
        .unwrap();
    assert_eq!(stat.start_time, process.start_time);
    assert_eq!(stat.comm, "qemu-system-x86");
    let private_files = [
        &process.control_socket,
        &process.agent_socket,
        &spec.console_log,
        &spec.run_dir.join("vmm.log"),
        &spec.run_dir.join("qemu.pid"),
    ];
    for path in private_files {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }

    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Running);
    vmm.pause(&process).await.unwrap();
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Paused);
    vmm.resume(&process).await.unwrap();
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Running);

    let error = vmm.launch(&spec).await.unwrap_err();
    assert!(
        matches!(error, VmmError::AlreadyRunning { pid, .. } if u32::try_from(pid).unwrap() == process.pid),
        "{error:?}"
    );
    assert!(
        vmm.is_running(&process),
        "the refused launch left the VM alone"
    );

    common::wait_for_console(&spec.console_log, "Kernel panic", PANIC_TIMEOUT).await;
    // The panicked guest ignores the power button, so QMP quit ends it.
    let path = vmm.stop(&process, Duration::from_secs(1)).await.unwrap();
    assert_eq!(path, StopPath::ControlQuit);
    assert!(!vmm.is_running(&process));
    assert_no_run_files(&spec.run_dir);

    assert_eq!(
        vmm.stop(&process, Duration::from_secs(1)).await.unwrap(),
        StopPath::AlreadyExited
    );
    let error = vmm.request_poweroff(&process).await.unwrap_err();
    assert!(matches!(error, VmmError::NotRunning { .. }), "{error:?}");
    let error = vmm.connect_agent(&process).await.unwrap_err();
    assert!(matches!(error, VmmError::NotRunning { .. }), "{error:?}");
}

#[tokio::test]
async fn kill_ends_process() {
    let (Some(vmm), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tcg_spec("kill", kernel, dir.path(), "panic=0");

    let process = vmm.launch(&spec).await.unwrap();
    let _guard = common::KillOnDrop(process.clone());
    assert!(vmm.is_running(&process));
    vmm.kill(&process).await.unwrap();
    assert!(!vmm.is_running(&process));
    assert_no_run_files(&spec.run_dir);

    // A new VM can start in the same run directory.
    let again = vmm.launch(&spec).await.unwrap();
    let _guard = common::KillOnDrop(again.clone());
    assert_ne!(
        (again.pid, again.start_time),
        (process.pid, process.start_time)
    );
    vmm.kill(&again).await.unwrap();
}

#[tokio::test]
async fn sigterm_path_when_qmp_is_gone() {
    let (Some(vmm), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tcg_spec("sigterm", kernel, dir.path(), "panic=0");

    let mut process = vmm.launch(&spec).await.unwrap();
    let _guard = common::KillOnDrop(process.clone());
    // A control socket path with nothing behind it makes both QMP steps fail.
    process.control_socket = dir.path().join("absent.sock");
    let path = vmm
        .stop(&process, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(path, StopPath::Sigterm);
    assert!(!vmm.is_running(&process));
}

#[tokio::test]
async fn missing_binary_gives_install_hint() {
    let Some(kernel) = common::kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tcg_spec("nobinary", kernel, dir.path(), "");
    let vmm = banger_vmm::QemuVmm::new("/nonexistent/qemu-system-x86_64");

    let error = vmm.launch(&spec).await.unwrap_err();
    assert!(matches!(error, VmmError::QemuNotFound { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("apt-get install qemu-system-x86"),
        "{message}"
    );
    assert!(
        message.contains("/nonexistent/qemu-system-x86_64"),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_kernel_reports_qemu_error() {
    let Some(vmm) = common::qemu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let empty_kernel = dir.path().join("empty-kernel");
    std::fs::write(&empty_kernel, b"").unwrap();
    let mut spec = common::tcg_spec(
        "badkernel",
        &common::Kernel {
            image: empty_kernel,
            release: String::new(),
            modules: dir.path().to_owned(),
        },
        dir.path(),
        "",
    );
    spec.vcpus = 1;

    let error = vmm.launch(&spec).await.unwrap_err();
    let chain = banger_vmm::error_chain(&error);
    assert!(matches!(error, VmmError::Launch { .. }), "{error:?}");
    assert!(chain.contains("could not load kernel"), "{chain}");
    assert!(chain.contains("empty-kernel"), "{chain}");
    assert_no_run_files(&spec.run_dir);
}

#[tokio::test]
async fn open_run_dir_is_rejected() {
    let Some(kernel) = common::kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tcg_spec("openrun", kernel, dir.path(), "");
    std::fs::set_permissions(&spec.run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let error = banger_vmm::QemuVmm::default()
        .launch(&spec)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            VmmError::InvalidSpec(SpecError::RunDirOpen { mode: 0o755, .. })
        ),
        "{error:?}"
    );
    assert!(
        banger_vmm::error_chain(&error).contains("chmod 700"),
        "{error}"
    );
}

#[tokio::test]
async fn missing_disk_is_rejected() {
    let Some(kernel) = common::kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::tcg_spec("nodisk", kernel, dir.path(), "");
    spec.disks.push(banger_vmm::DiskSpec {
        path: dir.path().join("absent.img"),
        read_only: false,
    });

    let error = banger_vmm::QemuVmm::default()
        .launch(&spec)
        .await
        .unwrap_err();
    let chain = banger_vmm::error_chain(&error);
    assert!(
        matches!(
            error,
            VmmError::InvalidSpec(SpecError::MissingFile {
                role: "disk image",
                ..
            })
        ),
        "{error:?}"
    );
    assert!(chain.contains("absent.img"), "{chain}");
}
