//! Errors of the Firecracker backend: Firecracker's own fault messages,
//! unsuitable binaries, and a VMM that dies while it starts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use banger_vmm::firecracker::api::{ApiClient, BootSource, LogLevel, Logger, MachineConfig};
use banger_vmm::{Accel, FirecrackerVmm, SpecError, Vmm, VmmError, error_chain};
use common::firecracker::{Guest, firecracker, guest, sockets_left, spec};

/// Firecracker 1.12.1's `fault_message` for a vCPU count outside 1 to 32.
const VCPU_FAULT: &str = "The number of vCPUs must be greater than 0, less than 32";

/// A Firecracker process serving only its API, killed when dropped.
struct BareFirecracker {
    _child: tokio::process::Child,
    api: ApiClient,
}

async fn bare_firecracker(vmm: &FirecrackerVmm, dir: &Path) -> BareFirecracker {
    let socket = dir.join("bare.sock");
    let child = tokio::process::Command::new(&vmm.binary)
        .arg("--api-sock")
        .arg(&socket)
        .args(["--level", "Warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = ApiClient::new(&socket, Duration::from_secs(5));
    for _ in 0..250 {
        if api.instance_info().await.is_ok() {
            return BareFirecracker { _child: child, api };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("Firecracker did not serve {} within 5 s", socket.display());
}

#[tokio::test]
async fn api_client_reports_fault_messages() {
    let Some(vmm) = firecracker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_firecracker(&vmm, dir.path()).await;

    let info = bare.api.instance_info().await.unwrap();
    assert_eq!(info.state, "Not started");
    assert_eq!(info.app_name, "Firecracker");

    let error = bare
        .api
        .put_machine_config(&MachineConfig {
            vcpu_count: 0,
            mem_size_mib: 128,
        })
        .await
        .unwrap_err();
    let fault = error.fault_message().unwrap_or_default();
    assert!(fault.contains(VCPU_FAULT), "{error}");

    let missing = dir.path().join("missing-vmlinux");
    let error = bare
        .api
        .put_boot_source(&BootSource {
            kernel_image_path: missing,
            initrd_path: None,
            boot_args: String::new(),
        })
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("The kernel file cannot be opened: No such file or directory"),
        "{message}"
    );
    assert!(message.contains("PUT /boot-source"), "{message}");
    assert!(message.contains("400"), "{message}");

    let error = bare
        .api
        .put_logger(&Logger {
            log_path: dir.path().join("no-such-dir/log"),
            level: LogLevel::Info,
        })
        .await
        .unwrap_err();
    assert!(
        error.fault_message().unwrap_or_default().contains("Logger"),
        "{error}"
    );
}

#[tokio::test]
async fn launch_with_64_vcpus_carries_fault() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("fc-vcpus", &kernel, dir.path());
    spec.vcpus = 64;

    let error = vmm.launch(&spec).await.unwrap_err();
    let chain = error_chain(&error);
    assert!(matches!(error, VmmError::Configure { .. }), "{error:?}");
    assert!(chain.contains(VCPU_FAULT), "{chain}");
    assert!(chain.contains("set 64 vCPUs"), "{chain}");
    assert!(chain.contains("fc-vcpus"), "{chain}");
    assert!(
        sockets_left(&spec.run_dir).is_empty(),
        "the VMM was cleaned up"
    );
}

#[tokio::test]
async fn launch_with_bzimage_carries_fault() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("fc-bzimage", &kernel, dir.path());
    let not_elf = dir.path().join("vmlinuz");
    std::fs::write(&not_elf, vec![0x4d; 4096]).unwrap();
    spec.kernel = not_elf;

    let error = vmm.launch(&spec).await.unwrap_err();
    let chain = error_chain(&error);
    assert!(chain.contains("start the instance"), "{chain}");
    assert!(chain.contains("Invalid Elf magic number"), "{chain}");
    assert!(sockets_left(&spec.run_dir).is_empty());
}

#[tokio::test]
async fn launch_with_missing_kernel_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-vmlinux");
    let spec = spec("fc-nokernel", &missing, dir.path());
    let vmm = FirecrackerVmm::new("/nonexistent/firecracker");

    let error = vmm.launch(&spec).await.unwrap_err();
    let VmmError::InvalidSpec(SpecError::MissingFile { role, path, .. }) = &error else {
        panic!("expected a missing kernel, got {error:?}");
    };
    assert_eq!(*role, "kernel");
    assert_eq!(path, &missing);
}

