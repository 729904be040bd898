//! `GET /v1/doctor`: checks of the host, each with its fix.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use banger_api::DoctorCheck;

use crate::daemon::Daemon;

/// Free space below which the disk check warns: one image, one kernel and a
/// few VMs' work disks as they fill.
const MIN_FREE_BYTES: u64 = 10 << 30;

pub async fn doctor(State(daemon): State<Arc<Daemon>>) -> Json<Vec<DoctorCheck>> {
    let mut checks = vec![kvm_access(), daemon.qemu_check().await];
    checks.push(daemon.firecracker_check().await);
    checks.push(daemon.firecracker_probe_check().await);
    checks.push(daemon.probe_check().await);
    checks.push(daemon.network_check());
    for (label, dir) in [
        ("disk space (state)", &daemon.paths.state_dir),
        ("disk space (cache)", &daemon.paths.cache_dir),
    ] {
        checks.push(free_space(label, dir));
    }
    for (program, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("apt-get", "apt"),
    ] {
        checks.push(program_check(program, package));
    }
    checks.push(match daemon.agent_binary() {
        Ok(path) => DoctorCheck::ok("guest agent", format!("{} (static)", path.display())),
        Err(e) => DoctorCheck::fail("guest agent", e.to_string(), e.0.hint.clone()),
    });
    Json(checks)
}

fn kvm_access() -> DoctorCheck {
    let device = Path::new("/dev/kvm");
    if !device.exists() {
        return DoctorCheck::warn(
            "KVM",
            "/dev/kvm does not exist; guests run under QEMU's software emulation",
            Some("enable virtualization in the firmware or the hypervisor, and load kvm_intel or kvm_amd".into()),
        );
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(_) => DoctorCheck::ok("KVM", "/dev/kvm is readable and writable"),
        Err(e) => DoctorCheck::warn(
            "KVM",
            format!("cannot open /dev/kvm: {e}"),
            Some(
                "add yourself to the kvm group: `sudo usermod -aG kvm $USER`, then log in again"
                    .into(),
            ),
        ),
    }
}

fn free_space(label: &str, dir: &Path) -> DoctorCheck {
    // The directory may not exist yet; the space is measured on its nearest existing parent.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(existing) {
        Ok(stat) => {
            let free = stat.blocks_available() * stat.fragment_size();
            let text = format!(
                "{} free on {}",
                banger_model::format_size(free.div_ceil(1 << 20) << 20),
                existing.display()
            );
            if free < MIN_FREE_BYTES {
                DoctorCheck::warn(
                    label,
                    text,
                    Some("free space: `banger vm delete` unused VMs".into()),
                )
            } else {
                DoctorCheck::ok(label, text)
            }
        }
        Err(e) => DoctorCheck::fail(label, format!("statvfs {}: {e}", existing.display()), None),
    }
}

fn program_check(program: &str, package: &str) -> DoctorCheck {
    match banger_image::command::find_in_path(program, std::env::var_os("PATH").as_deref()) {
        Some(path) => DoctorCheck::ok(program, path.display().to_string()),
        None => DoctorCheck::fail(
            program,
            format!("{program} not found on PATH"),
            Some(format!("apt-get install {package}")),
        ),
    }
}

impl Daemon {
    /// Reports how VMs get their network, for `doctor`.
    fn network_check(&self) -> DoctorCheck {
        let name = "guest network";
        if !self.config.network.enabled {
            return DoctorCheck::ok(
                name,
                "off ([network] enabled = false): VMs boot without a network device",
            );
        }
        match self.net.backend() {
            Ok(_) => DoctorCheck::ok(
                name,
                format!(
                    "VMs get a tap on bridge {} in {}",
                    self.config.network.bridge, self.config.network.pool
                ),
            ),
            Err(e) => DoctorCheck::warn(
                name,
                format!("VMs boot without a network device: {e}"),
                Some(
                    "install the root helper with `sudo banger system install --owner $USER`"
                        .into(),
                ),
            ),
        }
    }

    async fn qemu_check(&self) -> DoctorCheck {
        let binary = self.qemu_binary();
        let output = tokio::process::Command::new(&binary)
            .arg("--version")
            .output()
            .await;
        match output {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                DoctorCheck::ok("QEMU", text.lines().next().unwrap_or("").to_string())
            }
            _ => DoctorCheck::fail(
                "QEMU",
                format!("{} cannot be run", binary.display()),
                Some("apt-get install qemu-system-x86, or set qemu_bin in config.toml".into()),
            ),
        }
    }

    async fn probe_check(&self) -> DoctorCheck {
        let Ok(Some(kernel)) = self.store().get_kernel(&self.config.default_kernel) else {
            return DoctorCheck::warn(
                "KVM boot probe",
                "not run: the default kernel is not imported yet",
                Some(format!(
                    "run `banger kernel pull {}`",
                    self.config.default_kernel
                )),
            );
        };
        let (files, initrd) = match self.boot_files(&kernel).await {
            Ok(inputs) => inputs,
            Err(e) => return DoctorCheck::fail("KVM boot probe", e.to_string(), e.0.hint.clone()),
        };
        let image = match crate::vms::qemu_image(&files, &kernel.name) {
            Ok(image) => image,
            Err(e) => return DoctorCheck::fail("KVM boot probe", e.to_string(), e.0.hint.clone()),
        };
        let result = self.kvm_probe(&image, &initrd).await;
        if result.kvm_boots {
            DoctorCheck::ok("KVM boot probe", "KVM boots the default kernel")
        } else {
            DoctorCheck::warn(
                "KVM boot probe",
                format!(
                    "KVM cannot boot a guest here, so guests use TCG: {}",
                    result.detail
                ),
                Some("run on a host with hardware virtualization for KVM speed".into()),
            )
        }
    }
}
