//! Choosing the VMM backend of a new VM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_model::KernelRecord;
use banger_vmm::{BackendKind, Vmm};

use crate::config::{Config, VmmSetting};
use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};
use crate::events::Events;

/// Set once the reason for falling back to QEMU has been shown, so `auto`
/// explains itself once per daemon rather than on every VM.
static FALLBACK_EXPLAINED: AtomicBool = AtomicBool::new(false);

/// Returns the first clause of a long reason, for a one-line progress message; the
/// whole text goes to the log and to `banger doctor`.
fn short_reason(reason: &str) -> &str {
    let end = reason.find(": ").unwrap_or(reason.len());
    &reason[..end]
}

pub fn parse_backend(text: &str) -> Option<BackendKind> {
    match text {
        "qemu" => Some(BackendKind::Qemu),
        "firecracker" => Some(BackendKind::Firecracker),
        _ => None,
    }
}

/// Firecracker's state as the daemon found it at startup.
#[derive(Debug, Clone)]
pub enum FirecrackerStatus {
    Usable { binary: PathBuf, version: String },
    Unusable { reason: String, hint: String },
}

pub struct Backends {
    pub map: HashMap<BackendKind, Arc<dyn Vmm>>,
    pub firecracker: FirecrackerStatus,
}

/// The backends this host can use: QEMU always (its binary is checked when a
/// VM starts), Firecracker when its binary is found and at least version 1.5.
pub async fn backends(config: &Config) -> Backends {
    let mut map: HashMap<BackendKind, Arc<dyn Vmm>> = HashMap::new();
    let qemu = config
        .qemu_bin
        .clone()
        .unwrap_or_else(|| "qemu-system-x86_64".into());
    map.insert(BackendKind::Qemu, Arc::new(banger_vmm::QemuVmm::new(qemu)));

    let requested = config
        .firecracker_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from("firecracker"));
    let hint =
        "install Firecracker 1.5 or newer from its releases, or set firecracker_bin in config.toml";
    let firecracker = match banger_vmm::firecracker::resolve_binary(&requested) {
        Err(e) => FirecrackerStatus::Unusable {
            reason: banger_vmm::error_chain(&e),
            hint: hint.into(),
        },
        Ok(binary) => match banger_vmm::firecracker::check_version(&binary).await {
            Ok(version) => {
                map.insert(
                    BackendKind::Firecracker,
                    Arc::new(banger_vmm::FirecrackerVmm::new(binary.clone())),
                );
                FirecrackerStatus::Usable {
                    binary,
                    version: banger_vmm::firecracker::format_version(version),
                }
            }
            Err(e) => FirecrackerStatus::Unusable {
                reason: banger_vmm::error_chain(&e),
                hint: hint.into(),
            },
        },
    };
    if let FirecrackerStatus::Unusable { reason, .. } = &firecracker {
        tracing::info!(%reason, "Firecracker backend unavailable");
    }
    Backends { map, firecracker }
}

impl Daemon {
    /// Runs the Firecracker boot probe on the default kernel, for `doctor`.
    pub async fn firecracker_probe_check(&self) -> banger_api::DoctorCheck {
        let name = "Firecracker boot probe";
        if let FirecrackerStatus::Unusable { .. } = &self.firecracker {
            return banger_api::DoctorCheck::warn(name, "not run: Firecracker is unusable", None);
        }
        let Ok(Some(kernel)) = self.store().get_kernel(&self.config.default_kernel) else {
            return banger_api::DoctorCheck::warn(
                name,
                "not run: the default kernel is not imported yet",
                Some(format!(
                    "run `banger kernel pull {}`",
                    self.config.default_kernel
                )),
            );
        };
        match self.firecracker_boots(&kernel).await {
            Ok(()) => banger_api::DoctorCheck::ok(name, "Firecracker boots the default kernel"),
            Err(reason) => {
                // The console, stderr and log tails go to the daemon log;
                // the check shows the reason itself.
                tracing::info!(%reason, "Firecracker boot probe failed");
                let summary = reason
                    .split_once("; last console lines:")
                    .map_or(reason.as_str(), |(summary, _)| summary);
                banger_api::DoctorCheck::warn(
                    name,
                    format!(
                        "{summary}; VMs run on QEMU (console and Firecracker log tails in {})",
                        self.paths.daemon_log().display()
                    ),
                    Some("run on a host with hardware virtualization to use Firecracker".into()),
                )
            }
        }
    }