#[tokio::test]
async fn launch_rejects_long_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("d".repeat(100));
    std::fs::create_dir(&deep).unwrap();
    let spec = spec("fc-long", Path::new("/nonexistent/vmlinux"), &deep);

    let error = FirecrackerVmm::default().launch(&spec).await.unwrap_err();
    let VmmError::InvalidSpec(SpecError::SocketPathTooLong { path, .. }) = &error else {
        panic!("expected a socket path error, got {error:?}");
    };
    assert_eq!(path, &spec.run_dir.join("fc.sock"));
}

#[tokio::test]
async fn launch_rejects_tcg() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("fc-tcg", Path::new("/nonexistent/vmlinux"), dir.path());
    spec.accel = Accel::Tcg;
    let error = FirecrackerVmm::default().launch(&spec).await.unwrap_err();
    assert!(
        matches!(error, VmmError::UnsupportedAccel { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("QEMU backend"), "{error}");
}

/// Writes an executable script that replaces Firecracker in a test.
fn fake_firecracker(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn too_old_firecracker_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let binary = fake_firecracker(
        dir.path(),
        "firecracker",
        "#!/bin/sh\necho 'Firecracker v1.4.0'\n",
    );
    let spec = spec("fc-old", &binary, dir.path());

    let error = FirecrackerVmm::new(&binary)
        .launch(&spec)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, VmmError::FirecrackerTooOld { .. }),
        "{error:?}"
    );
    assert!(message.contains(&binary.display().to_string()), "{message}");
    assert!(message.contains("1.4.0"), "{message}");
    assert!(message.contains("1.5.0"), "{message}");
}

#[tokio::test]
async fn missing_firecracker_gives_install_hint() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("fc-missing", Path::new("/bin/sh"), dir.path());
    let error = FirecrackerVmm::new(dir.path().join("firecracker"))
        .launch(&spec)
        .await
        .unwrap_err();
    assert!(
        matches!(error, VmmError::FirecrackerNotFound { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("firecracker_bin"), "{error}");
}

#[tokio::test]
async fn vmm_dying_before_its_api_reports_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let binary = fake_firecracker(
        dir.path(),
        "firecracker",
        "#!/bin/sh\n\
         if [ \"$1\" = --version ]; then echo 'Firecracker v1.12.1'; exit 0; fi\n\
         echo 'fake firecracker: cannot open /dev/kvm' >&2\n\
         exit 1\n",
    );
    let spec = spec("fc-dies", &binary, dir.path());

    let error = FirecrackerVmm::new(&binary)
        .launch(&spec)
        .await
        .unwrap_err();
    assert!(
        matches!(error, VmmError::ExitedDuringStartup { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("cannot open /dev/kvm"), "{message}");
}

/// A fake Firecracker that returns instance information for `GET /`,
/// ignores connections that send nothing, and dies on the first
/// configuration request.
const DIES_WHILE_CONFIGURED: &str = r#"#!/usr/bin/env python3
import json, os, socket, sys
if sys.argv[1:] == ["--version"]:
    print("Firecracker v1.12.1")
    sys.exit(0)
path = sys.argv[sys.argv.index("--api-sock") + 1]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(8)
while True:
    connection, _ = server.accept()
    request = connection.recv(65536).decode()
    if not request:
        connection.close()
        continue
    if request.startswith("GET / "):
        body = json.dumps({"id": "x", "state": "Not started", "vmm_version": "1.12.1", "app_name": "Firecracker"})
        connection.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
        connection.close()
        continue
    sys.stderr.write("fake firecracker: crashed on " + request.splitlines()[0] + "\n")
    sys.stderr.flush()
    os._exit(1)
"#;

#[tokio::test]
async fn vmm_dying_during_configuration_reports_log_tail() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        common::skip("python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = fake_firecracker(dir.path(), "firecracker", DIES_WHILE_CONFIGURED);
    let spec = spec("fc-crash", &binary, dir.path());

    let error = FirecrackerVmm::new(&binary)
        .launch(&spec)
        .await
        .unwrap_err();
    assert!(
        matches!(error, VmmError::ExitedDuringStartup { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("fake firecracker: crashed on PUT /logger"),
        "{message}"
    );
    assert!(sockets_left(&spec.run_dir).is_empty());
}
