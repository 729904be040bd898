//! The guest network settings banger passes on the kernel command line:
//! `banger.ip=A.B.C.D/NN`, `banger.gw=A.B.C.D`, `banger.dns=A.B.C.D`,
//! `banger.hostname=NAME` and `banger.iface=NAME`.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::initramfs::cmdline::split_cmdline;

/// Maximum host name length in bytes (`HOST_NAME_MAX` on Linux).
pub const MAX_HOSTNAME_LEN: usize = 64;

/// Maximum interface name length in bytes (`IFNAMSIZ` minus the NUL).
pub const MAX_INTERFACE_LEN: usize = 15;

/// An IPv4 address with its prefix length, as in `172.30.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            len => u32::MAX << (32 - u32::from(len)),
        }
    }

    /// Returns true when `other` is in the same network.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        u32::from(other) & self.mask() == u32::from(self.address) & self.mask()
    }

    /// Broadcast address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Network settings to apply. Every field is optional, and an empty value
/// means the kernel command line has no banger network parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// `banger.ip`: address and prefix of the guest's interface.
    pub address: Option<Ipv4Cidr>,
    /// `banger.gw`: default gateway, inside the `banger.ip` network.
    pub gateway: Option<Ipv4Addr>,
    /// `banger.dns`: the name server written to `/etc/resolv.conf`.
    pub dns: Option<Ipv4Addr>,
    /// `banger.hostname`.
    pub hostname: Option<String>,
    /// `banger.iface`: the interface to configure; the first non-loopback
    /// Ethernet interface when absent.
    pub interface: Option<String>,
}

impl NetConfig {
    pub fn is_empty(&self) -> bool {
        *self == NetConfig::default()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetCmdlineError {
    #[error("empty value in {0}=: remove it or give a value")]
    EmptyValue(&'static str),
    #[error(
        "invalid banger.ip={0:?}: expected an IPv4 address with prefix length, such as 172.30.0.5/24"
    )]
    InvalidAddress(String),
    #[error("invalid {key}={value:?}: expected an IPv4 address such as 172.30.0.1")]
    InvalidIpv4 { key: &'static str, value: String },
    #[error(
        "banger.gw={gateway} is outside the network of banger.ip={address}; use an address of that network"
    )]
    GatewayOutsideNetwork {
        gateway: Ipv4Addr,
        address: Ipv4Cidr,
    },
    #[error(
        "banger.gw={0} needs banger.ip: the route goes through the interface that banger.ip configures"
    )]
    GatewayWithoutAddress(Ipv4Addr),
    #[error("invalid banger.hostname={value:?}: {reason}")]
    InvalidHostname { value: String, reason: &'static str },
    #[error("invalid banger.iface={0:?}: expected 1 to 15 bytes without '/', ':' or whitespace")]
    InvalidInterface(String),
}

/// Parses the banger network parameters of a kernel command line. Other
/// parameters are ignored. As in the kernel, the last occurrence of a
/// parameter wins and parameters after `--` belong to init.
pub fn parse_net_cmdline(cmdline: &str) -> Result<NetConfig, NetCmdlineError> {
    let mut config = NetConfig::default();
    for token in split_cmdline(cmdline) {
        if token == "--" {
            break;
        }
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        match key {
            "banger.ip" => config.address = Some(parse_cidr(non_empty("banger.ip", value)?)?),
            "banger.gw" => config.gateway = Some(parse_ipv4("banger.gw", value)?),
            "banger.dns" => config.dns = Some(parse_ipv4("banger.dns", value)?),
            "banger.hostname" => config.hostname = Some(parse_hostname(value)?),
            "banger.iface" => config.interface = Some(parse_interface(value)?),
            _ => {}
        }
    }
    if let Some(gateway) = config.gateway {
        let Some(address) = config.address else {
            return Err(NetCmdlineError::GatewayWithoutAddress(gateway));
        };
        if !address.contains(gateway) || gateway == address.address {
            return Err(NetCmdlineError::GatewayOutsideNetwork { gateway, address });
        }
    }
    Ok(config)
}

fn non_empty<'a>(key: &'static str, value: &'a str) -> Result<&'a str, NetCmdlineError> {
    if value.is_empty() {
        Err(NetCmdlineError::EmptyValue(key))
    } else {
        Ok(value)
    }
}

fn parse_cidr(value: &str) -> Result<Ipv4Cidr, NetCmdlineError> {
    let invalid = || NetCmdlineError::InvalidAddress(value.to_owned());
    let (address, prefix) = value.split_once('/').ok_or_else(invalid)?;
    let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let prefix_len: u8 = prefix.parse().map_err(|_| invalid())?;
    if !(1..=32).contains(&prefix_len) {
        return Err(invalid());
    }
    Ok(Ipv4Cidr {
        address,
        prefix_len,
    })
}

fn parse_ipv4(key: &'static str, value: &str) -> Result<Ipv4Addr, NetCmdlineError> {
    non_empty(key, value)?
        .parse()
        .map_err(|_| NetCmdlineError::InvalidIpv4 {
            key,
            value: value.to_owned(),
        })
}

/// Accepts RFC 1123 host names: dot-separated labels of 1 to 63 ASCII
/// letters, digits and hyphens that neither start nor end with a hyphen.
fn parse_hostname(value: &str) -> Result<String, NetCmdlineError> {
    let invalid = |reason| NetCmdlineError::InvalidHostname {
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(NetCmdlineError::EmptyValue("banger.hostname"));
    }
    if value.len() > MAX_HOSTNAME_LEN {
        return Err(invalid("longer than 64 bytes"));
    }
    for label in value.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each dot-separated label needs 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "only ASCII letters, digits, hyphens and dots are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot start or end with a hyphen"));
        }
    }
    Ok(value.to_owned())
}