    pub async fn firecracker_check(&self) -> banger_api::DoctorCheck {
        match &self.firecracker {
            FirecrackerStatus::Usable { binary, version } => banger_api::DoctorCheck::ok(
                "Firecracker",
                format!("{} (v{version})", binary.display()),
            ),
            FirecrackerStatus::Unusable { reason, hint } => banger_api::DoctorCheck::warn(
                "Firecracker",
                format!("{reason}; VMs run on QEMU"),
                Some(hint.clone()),
            ),
        }
    }

    /// Ok when new VMs can run on Firecracker: its backend is usable and the
    /// boot probe shows that this host's KVM boots the kernel.
    pub async fn firecracker_boots(&self, kernel: &KernelRecord) -> Result<(), String> {
        let FirecrackerStatus::Usable { binary, .. } = &self.firecracker else {
            let FirecrackerStatus::Unusable { reason, .. } = &self.firecracker else {
                unreachable!()
            };
            return Err(reason.clone());
        };
        let (files, initrd) = self.boot_files(kernel).await.map_err(|e| e.to_string())?;
        let probe_dir = self.paths.cache_dir.join("probes");
        let _ = std::fs::create_dir_all(&probe_dir);
        let _guard = self.artifact_lock("firecracker-probe").await;
        let options = banger_vmm::firecracker::FirecrackerProbeOptions::new(
            binary,
            &files.vmlinux,
            &initrd,
            &probe_dir,
        );
        let result = banger_vmm::firecracker::probe_firecracker(&options).await;
        if result.kvm_boots {
            Ok(())
        } else {
            Err(format!(
                "the Firecracker boot probe failed: {}",
                result.detail
            ))
        }
    }

    /// Picks the backend for a new VM from the request, else the config.
    /// Parses the backend a create request names; the config's `vmm` when
    /// it names none.
    pub fn requested_vmm(&self, requested: Option<&str>) -> ApiResult<VmmSetting> {
        match requested {
            Some(text) => VmmSetting::parse(text).ok_or_else(|| {
                ApiError::invalid(format!("invalid VMM backend {text:?}"))
                    .hint("use auto, firecracker or qemu")
            }),
            None => Ok(self.config.vmm),
        }
    }

    pub async fn choose_backend(
        &self,
        setting: VmmSetting,
        kernel: &KernelRecord,
        events: &Events,
    ) -> ApiResult<BackendKind> {
        match setting {
            VmmSetting::Qemu => Ok(BackendKind::Qemu),
            VmmSetting::Firecracker => {
                self.backend(BackendKind::Firecracker)?;
                // The user's choice is kept, but a boot that the probe
                // already saw fail deserves a warning up front.
                if let Err(reason) = self.firecracker_boots(kernel).await {
                    events
                        .progress(format!(
                            "warning: Firecracker's boot probe failed on this host ({}), so this boot will likely fail; `--vmm qemu` boots without KVM",
                            short_reason(&reason)
                        ))
                        .await;
                }
                Ok(BackendKind::Firecracker)
            }
            VmmSetting::Auto => match self.firecracker_boots(kernel).await {
                Ok(()) => Ok(BackendKind::Firecracker),
                Err(reason) => {
                    tracing::info!(%reason, "auto backend: using QEMU");
                    if !FALLBACK_EXPLAINED.swap(true, Ordering::SeqCst) {
                        events
                            .progress(format!(
                                "using QEMU instead of Firecracker: {}; see `banger doctor`",
                                short_reason(&reason)
                            ))
                            .await;
                    }
                    Ok(BackendKind::Qemu)
                }
            },
        }
    }
}
