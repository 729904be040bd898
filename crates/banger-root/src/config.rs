//! The helper's configuration file, written at install time:
//!
//! ```toml
//! owner_uid = 1000                  # the user whose bangerd may connect
//! # bridge = "banger0"
//! # pool = "172.30.0.0/24"
//! # uplink = "eth0"                 # default: the default route's interface
//! # socket = "/run/banger/root.sock"
//! ```

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use banger_net::helper::{DEFAULT_SOCKET_PATH, HelperConfig};
use banger_net::names::{DEFAULT_BRIDGE, NameError};
use banger_net::pool::Pool;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "reading the configuration file {path} failed; create it with `owner_uid = <uid of the banger user>`"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the configuration file {path} is invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "the configuration file {path} is owned by uid {uid} or writable by group or others (mode {mode:o}); \
         it decides who may change the host's network, so make it root-owned and mode 0644"
    )]
    Insecure { path: PathBuf, uid: u32, mode: u32 },
    #[error("the configuration file {path} is invalid")]
    Names {
        path: PathBuf,
        #[source]
        source: NameError,
    },
    #[error(
        "the configuration file {path} is invalid: socket must be an absolute path, not {socket:?}"
    )]
    RelativeSocket { path: PathBuf, socket: PathBuf },
}

/// Contents of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    pub owner_uid: u32,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub uplink: Option<String>,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_owned()
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET_PATH)
}

impl RootConfig {
    /// Reads and checks the file at `path`. It must be owned by root and
    /// not writable by group or others.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        if metadata.uid() != 0 || metadata.mode() & 0o022 != 0 {
            return Err(ConfigError::Insecure {
                path: path.to_owned(),
                uid: metadata.uid(),
                mode: metadata.mode() & 0o7777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(path, &text)
    }

    /// Parses and checks the text of the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: RootConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config
            .helper_config()
            .validate()
            .map_err(|source| ConfigError::Names {
                path: path.to_owned(),
                source,
            })?;
        if !config.socket.is_absolute() {
            return Err(ConfigError::RelativeSocket {
                path: path.to_owned(),
                socket: config.socket,
            });
        }
        Ok(config)
    }

    /// Returns the settings the operations need.
    pub fn helper_config(&self) -> HelperConfig {
        HelperConfig {
            owner_uid: self.owner_uid,
            bridge: self.bridge.clone(),
            pool: self.pool,
            uplink: self.uplink.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn parse(text: &str) -> Result<RootConfig, ConfigError> {
        RootConfig::parse(Path::new("/etc/banger/root.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse("owner_uid = 1000").unwrap();
        assert_eq!(config.owner_uid, 1000);
        assert_eq!(config.bridge, "banger0");
        assert_eq!(config.pool, Pool::default());
        assert_eq!(config.uplink, None);
        assert_eq!(config.socket, Path::new("/run/banger/root.sock"));
    }

    #[test]
    fn all_fields() {
        let config = parse(
            "owner_uid = 1001\nbridge = \"banger-test\"\npool = \"10.77.0.0/16\"\nuplink = \"eth1\"\nsocket = \"/run/x/root.sock\"",
        )
        .unwrap();
        assert_eq!(config.helper_config().pool.to_string(), "10.77.0.0/16");
        assert_eq!(config.uplink.as_deref(), Some("eth1"));
    }

    #[test]
    fn invalid_files_are_rejected() {
        for (text, expected) in [
            ("", "missing field `owner_uid`"),
            ("owner_uid = -1", "invalid value"),
            ("owner_uid = 1\nowner = 2", "unknown field `owner`"),
            ("owner_uid = 1\npool = \"10.0.0.1/24\"", "host bits are set"),
            (
                "owner_uid = 1\nbridge = \"br0\"",
                "must start with \"banger\"",
            ),
            (
                "owner_uid = 1\nuplink = \"eth0 x\"",
                "invalid uplink interface name",
            ),
            (
                "owner_uid = 1\nsocket = \"root.sock\"",
                "socket must be an absolute path",
            ),
        ] {
            let error = parse(text).unwrap_err();
            let message = banger_net::error_chain(&error);
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(
                message.starts_with("the configuration file /etc/banger/root.toml is invalid"),
                "{message}"
            );
        }
    }

    #[test]
    fn writable_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.toml");
        std::fs::write(&path, "owner_uid = 1000\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = RootConfig::load(&path).unwrap_err();
        assert!(matches!(error, ConfigError::Insecure { .. }), "{error}");
        assert!(error.to_string().contains("mode 666"), "{error}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let owned_by_root = nix::unistd::geteuid().is_root();
        assert_eq!(RootConfig::load(&path).is_ok(), owned_by_root);
    }

    #[test]
    fn missing_file_names_path() {
        let error = RootConfig::load(Path::new("/nonexistent/banger/root.toml")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/banger/root.toml"),
            "{error}"
        );
    }
}
