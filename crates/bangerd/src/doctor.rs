//! `GET /v1/doctor`: checks of the host, each with its fix.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use banger_api::{DoctorCheck, units};

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
    checks.push(unit_check(Path::new("/")));
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

/// Checks that installed systemd units keep the settings that confine them
/// and keep VMs running across a unit restart. Absent units pass: banger
/// also runs without them.
fn unit_check(root: &Path) -> DoctorCheck {
    const LABEL: &str = "systemd units";
    let dir = root.join(units::UNIT_DIR);
    let mut installed = Vec::new();
    let mut problems = Vec::new();
    for unit in [units::ROOT_UNIT, units::DAEMON_UNIT] {
        let path = dir.join(unit);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                installed.push(unit);
                let missing = units::missing_settings(unit, &text);
                if !missing.is_empty() {
                    problems.push(format!("{} lacks {}", path.display(), missing.join(", ")));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    if !problems.is_empty() {
        return DoctorCheck::warn(
            LABEL,
            problems.join("; "),
            Some("run `sudo banger system install --owner USER` again to rewrite the units".into()),
        );
    }
    if installed.is_empty() {
        DoctorCheck::ok(
            LABEL,
            "not installed (`banger system install` sets them up)",
        )
    } else {
        DoctorCheck::ok(
            LABEL,
            format!(
                "{} keep KillMode=process and their hardening",
                installed.join(" and ")
            ),
        )
    }
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
    match banger_process::find_in_path(program, std::env::var_os("PATH").as_deref()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::DoctorStatus;

    fn write_unit(root: &Path, unit: &str, text: &str) {
        let dir = root.join(units::UNIT_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(unit), text).unwrap();
    }

    const HARDENED: &str = "[Service]\nNoNewPrivileges=yes\nProtectSystem=strict\nRestrictSUIDSGID=yes\nLockPersonality=yes\nKillMode=process\n";

    #[test]
    fn absent_units_pass() {
        let root = tempfile::tempdir().unwrap();
        let check = unit_check(root.path());
        assert_eq!(check.status, DoctorStatus::Ok);
        assert!(check.detail.contains("not installed"), "{}", check.detail);
    }

    #[test]
    fn hardened_units_pass() {
        let root = tempfile::tempdir().unwrap();
        write_unit(
            root.path(),
            units::ROOT_UNIT,
            &format!("{HARDENED}SendSIGKILL=no\n"),
        );
        write_unit(root.path(), units::DAEMON_UNIT, HARDENED);
        let check = unit_check(root.path());
        assert_eq!(check.status, DoctorStatus::Ok, "{}", check.detail);
    }

    #[test]
    fn weakened_unit_warns_with_the_setting() {
        let root = tempfile::tempdir().unwrap();
        write_unit(root.path(), units::ROOT_UNIT, HARDENED);
        write_unit(
            root.path(),
            units::DAEMON_UNIT,
            &HARDENED.replace("KillMode=process", "KillMode=mixed"),
        );
        let check = unit_check(root.path());
        assert_eq!(check.status, DoctorStatus::Warn);
        assert!(
            check
                .detail
                .contains("banger-root.service lacks SendSIGKILL=no"),
            "{}",
            check.detail
        );
        assert!(
            check
                .detail
                .contains("bangerd.service lacks KillMode=process"),
            "{}",
            check.detail
        );
        assert!(
            check
                .fix
                .as_deref()
                .unwrap()
                .contains("banger system install")
        );
    }
}
