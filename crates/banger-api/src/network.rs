//! Answers of the networking routes:
//!
//! | method and path           | answer              |
//! |---------------------------|---------------------|
//! | `GET /network`            | [`NetworkStatus`]   |
//! | `GET /vms/{name}/ssh`     | [`SshTarget`]       |
//! | `GET /vms/{name}/ports`   | `Vec<ListeningPort>`|

use serde::{Deserialize, Serialize};

/// One VM's leased address and tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNetwork {
    pub vm_id: String,
    pub name: String,
    /// Guest IPv4 address, e.g. `172.30.0.2`.
    pub ip: String,
    pub prefix_len: u8,
    pub gateway: String,
    pub tap: String,
    /// Whether the guest's traffic is masqueraded out of the host's uplink.
    pub nat: bool,
    /// `NAME.vm`, answered by the daemon's DNS server while the VM runs.
    pub dns_name: String,
}

/// The daemon's network setup and every lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `[network] enabled` in config.toml.
    pub enabled: bool,
    /// `local` (the daemon runs as root), `helper` (banger-root) or `none`.
    pub mode: String,
    /// Why VMs boot without a network device, when `mode` is `none`.
    pub unavailable_reason: Option<String>,
    pub bridge: String,
    pub pool: String,
    /// Address the DNS server listens on, when it is listening.
    pub dns_addr: Option<String>,
    pub vms: Vec<VmNetwork>,
}

/// What `banger vm ssh` needs to connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SshTarget {
    pub name: String,
    pub ip: String,
    pub user: String,
    /// Private key banger manages.
    pub identity_file: String,
    /// banger's known_hosts file with the VM's pinned host key.
    pub known_hosts: String,
}

/// A listening TCP or UDP socket in a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPort {
    /// `tcp` or `udp` (IPv4 and IPv6 alike).
    pub proto: String,
    /// Local address as the guest's kernel reports it, e.g. `0.0.0.0` or `::`.
    pub address: String,
    pub port: u16,
    /// Name of the process that owns the socket, when it could be found.
    pub process: Option<String>,
}
