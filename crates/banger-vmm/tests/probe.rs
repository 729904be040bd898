//! The boot probe against real QEMU.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use banger_vmm::{Accel, ProbeOptions, probe_with};

/// Wall-clock allowance for a TCG probe boot; about 2 s is typical on a
/// 2-core development VM.
const TCG_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn probe_without_kvm_device_answers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, b"").unwrap();
    let mut options = ProbeOptions::new(
        Path::new("qemu-system-x86_64"),
        &kernel,
        &kernel,
        dir.path(),
    );
    options.kvm_device = dir.path().join("kvm");

    let started = Instant::now();
    let result = probe_with(&options).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(!result.kvm_boots);
    assert!(
        result
            .detail
            .contains(&options.kvm_device.display().to_string()),
        "{}",
        result.detail
    );
    assert!(
        result.detail.contains("does not exist"),
        "{}",
        result.detail
    );
    assert!(result.key.is_empty());
}

#[tokio::test]
async fn probe_missing_qemu_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, b"").unwrap();
    let mut options = ProbeOptions::new(
        Path::new("/nonexistent/qemu"),
        &kernel,
        &kernel,
        &dir.path().join("cache"),
    );
    options.accel = Accel::Tcg;

    let result = probe_with(&options).await;
    assert!(!result.kvm_boots);
    assert!(
        result.detail.contains("apt-get install qemu-system-x86"),
        "{}",
        result.detail
    );
    assert!(result.key.is_empty());
    assert!(!dir.path().join("cache").exists(), "nothing is cached");
}

#[tokio::test]
async fn tcg_probe_passes_and_is_cached() {
    let (Some(qemu), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let Some(initramfs) = common::test_initramfs(kernel) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = ProbeOptions::new(&qemu.binary, &kernel.image, initramfs, dir.path());
    options.accel = Accel::Tcg;
    options.timeout = TCG_PROBE_TIMEOUT;

    let result = probe_with(&options).await;
    assert!(result.kvm_boots, "{}", result.detail);
    assert!(result.detail.contains(&kernel.release), "{}", result.detail);
    assert_eq!(result.key.len(), 64);
    let cache_file = dir.path().join(format!("kvm-probe-{}.json", result.key));
    assert!(cache_file.exists());

    let started = Instant::now();
    let cached = probe_with(&options).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(cached, result);
}

/// Runs the real KVM probe. On this project's development machines KVM is a
/// software nested implementation (`kvm_pvm`) that cannot boot the guest, so
/// there the result must be false. On other hosts the test only checks that
/// the probe kept its deadline and cached its result.
#[tokio::test]
async fn kvm_probe_real_run() {
    let (Some(qemu), Some(kernel)) = (common::qemu(), common::kernel()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dummy_initrd = dir.path().join("initrd");
    std::fs::write(&dummy_initrd, b"").unwrap();
    let initrd = common::test_initramfs(kernel)
        .unwrap_or(&dummy_initrd)
        .to_owned();

    let started = Instant::now();
    let result = banger_vmm::probe_accel(
        &qemu.binary,
        &kernel.image,
        &initrd,
        dir.path(),
        Duration::from_secs(20),
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!("KVM probe after {elapsed:?}: {result:?}");
    assert!(
        elapsed < Duration::from_secs(30),
        "the 20 s deadline was not kept"
    );
    assert!(!result.detail.is_empty());

    let nested_kvm = Path::new("/sys/module/kvm_pvm").exists();
    let kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if nested_kvm || !kvm_usable {
        assert!(!result.kvm_boots, "{}", result.detail);
    }
    if kvm_usable {
        assert_eq!(result.key.len(), 64, "a boot was attempted and cached");
        let cached = banger_vmm::probe_accel(
            &qemu.binary,
            &kernel.image,
            &initrd,
            dir.path(),
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(cached, result);
    }
}
