//! Parsing of the kernel command line (`/proc/cmdline`) for initramfs mode.

use std::path::PathBuf;

use thiserror::Error;

/// Init program started in the root file system when `init=` is absent.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// File system type of the root when `rootfstype=` is absent.
pub const DEFAULT_ROOT_FSTYPE: &str = "ext4";

/// Root device as `root=` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// A device node such as `/dev/vda`.
    Device(PathBuf),
    /// `LABEL=x`: the ext4 volume label.
    Label(String),
    /// `UUID=x`: the ext4 file system UUID, stored in lowercase.
    Uuid(String),
}

impl std::fmt::Display for RootSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSpec::Device(path) => write!(f, "{}", path.display()),
            RootSpec::Label(label) => write!(f, "LABEL={label}"),
            RootSpec::Uuid(uuid) => write!(f, "UUID={uuid}"),
        }
    }
}

/// The settings initramfs mode takes from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `root=`; `None` when absent, which is an error unless probing.
    pub root: Option<RootSpec>,
    /// `rootfstype=`, default `ext4`.
    pub root_fstype: String,
    /// `rootflags=`: file-system-specific mount options, passed as mount data.
    pub root_flags: Option<String>,
    /// `ro` mounts the root read-only; `rw` (the default) read-write.
    pub read_only: bool,
    /// `init=`, default `/sbin/init`.
    pub init: String,
    /// `banger.probe=1`: print the probe line and power off.
    pub probe: bool,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            root: None,
            root_fstype: DEFAULT_ROOT_FSTYPE.to_owned(),
            root_flags: None,
            read_only: false,
            init: DEFAULT_INIT.to_owned(),
            probe: false,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error(
        "unsupported root={0:?}: use root=/dev/NAME, root=LABEL=<ext4 label> or root=UUID=<ext4 uuid>"
    )]
    UnsupportedRoot(String),
    #[error("invalid root=UUID={0:?}: expected 32 hex digits as 8-4-4-4-12")]
    InvalidUuid(String),
    #[error("empty value in {0}=: remove it or give a value")]
    EmptyValue(&'static str),
    #[error("invalid init={0:?}: the init program must be an absolute path")]
    RelativeInit(String),
    #[error("invalid banger.probe={0:?}: expected 0 or 1")]
    InvalidProbe(String),
}

/// Parses the kernel command line. As in the kernel, the last occurrence of
/// a parameter wins and parameters after `--` belong to init and are ignored.
pub fn parse_cmdline(cmdline: &str) -> Result<BootConfig, CmdlineError> {
    let mut config = BootConfig::default();
    for token in split_cmdline(cmdline) {
        if token == "--" {
            break;
        }
        let (key, value) = match token.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (token.as_str(), None),
        };
        match (key, value) {
            ("ro", None) => config.read_only = true,
            ("rw", None) => config.read_only = false,
            ("root", Some(value)) => config.root = Some(parse_root(value)?),
            ("rootfstype", Some(value)) => {
                config.root_fstype = non_empty("rootfstype", value)?.to_owned();
            }
            ("rootflags", Some(value)) => {
                config.root_flags = Some(non_empty("rootflags", value)?.to_owned());
            }
            ("init", Some(value)) => {
                let init = non_empty("init", value)?;
                if !init.starts_with('/') {
                    return Err(CmdlineError::RelativeInit(init.to_owned()));
                }
                config.init = init.to_owned();
            }
            ("banger.probe", Some(value)) => {
                config.probe = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(CmdlineError::InvalidProbe(value.to_owned())),
                };
            }
            _ => {}
        }
    }
    Ok(config)
}

fn non_empty<'a>(key: &'static str, value: &'a str) -> Result<&'a str, CmdlineError> {
    if value.is_empty() {
        Err(CmdlineError::EmptyValue(key))
    } else {
        Ok(value)
    }
}

fn parse_root(value: &str) -> Result<RootSpec, CmdlineError> {
    if let Some(label) = value.strip_prefix("LABEL=") {
        return Ok(RootSpec::Label(non_empty("root=LABEL", label)?.to_owned()));
    }
    if let Some(uuid) = value.strip_prefix("UUID=") {
        return parse_uuid(uuid).map(RootSpec::Uuid);
    }
    if value.len() > "/dev/".len() && value.starts_with("/dev/") {
        return Ok(RootSpec::Device(PathBuf::from(value)));
    }
    Err(CmdlineError::UnsupportedRoot(value.to_owned()))
}

