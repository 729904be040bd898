//! The IPv4 address pool of the VM network.
//!
//! The first host address of the pool is the gateway (the bridge's address);
//! VMs lease addresses from the second host address up to the last address
//! before the broadcast address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Pool used when the configuration names none.
pub const DEFAULT_POOL: &str = "172.30.0.0/24";

/// Shortest prefix a pool may have. A /16 already contains 65,533 VM
/// addresses.
pub const MIN_PREFIX_LEN: u8 = 16;

/// Longest prefix a pool may have: a /29 leaves 5 VM addresses next to the
/// network, gateway and broadcast addresses.
pub const MAX_PREFIX_LEN: u8 = 29;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PoolError {
    #[error("invalid pool {value:?}: expected an IPv4 network such as {DEFAULT_POOL}")]
    Syntax { value: String },
    #[error(
        "invalid pool {value:?}: the prefix length must be between {MIN_PREFIX_LEN} and {MAX_PREFIX_LEN}"
    )]
    PrefixLength { value: String },
    #[error(
        "invalid pool {value:?}: host bits are set; use the network address {network}/{prefix_len}"
    )]
    HostBits {
        value: String,
        network: Ipv4Addr,
        prefix_len: u8,
    },
    #[error("address {address} is not a VM address of pool {pool}; use one of {first}..{last}")]
    NotLeasable {
        address: Ipv4Addr,
        pool: Pool,
        first: Ipv4Addr,
        last: Ipv4Addr,
    },
}

