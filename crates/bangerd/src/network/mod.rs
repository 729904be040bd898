//! Guest networking: the `[network]` settings, the choice between running
//! the privileged operations in this process (as root) and sending them to
//! `banger-root`, and the per-VM steps in [`guest`].
//!
//! When neither is possible the daemon still boots VMs, without a network
//! device, and says why once in the progress output.

mod guest;
mod startup;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use banger_net::command::SystemRunner;
use banger_net::dns::{DEFAULT_DNS_ADDR, DnsRecords};
use banger_net::helper::{DEFAULT_SOCKET_PATH, Executor, HelperClient, HelperConfig, NetBackend};
use banger_net::names::DEFAULT_BRIDGE;
use banger_net::pool::Pool;
use serde::Deserialize;

pub use guest::GuestNet;
pub use startup::startup;

/// `[network]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Give VMs a network device; false boots them without one.
    pub enabled: bool,
    /// Bridge the VMs' taps join; its address is the pool's gateway.
    pub bridge: String,
    /// IPv4 network of the guests, e.g. `172.30.0.0/24`.
    pub pool: Pool,
    /// UDP address of the DNS server for `NAME.vm`.
    pub dns_addr: SocketAddr,
    /// Interface NAT masquerades out of, when the daemon runs the network
    /// operations itself; the default route's interface when unset.
    pub uplink: Option<String>,
    /// Resolver written into guests' `/etc/resolv.conf`; the host's first
    /// nameserver outside 127.0.0.0/8 when unset (a loopback resolver on the
    /// host is not reachable from a guest), none when there is no such one.
    pub guest_dns: Option<std::net::Ipv4Addr>,
}

impl NetworkConfig {
    /// The resolver guests get, if any.
    pub fn guest_resolver(&self) -> Option<std::net::Ipv4Addr> {
        self.guest_dns.or_else(|| {
            let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
            first_remote_nameserver(&text)
        })
    }
}

/// The first `nameserver` line of a resolv.conf whose IPv4 address is not
/// loopback.
pub fn first_remote_nameserver(resolv_conf: &str) -> Option<std::net::Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::Ipv4Addr>().ok())
        .find(|addr| !addr.is_loopback())
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bridge: DEFAULT_BRIDGE.to_owned(),
            pool: Pool::default(),
            dns_addr: DEFAULT_DNS_ADDR,
            uplink: None,
            guest_dns: None,
        }
    }
}

/// How the daemon changes host networking.
pub enum Mode {
    /// The daemon runs as root and does it itself, or banger-root does it.
    Available(Arc<NetBackend>),
    /// VMs boot without a network device, for this reason.
    Unavailable(String),
}

/// The daemon's runtime network state: the backend chosen at startup and
/// the DNS records of running VMs.
#[derive(Default)]
pub struct NetState {
    mode: OnceLock<Mode>,
    /// Set once the reason for booting without a network device was shown.
    explained: AtomicBool,
    pub records: DnsRecords,
    /// Address the DNS server listens on, once it does.
    pub dns_addr: OnceLock<SocketAddr>,
}

impl NetState {
    /// The backend, or why there is none. Before startup chose one, the
    /// network counts as unavailable.
    pub fn backend(&self) -> Result<Arc<NetBackend>, String> {
        match self.mode.get() {
            Some(Mode::Available(backend)) => Ok(backend.clone()),
            Some(Mode::Unavailable(reason)) => Err(reason.clone()),
            None => Err("the daemon has not set up networking yet".to_owned()),
        }
    }

    /// `local`, `helper` or `none`.
    pub fn mode_name(&self) -> &'static str {
        match self.mode.get() {
            Some(Mode::Available(backend)) => match backend.as_ref() {
                NetBackend::Local(_) => "local",
                NetBackend::Helper(_) => "helper",
            },
            _ => "none",
        }
    }

    /// True the first time it is called, so a reason is shown once per daemon.
    pub fn first_explanation(&self) -> bool {
        !self.explained.swap(true, Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        if self.mode.set(mode).is_err() {
            tracing::warn!("the network mode was already chosen; keeping the first choice");
        }
    }
}

