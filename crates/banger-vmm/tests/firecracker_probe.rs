//! The Firecracker boot probe against the real binary: the small test guest
//! passes or stalls on purpose, and the Debian kernel shows what KVM on
//! this host can do.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use banger_vmm::firecracker::{FirecrackerProbeOptions, probe_firecracker};
use common::firecracker::{Guest, debian_kernel, firecracker, guest};

fn options(binary: &Path, kernel: &Path, dir: &Path) -> FirecrackerProbeOptions {
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, b"not read by the test guest").unwrap();
    FirecrackerProbeOptions::new(binary, kernel, &initrd, &dir.join("cache"))
}

#[tokio::test]
async fn test_guest_passes_and_is_cached() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Ready)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = options(&vmm.binary, &kernel, dir.path());

    let result = probe_firecracker(&options).await;
    eprintln!("probe of the test guest: {result:?}");
    assert!(result.kvm_boots, "{}", result.detail);
    assert!(result.detail.contains("test-guest"), "{}", result.detail);
    assert_eq!(result.key.len(), 64);
    let cache_file = options
        .cache_dir
        .join(format!("kvm-probe-{}.json", result.key));
    assert!(cache_file.exists());

    // A second probe returns the cached result: an edited detail shows
    // that no boot happened.
    let text = std::fs::read_to_string(&cache_file).unwrap();
    let detail = serde_json::to_string(&result.detail).unwrap();
    assert!(text.contains(&detail), "{text}");
    std::fs::write(
        &cache_file,
        text.replace(&detail, "\"read from the cache\""),
    )
    .unwrap();
    let cached = probe_firecracker(&options).await;
    assert_eq!(cached.detail, "read from the cache");
    assert_eq!(cached.kvm_boots, result.kvm_boots);
    assert_eq!(cached.key, result.key);
}

#[tokio::test]
async fn stalled_guest_fails_at_stall_timeout() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::Stall)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&vmm.binary, &kernel, dir.path());
    options.stall_timeout = Duration::from_secs(1);

    let started = Instant::now();
    let result = probe_firecracker(&options).await;
    eprintln!(
        "probe of the stalling guest after {:?}: {result:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < options.timeout,
        "the stall deadline was not kept"
    );
    assert!(!result.kvm_boots);
    assert!(
        result.detail.contains("no port I/O or MMIO access in 1 s"),
        "{}",
        result.detail
    );
    assert_eq!(result.key.len(), 64, "a failed boot is cached");
}

#[tokio::test]
async fn guest_reset_fails_at_once() {
    let (Some(vmm), Some(kernel)) = (firecracker(), guest(Guest::ResetAtOnce)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = options(&vmm.binary, &kernel, dir.path());

    let started = Instant::now();
    let result = probe_firecracker(&options).await;
    assert!(
        started.elapsed() < options.timeout,
        "the probe waited for its deadline"
    );
    assert!(!result.kvm_boots);
    assert!(
        result.detail.contains("Firecracker exited with"),
        "{}",
        result.detail
    );
    assert!(
        result.detail.contains("resetting at once"),
        "console lines are quoted: {}",
        result.detail
    );
}

/// Runs the probe on the Debian kernel with the test initramfs. On this
/// project's development machines KVM is a software nested implementation
/// (`kvm_pvm`) that cannot boot the kernel, so there the result must be
/// false. Elsewhere the test checks the deadline and the cache.
#[tokio::test]
async fn debian_kernel_probe_real_run() {
    let (Some(vmm), Some(kernel), Some(modules)) =
        (firecracker(), debian_kernel(), common::kernel())
    else {
        return;
    };
    let Some(initramfs) = common::test_initramfs(modules) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = FirecrackerProbeOptions::new(
        &vmm.binary,
        &kernel.vmlinux,
        initramfs,
        &dir.path().join("cache"),
    );

    let started = Instant::now();
    let result = probe_firecracker(&options).await;
    let elapsed = started.elapsed();
    eprintln!("Firecracker probe of the Debian kernel after {elapsed:?}: {result:?}");
    assert!(
        elapsed < options.timeout + Duration::from_secs(10),
        "the deadline was not kept"
    );
    assert_eq!(result.key.len(), 64, "a boot was attempted and cached");
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert!(!result.kvm_boots, "{}", result.detail);
    }
    if result.kvm_boots {
        assert!(result.detail.contains(&kernel.release), "{}", result.detail);
    }
    let cached = probe_firecracker(&options).await;
    assert_eq!(cached, result);
}
