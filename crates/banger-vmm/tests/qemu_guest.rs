//! A real guest under TCG: the Debian cloud kernel with a test initramfs whose
//! init loads the virtio modules, reports its disks, writes to the root disk,
//! replies on the agent port and powers off on the ACPI power button.

mod common;

use std::time::Duration;

use banger_vmm::{DiskSpec, StopPath, Vmm};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Wall-clock allowance for the TCG guest to boot and load its modules;
/// about 2 s is typical on a 2-core development VM.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn guest_disks_agent_and_power_button() {
    let (Some(vmm), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let Some(initramfs) = common::test_initramfs(kernel) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root_disk = dir.path().join("root.img");
    let seed_disk = dir.path().join("seed.img");
    std::fs::write(&root_disk, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&seed_disk, vec![0u8; 1 << 20]).unwrap();

    let mut spec = common::tcg_spec("guest", kernel, dir.path(), "panic=-1");
    spec.initrd = Some(initramfs.to_owned());
    spec.disks = vec![
        DiskSpec {
            path: root_disk.clone(),
            read_only: false,
        },
        DiskSpec {
            path: seed_disk,
            read_only: true,
        },
    ];

    let process = vmm.launch(&spec).await.unwrap();
    let _guard = common::KillOnDrop(process.clone());

    // Connect before the guest opens its port. The request waits in the socket
    // buffer until the guest reads it.
    let stream = vmm.connect_agent(&process).await.unwrap();
    let (read_half, mut write_half) = stream.into_split();
    write_half.write_all(b"ping\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(
        BOOT_TIMEOUT,
        BufReader::new(read_half).read_line(&mut reply),
    )
    .await
    .expect("no reply on the agent port")
    .unwrap();
    assert_eq!(reply, "pong ping\n");

    let console = common::wait_for_console(&spec.console_log, "guest: ready", BOOT_TIMEOUT).await;
    assert!(
        console.contains("guest: disk vda serial=disk0 ro=0"),
        "console:\n{console}"
    );
    assert!(
        console.contains("guest: disk vdb serial=disk1 ro=1"),
        "console:\n{console}"
    );

    let path = vmm.stop(&process, BOOT_TIMEOUT).await.unwrap();
    assert_eq!(path, StopPath::Acpi);
    assert!(!vmm.is_running(&process));
    let console = std::fs::read_to_string(&spec.console_log).unwrap();
    assert!(
        console.contains("guest: power button pressed"),
        "console:\n{console}"
    );

    let root = std::fs::read(&root_disk).unwrap();
    assert!(
        root.starts_with(b"written-by-guest"),
        "the guest write did not reach the disk image"
    );
}