/// Chooses how to change host networking: in this process when it runs as
/// root and no helper socket exists, else through the helper socket when it
/// exists, else not at all.
pub fn choose_mode(config: &NetworkConfig, helper_socket: Option<&Path>, euid: u32) -> Mode {
    if !config.enabled {
        return Mode::Unavailable(
            "networking is off in config.toml ([network] enabled = false)".to_owned(),
        );
    }
    let socket: PathBuf =
        helper_socket.map_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH), Path::to_path_buf);
    let socket_exists = std::fs::symlink_metadata(&socket).is_ok();
    if euid == 0 && !socket_exists {
        let helper = HelperConfig {
            owner_uid: euid,
            bridge: config.bridge.clone(),
            pool: config.pool,
            uplink: config.uplink.clone(),
        };
        return match Executor::new(helper, Arc::new(SystemRunner)) {
            Ok(executor) => Mode::Available(Arc::new(NetBackend::Local(executor))),
            Err(error) => Mode::Unavailable(format!(
                "the [network] settings are invalid: {}",
                banger_net::error_chain(&error)
            )),
        };
    }
    if socket_exists {
        return Mode::Available(Arc::new(NetBackend::Helper(HelperClient::new(socket))));
    }
    Mode::Unavailable(format!(
        "bangerd does not run as root and banger-root's socket {} does not exist; \
         install the helper with `sudo banger system install --owner $USER`",
        socket.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_resolver_skips_loopback() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.53\n";
        assert_eq!(
            first_remote_nameserver(conf),
            Some("192.0.2.53".parse().unwrap())
        );
        assert_eq!(first_remote_nameserver("nameserver 127.0.0.1\n"), None);
        assert_eq!(first_remote_nameserver(""), None);
    }

    fn reason(mode: Mode) -> String {
        match mode {
            Mode::Unavailable(reason) => reason,
            Mode::Available(_) => panic!("expected no network"),
        }
    }

    #[test]
    fn disabled_network_is_unavailable() {
        let config = NetworkConfig {
            enabled: false,
            ..NetworkConfig::default()
        };
        assert!(reason(choose_mode(&config, None, 0)).contains("enabled = false"));
    }

    #[test]
    fn user_without_helper_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("missing.sock");
        let text = reason(choose_mode(&NetworkConfig::default(), Some(&socket), 1000));
        assert!(text.contains("missing.sock"), "{text}");
        assert!(text.contains("banger system install"), "{text}");
    }

    #[test]
    fn root_without_helper_runs_locally() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("missing.sock");
        let mode = choose_mode(&NetworkConfig::default(), Some(&socket), 0);
        assert!(matches!(mode, Mode::Available(b) if matches!(*b, NetBackend::Local(_))));
    }

    #[test]
    fn existing_socket_selects_helper() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("root.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for euid in [0, 1000] {
            let mode = choose_mode(&NetworkConfig::default(), Some(&socket), euid);
            assert!(matches!(mode, Mode::Available(b) if matches!(*b, NetBackend::Helper(_))));
        }
    }

    #[test]
    fn config_section_parses() {
        let config: NetworkConfig = toml::from_str(
            "bridge = \"banger1\"\npool = \"10.9.0.0/24\"\ndns_addr = \"127.0.0.1:5353\"\nenabled = false",
        )
        .unwrap();
        assert_eq!(config.bridge, "banger1");
        assert_eq!(config.pool.to_string(), "10.9.0.0/24");
        assert_eq!(config.dns_addr.port(), 5353);
        assert!(!config.enabled);
    }

    #[test]
    fn config_rejects_bad_pool() {
        let error = toml::from_str::<NetworkConfig>("pool = \"10.9.0.1/24\"").unwrap_err();
        assert!(error.to_string().contains("host bits"), "{error}");
    }
}
