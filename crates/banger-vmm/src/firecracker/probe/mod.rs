//! Boot probe for Firecracker: whether Firecracker on this host can boot a
//! guest kernel to user space.
//!
//! It boots the ELF kernel and the initramfs with `banger.probe=1`, which
//! makes the initramfs init print `banger-probe: ok <release>`, and watches
//! the serial console. Besides the deadline, three signs end a probe early.
//! Firecracker exits, its log reports `KVM_EXIT_INTERNAL_ERROR`, or the guest
//! made no port I/O or MMIO access within the stall timeout, although a Linux
//! guest that writes to its serial console makes such accesses. The result
//! is cached like the QEMU probe's.

mod boot;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::binary::{format_version, version};
use crate::error_chain;
use crate::probe::cache::{self, CacheError};
use crate::probe::watch::BootOutcome;
use crate::probe::{DEFAULT_PROBE_TIMEOUT, ProbeResult, check_kvm_device};
use crate::vmm::VmmError;

pub use boot::{PROBE_ARGS, vcpu_exit_count};

/// Default time after `InstanceStart` within which the guest must make its
/// first port I/O or MMIO access.
///
/// NOTE: an estimate. With `console=ttyS0` a Linux guest uses its serial
/// port early in boot. Under the nested, software-emulated KVM of banger's
/// development machines, the Debian 6.1 cloud kernel made no port I/O or
/// MMIO exit in the 10 s measured. The margin for slow hosts is a guess.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Inputs of a Firecracker probe. [`FirecrackerProbeOptions::new`] gives the
/// defaults.
#[derive(Debug, Clone)]
pub struct FirecrackerProbeOptions {
    pub firecracker: PathBuf,
    /// ELF kernel (`vmlinux`).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cache_dir: PathBuf,
    /// Deadline for the guest to print the probe line.
    pub timeout: Duration,
    /// See [`DEFAULT_STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// KVM device checked before booting.
    pub kvm_device: PathBuf,
}

impl FirecrackerProbeOptions {
    pub fn new(firecracker: &Path, kernel: &Path, initrd: &Path, cache_dir: &Path) -> Self {
        FirecrackerProbeOptions {
            firecracker: firecracker.to_owned(),
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            cache_dir: cache_dir.to_owned(),
            timeout: DEFAULT_PROBE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            kvm_device: PathBuf::from("/dev/kvm"),
        }
    }
}

