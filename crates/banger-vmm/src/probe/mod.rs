//! Boot probe: whether KVM on this host can boot a guest kernel to user space,
//! with QEMU. [`crate::firecracker::probe`] is the Firecracker counterpart.
//!
//! `/dev/kvm` being present is not enough: in a nested VM whose KVM emulates
//! instructions in software, guests stall or fail with an emulation error.
//! The probe boots the real kernel and initramfs once and caches the result.

pub(crate) mod cache;
pub(crate) mod watch;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_process::{CommandError, CommandSpec};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error_chain;
use crate::qemu::{MACHINE, accel_args, full_cmdline, host_tsc_khz};
use crate::types::Accel;

pub use cache::CacheError;
pub use watch::{BootOutcome, PROBE_LINE_PREFIX, parse_probe_line};

/// Default deadline for the probe guest to print its line.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Kernel arguments of the probe VM after the console argument;
/// `banger.probe=1` makes the guest init print `banger-probe: ok <release>`
/// and power off. The KVM probe boots with `console=ttyS0 panic=-1
/// banger.probe=1`, and a TCG probe also gets `tsc_early_khz`, as
/// [`full_cmdline`] explains.
pub const PROBE_ARGS: &str = "panic=-1 banger.probe=1";

/// Guest memory of the probe VM in MiB.
const PROBE_MEMORY_MIB: u32 = 256;

/// Deadline for `qemu-system-x86_64 --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Time the probe guest gets to power off after printing its line.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(2);

/// Outcome of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub kvm_boots: bool,
    /// What happened, in a sentence for the user.
    pub detail: String,
    /// Cache key: SHA-256 over the QEMU version, host kernel release, kernel
    /// and initrd hashes and accelerator. Empty when no boot was attempted.
    pub key: String,
}

/// Inputs of a probe. [`ProbeOptions::new`] gives the defaults of
/// [`probe_accel`].
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cache_dir: PathBuf,
    pub timeout: Duration,
    /// KVM device checked before booting with KVM.
    pub kvm_device: PathBuf,
    /// Accelerator to boot with. `Tcg` exercises the guest side of the probe
    /// (kernel, initramfs, console line) on hosts without a working KVM.
    pub accel: Accel,
}

impl ProbeOptions {
    pub fn new(qemu: &Path, kernel: &Path, initrd: &Path, cache_dir: &Path) -> Self {
        ProbeOptions {
            qemu: qemu.to_owned(),
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            cache_dir: cache_dir.to_owned(),
            timeout: DEFAULT_PROBE_TIMEOUT,
            kvm_device: PathBuf::from("/dev/kvm"),
            accel: Accel::Kvm,
        }
    }
}