/// An IPv4 network such as `172.30.0.0/24`, with its network address stored
/// without host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Pool {
    /// Builds a pool from its network address and prefix length, with the
    /// same checks as parsing.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, PoolError> {
        format!("{network}/{prefix_len}").parse()
    }

    /// Network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Netmask, e.g. 255.255.255.0 for a /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix_len))
    }

    /// Broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_bits(self.prefix_len))
    }

    /// Gateway: the first host address, which the bridge carries.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth_host(1).unwrap_or(self.network)
    }

    /// Returns true when `address` lies inside the network, including the
    /// network, gateway and broadcast addresses.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask_bits(self.prefix_len) == u32::from(self.network)
    }

    /// Returns the host address at offset `n` from the network address:
    /// `nth_host(1)` is the gateway. Returns `None` for 0, for the broadcast
    /// offset and beyond.
    pub fn nth_host(&self, n: u32) -> Option<Ipv4Addr> {
        let host_count = !mask_bits(self.prefix_len);
        if n == 0 || n >= host_count {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// First address leased to a VM.
    pub fn first_leasable(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }

    /// Last address leased to a VM (the one before the broadcast address).
    pub fn last_leasable(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()) - 1)
    }

    /// Number of addresses VMs can lease.
    pub fn leasable_count(&self) -> u32 {
        u32::from(self.last_leasable()) - u32::from(self.first_leasable()) + 1
    }

    /// Returns true when `address` may be given to a VM: inside the network
    /// and neither the network, gateway nor broadcast address.
    pub fn is_leasable(&self, address: Ipv4Addr) -> bool {
        let value = u32::from(address);
        self.contains(address)
            && value >= u32::from(self.first_leasable())
            && value <= u32::from(self.last_leasable())
    }

    /// Checks that `address` may be given to a VM, with an error that names
    /// the leasable range.
    pub fn check_leasable(&self, address: Ipv4Addr) -> Result<(), PoolError> {
        if self.is_leasable(address) {
            return Ok(());
        }
        Err(PoolError::NotLeasable {
            address,
            pool: *self,
            first: self.first_leasable(),
            last: self.last_leasable(),
        })
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            network: Ipv4Addr::new(172, 30, 0, 0),
            prefix_len: 24,
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Pool {
    type Err = PoolError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let syntax = || PoolError::Syntax {
            value: value.to_owned(),
        };
        let (address, prefix) = value.split_once('/').ok_or_else(syntax)?;
        let address: Ipv4Addr = address.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix_len: u8 = prefix.parse().map_err(|_| PoolError::PrefixLength {
            value: value.to_owned(),
        })?;
        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&prefix_len) {
            return Err(PoolError::PrefixLength {
                value: value.to_owned(),
            });
        }
        let network = Ipv4Addr::from(u32::from(address) & mask_bits(prefix_len));
        if network != address {
            return Err(PoolError::HostBits {
                value: value.to_owned(),
                network,
                prefix_len,
            });
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Derives a VM's MAC address from its IPv4 address: `02:42` followed by
/// the four address bytes, so 172.30.0.5 becomes `02:42:ac:1e:00:05`. The
/// first byte 0x02 marks a locally administered unicast address.
pub fn mac_for_ip(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x42, a, b, c, d]
}

/// Formats a MAC address as lowercase `xx:xx:xx:xx:xx:xx`, the form QEMU's
/// `mac=` and Firecracker's `guest_mac` take.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mask_bits(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        len => u32::MAX << (32 - u32::from(len.min(32))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(text: &str) -> Pool {
        text.parse().unwrap()
    }

    #[test]
    fn default_pool_addresses() {
        let pool = Pool::default();
        assert_eq!(pool.to_string(), DEFAULT_POOL);
        assert_eq!(pool.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(pool.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(pool.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        assert_eq!(pool.first_leasable(), Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(pool.last_leasable(), Ipv4Addr::new(172, 30, 0, 254));
        assert_eq!(pool.leasable_count(), 253);
    }

    #[test]
    fn parse_rejects_bad_syntax() {
        for text in [
            "",
            "172.30.0.0",
            "172.30.0/24",
            "172.30.0.0/",
            "172.30.0.0/+24",
            "172.30.0.0/24/1",
            "::1/64",
            "host/24",
        ] {
            assert!(
                matches!(text.parse::<Pool>(), Err(PoolError::Syntax { .. })),
                "{text:?} should be a syntax error"
            );
        }
    }

    #[test]
    fn parse_rejects_prefix_out_of_range() {
        for text in [
            "10.0.0.0/8",
            "172.30.0.0/30",
            "172.30.0.0/32",
            "172.30.0.0/999",
        ] {
            assert!(
                matches!(text.parse::<Pool>(), Err(PoolError::PrefixLength { .. })),
                "{text:?} should be a prefix length error"
            );
        }
    }

    #[test]
    fn parse_rejects_host_bits() {
        let error = "172.30.0.1/24".parse::<Pool>().unwrap_err();
        assert_eq!(
            error,
            PoolError::HostBits {
                value: "172.30.0.1/24".into(),
                network: Ipv4Addr::new(172, 30, 0, 0),
                prefix_len: 24,
            }
        );
        assert!(
            error
                .to_string()
                .contains("use the network address 172.30.0.0/24")
        );
    }

    #[test]
    fn contains_covers_whole_network() {
        let pool = pool("10.8.0.0/16");
        assert!(pool.contains(Ipv4Addr::new(10, 8, 0, 0)));
        assert!(pool.contains(Ipv4Addr::new(10, 8, 255, 255)));
        assert!(!pool.contains(Ipv4Addr::new(10, 9, 0, 0)));
        assert!(!pool.contains(Ipv4Addr::new(10, 7, 255, 255)));
    }

    #[test]
    fn nth_host_bounds() {
        let pool = pool("192.0.2.0/29");
        assert_eq!(pool.nth_host(0), None);
        assert_eq!(pool.nth_host(1), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(pool.nth_host(6), Some(Ipv4Addr::new(192, 0, 2, 6)));
        assert_eq!(pool.nth_host(7), None, "offset 7 is the broadcast address");
        assert_eq!(pool.nth_host(u32::MAX), None);
        assert_eq!(pool.leasable_count(), 5);
    }

    #[test]
    fn leasable_excludes_reserved_addresses() {
        let pool = Pool::default();
        assert!(!pool.is_leasable(Ipv4Addr::new(172, 30, 0, 0)));
        assert!(!pool.is_leasable(Ipv4Addr::new(172, 30, 0, 1)));
        assert!(pool.is_leasable(Ipv4Addr::new(172, 30, 0, 2)));
        assert!(pool.is_leasable(Ipv4Addr::new(172, 30, 0, 254)));
        assert!(!pool.is_leasable(Ipv4Addr::new(172, 30, 0, 255)));
        assert!(!pool.is_leasable(Ipv4Addr::new(172, 30, 1, 5)));
    }

    #[test]
    fn check_leasable_names_range() {
        let error = Pool::default()
            .check_leasable(Ipv4Addr::new(10, 0, 0, 5))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "address 10.0.0.5 is not a VM address of pool 172.30.0.0/24; use one of 172.30.0.2..172.30.0.254"
        );
    }

    #[test]
    fn mac_from_ip() {
        let mac = mac_for_ip(Ipv4Addr::new(172, 30, 0, 5));
        assert_eq!(format_mac(mac), "02:42:ac:1e:00:05");
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn serde_round_trip() {
        let pool = pool("10.1.0.0/20");
        let json = serde_json::to_string(&pool).unwrap();
        assert_eq!(json, "\"10.1.0.0/20\"");
        assert_eq!(serde_json::from_str::<Pool>(&json).unwrap(), pool);
        assert!(serde_json::from_str::<Pool>("\"10.1.0.1/20\"").is_err());
    }
}
