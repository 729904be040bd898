//! The Firecracker backend against the real binary with the small test
//! guest of `tests/guest/fc_guest.S`: launch, pause, resume, stop, a
//! restarted daemon, and the errors Firecracker reports.

mod common;

use std::time::{Duration, Instant};

use banger_vmm::firecracker::{API_SOCKET, VSOCK_SOCKET};
use banger_vmm::{BackendKind, FirecrackerVmm, StopPath, VmProcess, VmRunState, Vmm, VmmError};
use common::KillOnDrop;
use common::firecracker::{Guest, firecracker, guest, sockets_left, spec, wait_for_console};

/// Returns fields 4 (ppid) and 6 (session id) of `/proc/<pid>/stat`.
fn parent_and_session(pid: u32) -> (u32, u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &text[text.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    (fields[1].parse().unwrap(), fields[3].parse().unwrap())
}

#[tokio::test]
async fn launch_pause_resume_and_stop() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-life.cycle_1", &kernel, dir.path());

    let process = vmm.launch(&spec).await.unwrap();
    let _guard = KillOnDrop(process.clone());
    assert_eq!(process.backend, BackendKind::Firecracker);
    assert_eq!(process.control_socket, spec.run_dir.join(API_SOCKET));
    assert_eq!(process.agent_socket, spec.run_dir.join(VSOCK_SOCKET));
    assert_eq!(process.run_dir, spec.run_dir);
    assert_eq!(process.accel, None);
    assert!(vmm.is_running(&process));

    let (parent, session) = parent_and_session(process.pid);
    assert_ne!(parent, std::process::id(), "Firecracker is not our child");
    assert_eq!(session, process.pid, "Firecracker leads its own session");
    for socket in [&process.control_socket, &process.agent_socket] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(socket).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", socket.display());
    }

    wait_for_console(&spec.console_log, "banger-test-guest: ready").await;
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Running);
    vmm.pause(&process).await.unwrap();
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Paused);
    vmm.resume(&process).await.unwrap();
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Running);

    let path = vmm.stop(&process, Duration::from_secs(20)).await.unwrap();
    assert_eq!(path, StopPath::CtrlAltDel);
    assert!(!vmm.is_running(&process));
    assert!(
        sockets_left(&spec.run_dir).is_empty(),
        "{:?}",
        sockets_left(&spec.run_dir)
    );
    let console = std::fs::read_to_string(&spec.console_log).unwrap();
    assert!(
        console.contains("banger-test-guest: ctrl-alt-del"),
        "console:\n{console}"
    );
    let log = std::fs::read_to_string(spec.run_dir.join("vmm.log")).unwrap();
    assert!(log.contains("Vmm is stopping"), "VMM log:\n{log}");
}

#[tokio::test]
async fn stop_falls_back_to_sigterm() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::IgnoreCtrlAltDel)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-sigterm", &kernel, dir.path());
    let process = vmm.launch(&spec).await.unwrap();
    let _guard = KillOnDrop(process.clone());
    wait_for_console(&spec.console_log, "banger-test-guest: ready").await;

    let started = Instant::now();
    let path = vmm
        .stop(&process, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(path, StopPath::Sigterm);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!vmm.is_running(&process));
    assert!(sockets_left(&spec.run_dir).is_empty());

    assert_eq!(
        vmm.stop(&process, Duration::from_secs(1)).await.unwrap(),
        StopPath::AlreadyExited
    );
}

/// A daemon that restarts keeps only the stored `VmProcess`.
#[tokio::test]
async fn restarted_daemon_adopts_running_vm() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-adopt", &kernel, dir.path());
    let stored = serde_json::to_string(&vmm.launch(&spec).await.unwrap()).unwrap();
    let binary = vmm.binary.clone();
    drop(vmm);

    let process: VmProcess = serde_json::from_str(&stored).unwrap();
    let _guard = KillOnDrop(process.clone());
    let vmm = FirecrackerVmm::new(binary);
    assert!(vmm.is_running(&process));
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Running);
    vmm.pause(&process).await.unwrap();
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Paused);
    vmm.resume(&process).await.unwrap();
    assert_eq!(vmm.run_state(&process).await.unwrap(), VmRunState::Running);

    assert_eq!(
        vmm.stop(&process, Duration::from_secs(20)).await.unwrap(),
        StopPath::CtrlAltDel
    );
    assert!(!vmm.is_running(&process));
    assert!(sockets_left(&spec.run_dir).is_empty());
}

#[tokio::test]
async fn kill_ends_process_and_removes_sockets() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-kill", &kernel, dir.path());
    let process = vmm.launch(&spec).await.unwrap();
    let _guard = KillOnDrop(process.clone());

    vmm.kill(&process).await.unwrap();
    assert!(!vmm.is_running(&process));
    assert!(sockets_left(&spec.run_dir).is_empty());
    let error = vmm.pause(&process).await.unwrap_err();
    assert!(matches!(error, VmmError::NotRunning { .. }), "{error:?}");
}

#[tokio::test]
async fn second_launch_in_run_dir_is_rejected() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-twice", &kernel, dir.path());
    let process = vmm.launch(&spec).await.unwrap();
    let _guard = KillOnDrop(process.clone());

    let error = vmm.launch(&spec).await.unwrap_err();
    let VmmError::AlreadyRunning { pid, .. } = error else {
        panic!("expected AlreadyRunning, got {error:?}");
    };
    assert_eq!(u32::try_from(pid).unwrap(), process.pid);
    assert!(vmm.is_running(&process), "the first VM still runs");
    vmm.kill(&process).await.unwrap();
}

/// Without a vsock driver in the guest, Firecracker keeps the connection
/// request pending, so the handshake ends at its deadline.
#[tokio::test]
async fn agent_handshake_without_guest_listener_fails() {
    let (Some(mut vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    vmm.step_timeout = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-vsock", &kernel, dir.path());
    let process = vmm.launch(&spec).await.unwrap();
    let _guard = KillOnDrop(process.clone());

    let started = Instant::now();
    let error = vmm.connect_agent(&process).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(error, VmmError::AgentHandshake { port: 10_789, .. }),
        "{error:?}"
    );
    let chain = banger_vmm::error_chain(&error);
    assert!(chain.contains("CONNECT 10789"), "{chain}");
    vmm.kill(&process).await.unwrap();
}

/// The guest resets the machine right after it starts, so Firecracker exits
/// during or right after the launch. Either way the caller learns it.
#[tokio::test]
async fn vmm_exiting_during_boot_is_reported() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::ResetAtOnce)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-reset", &kernel, dir.path());

    match vmm.launch(&spec).await {
        Err(error) => {
            assert!(
                matches!(error, VmmError::ExitedDuringStartup { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("Vmm is stopping"), "{message}");
        }
        Ok(process) => {
            let _guard = KillOnDrop(process.clone());
            assert!(vmm.wait_exit(&process, Duration::from_secs(10)).await);
            assert_eq!(
                vmm.stop(&process, Duration::from_secs(1)).await.unwrap(),
                StopPath::AlreadyExited
            );
        }
    }
    assert!(sockets_left(&spec.run_dir).is_empty());
    let console = std::fs::read_to_string(&spec.console_log).unwrap();
    assert!(console.contains("resetting at once"), "console:\n{console}");
    let log = std::fs::read_to_string(spec.run_dir.join("vmm.log")).unwrap();
    assert!(log.contains("Vmm is stopping"), "VMM log:\n{log}");
}