fn parse_interface(value: &str) -> Result<String, NetCmdlineError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_INTERFACE_LEN
        && value != "."
        && value != ".."
        && !value
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if valid {
        Ok(value.to_owned())
    } else {
        Err(NetCmdlineError::InvalidInterface(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        parse_cidr(text).unwrap()
    }

    #[test]
    fn full_command_line() {
        let config = parse_net_cmdline(
            "console=ttyS0 root=LABEL=bangerroot banger.ip=172.30.0.5/24 banger.gw=172.30.0.1 \
             banger.dns=172.30.0.1 banger.hostname=web banger.iface=eth1 quiet",
        )
        .unwrap();
        assert_eq!(
            config,
            NetConfig {
                address: Some(cidr("172.30.0.5/24")),
                gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
                dns: Some(Ipv4Addr::new(172, 30, 0, 1)),
                hostname: Some("web".into()),
                interface: Some("eth1".into()),
            }
        );
        assert!(!config.is_empty());
    }

    #[test]
    fn no_banger_parameters_is_empty() {
        let config = parse_net_cmdline("console=ttyS0 root=/dev/vda rw ip=dhcp").unwrap();
        assert!(config.is_empty());
    }

    #[test]
    fn last_value_wins_and_init_arguments_are_ignored() {
        let config = parse_net_cmdline(
            "banger.ip=10.0.0.2/8 banger.ip=172.30.0.9/24 -- banger.hostname=-bad banger.ip=x",
        )
        .unwrap();
        assert_eq!(config.address, Some(cidr("172.30.0.9/24")));
        assert_eq!(config.hostname, None);
    }

    #[test]
    fn hostname_alone_is_allowed() {
        let config = parse_net_cmdline("banger.hostname=db-1.vm").unwrap();
        assert_eq!(config.hostname.as_deref(), Some("db-1.vm"));
        assert_eq!(config.address, None);
    }

    #[test]
    fn invalid_addresses() {
        for value in [
            "172.30.0.5",
            "172.30.0.5/",
            "172.30.0.5/33",
            "172.30.0.5/0",
            "172.30.0/24",
            "x/24",
            "172.30.0.5/+4",
        ] {
            assert_eq!(
                parse_net_cmdline(&format!("banger.ip={value}")),
                Err(NetCmdlineError::InvalidAddress(value.into())),
                "{value}"
            );
        }
        assert_eq!(
            parse_net_cmdline("banger.ip="),
            Err(NetCmdlineError::EmptyValue("banger.ip"))
        );
        assert_eq!(
            parse_net_cmdline("banger.ip=172.30.0.5/24 banger.dns=8.8"),
            Err(NetCmdlineError::InvalidIpv4 {
                key: "banger.dns",
                value: "8.8".into()
            })
        );
    }

    #[test]
    fn gateway_must_be_in_network() {
        assert_eq!(
            parse_net_cmdline("banger.ip=172.30.0.5/24 banger.gw=172.30.1.1"),
            Err(NetCmdlineError::GatewayOutsideNetwork {
                gateway: Ipv4Addr::new(172, 30, 1, 1),
                address: cidr("172.30.0.5/24"),
            })
        );
        assert!(matches!(
            parse_net_cmdline("banger.ip=172.30.0.5/24 banger.gw=172.30.0.5"),
            Err(NetCmdlineError::GatewayOutsideNetwork { .. })
        ));
        assert_eq!(
            parse_net_cmdline("banger.gw=172.30.0.1"),
            Err(NetCmdlineError::GatewayWithoutAddress(Ipv4Addr::new(
                172, 30, 0, 1
            )))
        );
        let message = parse_net_cmdline("banger.ip=172.30.0.5/24 banger.gw=10.0.0.1")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "banger.gw=10.0.0.1 is outside the network of banger.ip=172.30.0.5/24; use an address of that network"
        );
    }

    #[test]
    fn invalid_hostnames() {
        let long = "a".repeat(65);
        let long_label = format!("{}.vm", "a".repeat(64));
        for value in [
            "-web",
            "web-",
            "we b",
            "web_1",
            "a..b",
            ".",
            long.as_str(),
            long_label.as_str(),
        ] {
            assert!(
                matches!(
                    parse_net_cmdline(&format!("\"banger.hostname={value}\"")),
                    Err(NetCmdlineError::InvalidHostname { .. })
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn invalid_interfaces() {
        for value in ["", "eth0/x", "a:b", "..", "sixteen-bytes-xx"] {
            assert_eq!(
                parse_net_cmdline(&format!("banger.iface={value}")),
                Err(NetCmdlineError::InvalidInterface(value.into())),
                "{value:?}"
            );
        }
    }

    #[test]
    fn cidr_helpers() {
        let network = cidr("172.30.0.5/24");
        assert!(network.contains(Ipv4Addr::new(172, 30, 0, 254)));
        assert!(!network.contains(Ipv4Addr::new(172, 30, 1, 1)));
        assert_eq!(network.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        assert_eq!(network.to_string(), "172.30.0.5/24");
        assert_eq!(cidr("10.1.2.3/32").broadcast(), Ipv4Addr::new(10, 1, 2, 3));
    }
}