/// Failure that prevents a probe from giving a result; never cached.
#[derive(Debug, Error)]
enum ProbeError {
    #[error("QEMU binary {} not found: install it with `apt-get install qemu-system-x86`", binary.display())]
    QemuNotFound {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to read the QEMU version")]
    QemuVersion(#[source] CommandError),

    #[error("failed to read the host kernel release from /proc/sys/kernel/osrelease")]
    HostRelease(#[source] io::Error),

    #[error("failed to compute the probe cache key")]
    CacheKey(#[from] CacheError),

    #[error("the file hashing task failed")]
    HashTask(#[source] tokio::task::JoinError),

    #[error("failed to start the probe VM")]
    Start(#[source] CommandError),
}

/// Boots `kernel` with `initrd` under KVM and reports whether the guest init
/// reached user space within `timeout`. See [`probe_with`].
pub async fn probe_accel(
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    cache_dir: &Path,
    timeout: Duration,
) -> ProbeResult {
    let mut options = ProbeOptions::new(qemu, kernel, initrd, cache_dir);
    options.timeout = timeout;
    probe_with(&options).await
}

/// Runs the probe described by `options`.
///
/// With KVM, a missing or inaccessible device gives `kvm_boots: false` at
/// once. Otherwise a cached result for the same inputs is returned, or the
/// probe VM boots and the result is cached. A probe that could not run (QEMU
/// missing, unreadable kernel) reports `kvm_boots: false` and is not cached.
pub async fn probe_with(options: &ProbeOptions) -> ProbeResult {
    if options.accel == Accel::Kvm
        && let Err(reason) = check_kvm_device(&options.kvm_device)
    {
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
        tracing::debug!(key = %key, kvm_boots = result.kvm_boots, "boot probe result from cache");
        return result;
    }

    let started = Instant::now();
    let outcome = match boot(options).await {
        Ok(outcome) => outcome,
        Err(error) => return not_run(&error),
    };
    let result = match outcome {
        BootOutcome::Passed { release } => ProbeResult {
            kvm_boots: true,
            detail: format!(
                "{} booted guest kernel {release} to user space in {:.1} s",
                options.accel.as_str().to_uppercase(),
                started.elapsed().as_secs_f64()
            ),
            key,
        },
        BootOutcome::Failed { reason } => ProbeResult {
            kvm_boots: false,
            detail: format!(
                "{} could not boot the guest: {reason}",
                options.accel.as_str().to_uppercase()
            ),
            key,
        },
    };
    tracing::info!(kvm_boots = result.kvm_boots, detail = %result.detail, "boot probe finished");
    if let Err(error) = cache::store(&options.cache_dir, &result) {
        tracing::warn!(error = %error_chain(&error), "failed to cache the boot probe result");
    }
    result
}

fn not_run(error: &ProbeError) -> ProbeResult {
    let detail = format!("boot probe did not run: {}", error_chain(error));
    tracing::warn!(%detail, "boot probe did not run");
    ProbeResult {
        kvm_boots: false,
        detail,
        key: String::new(),
    }
}

/// Checks that `device` exists and opens read-write; the error is the reason
/// for the user.
pub(crate) fn check_kvm_device(device: &Path) -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(format!(
            "{} does not exist: this host offers no KVM (enable virtualization in the firmware or nested virtualization, and load kvm_intel or kvm_amd)",
            device.display()
        )),
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => Err(format!(
            "{} is not readable and writable by this user: add the user to the kvm group and log in again",
            device.display()
        )),
        Err(error) => Err(format!(
            "failed to open {} read-write: {error}",
            device.display()
        )),
    }
}

async fn cache_key(options: &ProbeOptions) -> Result<String, ProbeError> {
    let output = CommandSpec::new(&options.qemu)
        .arg("--version")
        .timeout(VERSION_TIMEOUT)
        .run_async()
        .await
        .map_err(|error| match error {
            CommandError::NotFound { source, .. } => ProbeError::QemuNotFound {
                binary: options.qemu.clone(),
                source: crate::vmm::not_found_source(source),
            },
            other => ProbeError::QemuVersion(other),
        })?;
    let qemu_version = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();

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

    Ok(cache::KeyInputs {
        qemu_version,
        host_release,
        kernel_sha256: hashes.0,
        initrd_sha256: hashes.1,
        accel: options.accel.as_str().to_owned(),
    }
    .key())
}

/// Boots the probe VM as a direct child with its console on stdout, and
/// ensures it is gone before returning.
async fn boot(options: &ProbeOptions) -> Result<BootOutcome, ProbeError> {
    let host_tsc_khz = match options.accel {
        Accel::Tcg => host_tsc_khz().await,
        Accel::Kvm => None,
    };
    let command = CommandSpec::new(&options.qemu)
        .args(["-machine", MACHINE])
        .args(accel_args(options.accel))
        .args(["-smp", "1", "-m", &format!("{PROBE_MEMORY_MIB}M")])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&options.kernel)
        .arg("-initrd")
        .arg(&options.initrd)
        .arg("-append")
        .arg(full_cmdline(PROBE_ARGS, options.accel, host_tsc_khz))
        .args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);

    tracing::info!(accel = %options.accel, kernel = %options.kernel.display(), "starting boot probe VM");
    let mut child = command.spawn().map_err(|error| match error {
        CommandError::NotFound { source, .. } => ProbeError::QemuNotFound {
            binary: options.qemu.clone(),
            source: crate::vmm::not_found_source(source),
        },
        other => ProbeError::Start(other),
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("CommandSpec::spawn pipes stdout and stderr");
    };
    let outcome = watch::watch_boot(stdout, stderr, child.wait(), options.timeout).await;

    // The guest powers off after its line; a stalled or paused VM is killed.
    if matches!(outcome, BootOutcome::Passed { .. }) {
        let _ = tokio::time::timeout(POWEROFF_TIMEOUT, child.wait()).await;
    }
    if let Ok(None) = child.try_wait() {
        if let Err(error) = child.start_kill() {
            tracing::warn!(%error, "failed to kill the boot probe VM");
        }
        if let Err(error) = child.wait().await {
            tracing::warn!(%error, "failed to wait for the killed boot probe VM");
        }
    }
    Ok(outcome)
}
