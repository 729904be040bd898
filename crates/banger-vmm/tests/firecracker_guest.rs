//! End to end under Firecracker: the Debian kernel boots the banger
//! initramfs, switches to a small root file system whose init is the agent,
//! and a command runs through vsock and the agent.
//!
//! It runs only where the Firecracker boot probe passes. Elsewhere, as on
//! hosts whose KVM cannot boot a Linux guest, it prints the probe result and
//! skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger_agent_proto::{
    Decoder, ExecRequest, ExitStatus, Frame, FrameKind, Hello, HelloAck, decode_json, encode,
    encode_json,
};
use banger_vmm::firecracker::{FirecrackerProbeOptions, probe_firecracker};
use banger_vmm::{Accel, DiskSpec, LaunchSpec, Vmm};
use common::firecracker::{debian_kernel, firecracker, static_agent, test_cache};
use common::{KillOnDrop, skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Wall-clock allowance for the guest to boot and its agent to accept a
/// connection.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds an ext4 image labelled `label` from the directory `tree`.
fn make_ext4(image: &Path, label: &str, tree: &Path) -> bool {
    std::fs::write(image, b"").unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(tree)
        .arg(image)
        .arg("64M")
        .status();
    matches!(status, Ok(status) if status.success())
}

/// Returns a root file system whose `/sbin/banger-agent` is the agent.
fn small_root(dir: &Path, agent: &Path) -> Option<PathBuf> {
    let tree = dir.join("root-tree");
    for sub in ["sbin", "dev", "proc", "sys", "run", "tmp", "root", "etc"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    std::fs::copy(agent, tree.join("sbin/banger-agent")).unwrap();
    let image = dir.join("root.ext4");
    make_ext4(&image, "bangerroot", &tree).then_some(image)
}

async fn send(stream: &mut UnixStream, frame: Frame) {
    stream.write_all(&encode(&frame).unwrap()).await.unwrap();
}

async fn receive(stream: &mut UnixStream, decoder: &mut Decoder) -> Frame {
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame() {
            return frame;
        }
        let read = tokio::time::timeout(BOOT_TIMEOUT, stream.read(&mut buffer))
            .await
            .expect("no frame from the agent")
            .unwrap();
        assert!(read > 0, "the agent closed the connection");
        decoder.push(&buffer[..read]);
    }
}

#[tokio::test]
async fn command_runs_through_vsock_agent() {
    let (Some(vmm), Some(kernel)) = (firecracker(), debian_kernel()) else {
        return;
    };
    // The probe boots the initramfs with the agent when one is built, and
    // else the test initramfs, so the gate works without an agent too.
    let agent = static_agent();
    let cache = test_cache();
    let initramfs = match &agent {
        Some(agent) => banger_image::build_initramfs(kernel, agent, &cache).unwrap(),
        None => {
            let Some(modules) = common::kernel() else {
                return;
            };
            let Some(initramfs) = common::test_initramfs(modules) else {
                return;
            };
            initramfs.to_owned()
        }
    };
    let probe_options = FirecrackerProbeOptions::new(
        &vmm.binary,
        &kernel.vmlinux,
        &initramfs,
        &cache.join("probes"),
    );
    let probe = probe_firecracker(&probe_options).await;
    eprintln!(
        "Firecracker boot probe: kvm_boots={} ({})",
        probe.kvm_boots, probe.detail
    );
    if !probe.kvm_boots {
        skip("the Firecracker boot probe failed on this host, so no Linux guest can boot");
        return;
    }
    let Some(agent) = agent else {
        skip(
            "no static banger-agent: set BANGER_AGENT_BIN or BANGER_BIN_DIR (scripts/build.sh builds one)",
        );
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let Some(root) = small_root(dir.path(), &agent) else {
        skip("mkfs.ext4 cannot build the root image (install e2fsprogs)");
        return;
    };
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let work = dir.path().join("work.ext4");
    assert!(make_ext4(&work, "bangerwork", &empty));
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let spec = LaunchSpec {
        vm_id: "fc-e2e".to_owned(),
        vcpus: 1,
        memory_mib: 256,
        kernel: kernel.vmlinux.clone(),
        initrd: Some(initramfs),
        // The initramfs passes the arguments after `--` on to the init.
        cmdline: "root=LABEL=bangerroot init=/sbin/banger-agent -- serve".to_owned(),
        disks: vec![
            DiskSpec {
                path: root,
                read_only: false,
            },
            DiskSpec {
                path: work,
                read_only: false,
            },
        ],
        nics: Vec::new(),
        run_dir,
        console_log: dir.path().join("console.log"),
        accel: Accel::Kvm,
    };

    let process = vmm.launch(&spec).await.unwrap();
    let _guard = KillOnDrop(process.clone());
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut stream = loop {
        match vmm.connect_agent(&process).await {
            Ok(stream) => break stream,
            Err(error) => {
                let console = std::fs::read_to_string(&spec.console_log).unwrap_or_default();
                assert!(
                    vmm.is_running(&process),
                    "Firecracker exited during boot; console:\n{console}"
                );
                assert!(
                    Instant::now() < deadline,
                    "the agent did not answer on vsock: {}; console:\n{console}",
                    banger_vmm::error_chain(&error)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let mut decoder = Decoder::new();
    let hello = Hello {
        nonce: 7,
        host_version: "firecracker-test".to_owned(),
    };
    send(
        &mut stream,
        Frame::new(FrameKind::Hello, 0, encode_json(&hello)),
    )
    .await;
    let ack = receive(&mut stream, &mut decoder).await;
    assert_eq!(ack.kind, FrameKind::HelloAck);
    let ack: HelloAck = decode_json(&ack.payload).unwrap();
    assert_eq!(ack.nonce, 7);
    assert_eq!(ack.kernel_release, kernel.release);

    let request = ExecRequest {
        argv: vec!["/sbin/banger-agent".to_owned(), "version".to_owned()],
        ..Default::default()
    };
    send(
        &mut stream,
        Frame::new(FrameKind::ExecStart, 1, encode_json(&request)),
    )
    .await;
    let mut stdout = Vec::new();
    let status = loop {
        let frame = receive(&mut stream, &mut decoder).await;
        match frame.kind {
            FrameKind::Stdout => stdout.extend_from_slice(&frame.payload),
            FrameKind::Exit => break decode_json::<ExitStatus>(&frame.payload).unwrap(),
            FrameKind::Stderr => {
                eprintln!("guest stderr: {}", String::from_utf8_lossy(&frame.payload))
            }
            other => panic!("unexpected {other:?} frame: {:?}", frame.payload),
        }
    };
    assert_eq!(status.code, Some(0), "{status:?}");
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(stdout.starts_with("banger-agent "), "{stdout}");

    drop(stream);
    vmm.stop(&process, Duration::from_secs(20)).await.unwrap();
    assert!(!vmm.is_running(&process));
}
