//! `config.toml`: the user's defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Accelerator QEMU runs guest code with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    /// KVM when a boot probe shows that it can boot a guest, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// VMM backend of new VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmSetting {
    /// Firecracker when its binary is usable and a boot probe shows that KVM
    /// can boot a guest, else QEMU.
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl VmmSetting {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(VmmSetting::Auto),
            "firecracker" => Some(VmmSetting::Firecracker),
            "qemu" => Some(VmmSetting::Qemu),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    /// Work disk size with a unit, e.g. `8G`.
    pub disk_size: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub default_image: String,
    pub default_kernel: String,
    pub vmm: VmmSetting,
    /// QEMU binary; `qemu-system-x86_64` from `PATH` when unset.
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary; `firecracker` from `PATH` when unset.
    pub firecracker_bin: Option<PathBuf>,
    pub accel: AccelSetting,
    /// The static guest agent; found next to `bangerd` when unset.
    pub agent_bin: Option<PathBuf>,
    /// Seconds to wait for a booting guest's agent to reply.
    pub boot_timeout_secs: u64,
    /// Seconds a guest gets to power off by itself before the VMM is stopped.
    pub stop_timeout_secs: u64,
    pub vm_defaults: VmDefaults,
    /// Socket of the privileged helper banger-root.
    pub helper_socket: Option<PathBuf>,
    /// banger's SSH private key; `$XDG_STATE_HOME/banger/ssh/id_ed25519` when unset.
    pub ssh_key_path: Option<PathBuf>,
    pub network: crate::network::NetworkConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_image: banger_model::DEFAULT_IMAGE.to_string(),
            default_kernel: banger_model::DEFAULT_KERNEL.to_string(),
            vmm: VmmSetting::Auto,
            qemu_bin: None,
            firecracker_bin: None,
            accel: AccelSetting::Auto,
            agent_bin: None,
            // Software emulation boots a systemd guest in about 15 s on a
            // 2-core machine; the default leaves room for a loaded host.
            boot_timeout_secs: 180,
            stop_timeout_secs: 30,
            vm_defaults: VmDefaults::default(),
            helper_socket: None,
            ssh_key_path: None,
            network: crate::network::NetworkConfig::default(),
        }
    }
}

impl Config {
    /// Reads the config file; a missing file means all defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let config: Self = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Checks the values that parse but cannot work, so they stop the daemon
    /// at startup instead of failing every create later.
    fn validate(&self) -> anyhow::Result<()> {
        let defaults = &self.vm_defaults;
        if let Some(text) = &defaults.disk_size {
            banger_model::parse_size(text)
                .with_context(|| format!("[vm_defaults] disk_size = {text:?}"))?;
        }
        if defaults.vcpus == Some(0) {
            anyhow::bail!("[vm_defaults] vcpus = 0: use at least 1");
        }
        if let Some(memory) = defaults.memory_mib
            && memory < crate::vms::MIN_MEMORY_MIB
        {
            anyhow::bail!(
                "[vm_defaults] memory_mib = {memory}: use at least {}",
                crate::vms::MIN_MEMORY_MIB
            );
        }
        if self.boot_timeout_secs == 0 {
            anyhow::bail!("boot_timeout_secs = 0: use at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_fields() {
        let config: Config = toml::from_str(
            r#"
            default_image = "img"
            accel = "tcg"
            boot_timeout_secs = 60
            [vm_defaults]
            vcpus = 2
            disk_size = "4G"
            "#,
        )
        .unwrap();
        assert_eq!(config.default_image, "img");
        assert_eq!(config.default_kernel, banger_model::DEFAULT_KERNEL);
        assert_eq!(config.accel, AccelSetting::Tcg);
        assert_eq!(config.boot_timeout_secs, 60);
        assert_eq!(config.vm_defaults.vcpus, Some(2));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("defualt_image = \"x\"").unwrap_err();
        assert!(err.to_string().contains("defualt_image"), "{err}");
    }

    #[test]
    fn unusable_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, expected) in [
            (
                "[vm_defaults]\ndisk_size = \"1.5G\"\n",
                "disk_size = \"1.5G\"",
            ),
            ("[vm_defaults]\nvcpus = 0\n", "vcpus = 0"),
            ("[vm_defaults]\nmemory_mib = 16\n", "memory_mib = 16"),
            ("boot_timeout_secs = 0\n", "boot_timeout_secs = 0"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = format!("{:#}", Config::load(&path).unwrap_err());
            assert!(error.contains("invalid config file"), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
        std::fs::write(&path, "[vm_defaults]\ndisk_size = \"16G\"\nvcpus = 1\n").unwrap();
        assert!(Config::load(&path).is_ok());
    }

    #[test]
    fn missing_file_means_defaults() {
        let config = Config::load(Path::new("/nonexistent/banger/config.toml")).unwrap();
        assert_eq!(config.accel, AccelSetting::Auto);
    }
}