/// Failure that prevents a probe from giving a result. It is never cached.
#[derive(Debug, Error)]
pub(crate) enum ProbeError {
    #[error("failed to check the Firecracker binary")]
    Binary(#[source] Box<VmmError>),

    #[error("failed to read the host kernel release from /proc/sys/kernel/osrelease")]
    HostRelease(#[source] io::Error),

    #[error("failed to compute the probe cache key")]
    CacheKey(#[from] CacheError),

    #[error("the file hashing task failed")]
    HashTask(#[source] tokio::task::JoinError),

    #[error("failed to prepare the probe VM")]
    Prepare(#[source] io::Error),

    #[error("failed to start the probe VM")]
    Start(#[source] banger_process::CommandError),

    #[error("failed to configure the probe VM: Firecracker failed to {action}")]
    Configure {
        action: &'static str,
        #[source]
        source: Box<super::ApiError>,
    },

    #[error("Firecracker did not serve its API socket {} within {} s; standard error: {stderr}", socket.display(), timeout.as_secs_f64())]
    ApiTimedOut {
        socket: PathBuf,
        timeout: Duration,
        stderr: String,
    },
}

/// Runs the Firecracker probe described by `options`.
///
/// A missing or inaccessible KVM device gives `kvm_boots: false` at once.
/// Otherwise a cached result for the same inputs is returned, or the probe VM
/// boots and the result is cached. A probe that could not run (Firecracker
/// missing or too old, unreadable kernel) reports `kvm_boots: false` and is
/// not cached.
pub async fn probe_firecracker(options: &FirecrackerProbeOptions) -> ProbeResult {
    if let Err(reason) = check_kvm_device(&options.kvm_device) {
        return ProbeResult {
            kvm_boots: false,
            detail: reason,
            key: String::new(),
        };
    }

    let key = match cache_key(options).await {
        Ok(key) => key,
        Err(error) => return not_run(&error),
    };
    if let Some(result) = cache::load(&options.cache_dir, &key) {
        tracing::debug!(key = %key, kvm_boots = result.kvm_boots, "Firecracker boot probe result from cache");
        return result;
    }

    let started = Instant::now();
    let outcome = match boot::boot(options).await {
        Ok(outcome) => outcome,
        Err(error) => return not_run(&error),
    };
    let result = match outcome {
        BootOutcome::Passed { release } => ProbeResult {
            kvm_boots: true,
            detail: format!(
                "Firecracker booted guest kernel {release} to user space in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            key,
        },
        BootOutcome::Failed { reason } => ProbeResult {
            kvm_boots: false,
            detail: format!(
                "Firecracker could not boot the guest in {:.1} s: {reason}",
                started.elapsed().as_secs_f64()
            ),
            key,
        },
    };
    tracing::info!(kvm_boots = result.kvm_boots, detail = %result.detail, "Firecracker boot probe finished");
    if let Err(error) = cache::store(&options.cache_dir, &result) {
        tracing::warn!(error = %error_chain(&error), "failed to cache the Firecracker boot probe result");
    }
    result
}

fn not_run(error: &ProbeError) -> ProbeResult {
    let detail = format!("Firecracker boot probe did not run: {}", error_chain(error));
    tracing::warn!(%detail, "Firecracker boot probe did not run");
    ProbeResult {
        kvm_boots: false,
        detail,
        key: String::new(),
    }
}

/// Everything a Firecracker probe outcome depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyInputs {
    pub firecracker_version: String,
    pub host_release: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
}

impl KeyInputs {
    /// Returns the key: a SHA-256 over all inputs, in hex. The text differs
    /// from the QEMU probe's key text, so the two never share a cache file.
    pub fn key(&self) -> String {
        let text = format!(
            "backend=firecracker\nfirecracker={}\nhost={}\nkernel={}\ninitrd={}\n",
            self.firecracker_version, self.host_release, self.kernel_sha256, self.initrd_sha256
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

async fn cache_key(options: &FirecrackerProbeOptions) -> Result<String, ProbeError> {
    let firecracker_version = version(&options.firecracker)
        .await
        .map_err(|error| ProbeError::Binary(Box::new(error)))?;
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(ProbeError::HostRelease)?
        .trim()
        .to_owned();

    let kernel = options.kernel.clone();
    let initrd = options.initrd.clone();
    let hashes = tokio::task::spawn_blocking(move || -> Result<(String, String), CacheError> {
        Ok((cache::sha256_file(&kernel)?, cache::sha256_file(&initrd)?))
    })
    .await
    .map_err(ProbeError::HashTask)??;

    Ok(KeyInputs {
        firecracker_version: format_version(firecracker_version),
        host_release,
        kernel_sha256: hashes.0,
        initrd_sha256: hashes.1,
    }
    .key())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            firecracker_version: "1.12.1".to_owned(),
            host_release: "6.1.0".to_owned(),
            kernel_sha256: "aa".to_owned(),
            initrd_sha256: "bb".to_owned(),
        }
    }

    #[test]
    fn key_changes_with_each_input() {
        let base = inputs().key();
        assert_eq!(base.len(), 64);
        assert_eq!(base, inputs().key(), "key is deterministic");
        let changes: [fn(&mut KeyInputs); 4] = [
            |inputs| inputs.firecracker_version.push('x'),
            |inputs| inputs.host_release.push('x'),
            |inputs| inputs.kernel_sha256.push('x'),
            |inputs| inputs.initrd_sha256.push('x'),
        ];
        for change in changes {
            let mut changed = inputs();
            change(&mut changed);
            assert_ne!(changed.key(), base, "{changed:?}");
        }
    }

    #[test]
    fn key_differs_from_qemu_probe_key() {
        let qemu = cache::KeyInputs {
            qemu_version: "1.12.1".to_owned(),
            host_release: "6.1.0".to_owned(),
            kernel_sha256: "aa".to_owned(),
            initrd_sha256: "bb".to_owned(),
            accel: "kvm".to_owned(),
        };
        assert_ne!(qemu.key(), inputs().key());
    }

    #[tokio::test]
    async fn missing_kvm_device_answers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = FirecrackerProbeOptions::new(
            Path::new("firecracker"),
            &dir.path().join("vmlinux"),
            &dir.path().join("initrd"),
            dir.path(),
        );
        options.kvm_device = dir.path().join("kvm");
        let result = probe_firecracker(&options).await;
        assert!(!result.kvm_boots);
        assert!(
            result.detail.contains("does not exist"),
            "{}",
            result.detail
        );
        assert!(result.key.is_empty());
    }

    #[tokio::test]
    async fn missing_firecracker_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"").unwrap();
        let cache_dir = dir.path().join("cache");
        let mut options = FirecrackerProbeOptions::new(
            &dir.path().join("no-firecracker"),
            &kernel,
            &kernel,
            &cache_dir,
        );
        // Any readable and writable file passes the KVM device check, so the
        // probe gets as far as looking for Firecracker.
        options.kvm_device = kernel.clone();

        let result = probe_firecracker(&options).await;
        assert!(!result.kvm_boots);
        assert!(result.detail.contains("did not run"), "{}", result.detail);
        assert!(
            result.detail.contains("firecracker_bin"),
            "{}",
            result.detail
        );
        assert!(result.key.is_empty());
        assert!(!cache_dir.exists(), "nothing is cached");
    }
}