/// Checks the 8-4-4-4-12 hex layout and returns the UUID in lowercase.
fn parse_uuid(value: &str) -> Result<String, CmdlineError> {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    let all_hex = value.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
    if lengths != [8, 4, 4, 4, 12] || !all_hex {
        return Err(CmdlineError::InvalidUuid(value.to_owned()));
    }
    Ok(value.to_ascii_lowercase())
}

/// Splits the command line at whitespace. Double quotes group words, as in
/// `param="a b"`, and are removed.
pub(crate) fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    tokens.push(std::mem::take(&mut current));
                    has_token = false;
                }
            }
            c => {
                current.push(c);
                has_token = true;
            }
        }
    }
    if has_token {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_parameters() {
        let config = parse_cmdline("console=ttyS0 quiet\n").unwrap();
        assert_eq!(config, BootConfig::default());
        assert_eq!(config.init, "/sbin/init");
        assert_eq!(config.root_fstype, "ext4");
        assert!(!config.read_only);
        assert!(!config.probe);
    }

    #[test]
    fn device_root_and_options() {
        let config = parse_cmdline(
            "console=ttyS0 root=/dev/vda ro rootfstype=xfs init=/lib/systemd/systemd",
        )
        .unwrap();
        assert_eq!(config.root, Some(RootSpec::Device("/dev/vda".into())));
        assert!(config.read_only);
        assert_eq!(config.root_fstype, "xfs");
        assert_eq!(config.init, "/lib/systemd/systemd");
    }

    #[test]
    fn label_and_uuid_roots() {
        let label = parse_cmdline("root=LABEL=rootfs").unwrap();
        assert_eq!(label.root, Some(RootSpec::Label("rootfs".into())));

        let uuid = parse_cmdline("root=UUID=0F3A2C4E-1B2D-4C5E-8F90-A1B2C3D4E5F6").unwrap();
        assert_eq!(
            uuid.root,
            Some(RootSpec::Uuid(
                "0f3a2c4e-1b2d-4c5e-8f90-a1b2c3d4e5f6".into()
            ))
        );
    }

    #[test]
    fn last_occurrence_wins() {
        let config = parse_cmdline("ro root=/dev/vda rw root=/dev/vdb").unwrap();
        assert_eq!(config.root, Some(RootSpec::Device("/dev/vdb".into())));
        assert!(!config.read_only);
    }

    #[test]
    fn probe_flag() {
        assert!(parse_cmdline("banger.probe=1").unwrap().probe);
        assert!(!parse_cmdline("banger.probe=0").unwrap().probe);
        assert_eq!(
            parse_cmdline("banger.probe=yes"),
            Err(CmdlineError::InvalidProbe("yes".into()))
        );
    }

    #[test]
    fn arguments_after_double_dash_are_ignored() {
        let config = parse_cmdline("root=/dev/vda -- root=/dev/vdb single").unwrap();
        assert_eq!(config.root, Some(RootSpec::Device("/dev/vda".into())));
    }

    #[test]
    fn quoted_values_keep_spaces() {
        let config = parse_cmdline(r#"root=LABEL="my root" rootflags="data=ordered""#).unwrap();
        assert_eq!(config.root, Some(RootSpec::Label("my root".into())));
        assert_eq!(config.root_flags.as_deref(), Some("data=ordered"));
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert_eq!(
            parse_cmdline("root=PARTUUID=abc"),
            Err(CmdlineError::UnsupportedRoot("PARTUUID=abc".into()))
        );
        assert_eq!(
            parse_cmdline("root=vda"),
            Err(CmdlineError::UnsupportedRoot("vda".into()))
        );
        assert_eq!(
            parse_cmdline("root=UUID=1234"),
            Err(CmdlineError::InvalidUuid("1234".into()))
        );
        assert_eq!(
            parse_cmdline("root=UUID=0f3a2c4e-1b2d-4c5e-8f90-a1b2c3d4e5fg"),
            Err(CmdlineError::InvalidUuid(
                "0f3a2c4e-1b2d-4c5e-8f90-a1b2c3d4e5fg".into()
            ))
        );
        assert_eq!(
            parse_cmdline("init=sbin/init"),
            Err(CmdlineError::RelativeInit("sbin/init".into()))
        );
        assert_eq!(
            parse_cmdline("init="),
            Err(CmdlineError::EmptyValue("init"))
        );
        assert_eq!(
            parse_cmdline("root=LABEL="),
            Err(CmdlineError::EmptyValue("root=LABEL"))
        );
    }

    #[test]
    fn unrelated_parameters_with_similar_names() {
        let config = parse_cmdline("rootwait rootdelay=3 initrd=/x noinit=/y").unwrap();
        assert_eq!(config, BootConfig::default());
    }
}
