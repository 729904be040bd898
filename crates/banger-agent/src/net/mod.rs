//! Guest network setup from the kernel command line: the interface's
//! address, the default route, the loopback, `/etc/resolv.conf` and the
//! host name. Runs at the start of serve mode and as `banger-agent
//! net-setup`; every step can run again without harm.
//!
//! Devices and routes are set through rtnetlink ([`netlink`]), so the
//! guest needs no `ip` binary.

pub mod config;
mod netlink;

use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use config::{Ipv4Cidr, NetCmdlineError, NetConfig, parse_net_cmdline};
use netlink::Netlink;

/// Time to wait for the network interface to appear. The virtio-net driver
/// is loaded in the initramfs, so the interface normally exists already.
pub const INTERFACE_WAIT: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(100);

/// `type` of Ethernet devices in sysfs (`ARPHRD_ETHER`).
const ARPHRD_ETHER: &str = "1";

#[derive(Debug, Error)]
pub enum NetSetupError {
    #[error("reading the kernel command line from {path} failed")]
    ReadCmdline {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid network parameters on the kernel command line")]
    Cmdline(#[source] NetCmdlineError),
    #[error("opening a netlink socket failed")]
    Netlink(#[source] io::Error),
    #[error("no Ethernet interface appeared in {dir} within {} s; pass banger.iface=NAME", waited.as_secs_f64())]
    NoInterface { dir: PathBuf, waited: Duration },
    #[error("interface {name} (banger.iface) did not appear within {} s", waited.as_secs_f64())]
    InterfaceMissing { name: String, waited: Duration },
    #[error("looking up the index of interface {name} failed")]
    InterfaceIndex {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("bringing interface {name} up failed")]
    LinkUp {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("adding address {address} to {name} failed")]
    AddAddress {
        name: String,
        address: Ipv4Cidr,
        #[source]
        source: io::Error,
    },
    #[error("adding the default route via {gateway} on {name} failed")]
    DefaultRoute {
        name: String,
        gateway: std::net::Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("writing {path} failed")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting the host name to {name} failed")]
    SetHostname {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Directories the setup reads and writes. Tests point them at their own.
#[derive(Debug, Clone)]
pub struct SetupPaths {
    /// Directory of `resolv.conf` and `hostname`.
    pub etc_dir: PathBuf,
    /// Directory listing network interfaces.
    pub sys_class_net: PathBuf,
}

impl Default for SetupPaths {
    fn default() -> Self {
        Self {
            etc_dir: PathBuf::from("/etc"),
            sys_class_net: PathBuf::from("/sys/class/net"),
        }
    }
}

/// Reads the command line at `cmdline_path` and applies its banger network
/// parameters. Returns `Ok(None)` when it has none, and then changes
/// nothing; otherwise returns what was configured, one item per step.
pub fn setup_from_cmdline(
    cmdline_path: &Path,
    paths: &SetupPaths,
) -> Result<Option<Vec<String>>, NetSetupError> {
    let cmdline =
        std::fs::read_to_string(cmdline_path).map_err(|source| NetSetupError::ReadCmdline {
            path: cmdline_path.to_owned(),
            source,
        })?;
    let config = parse_net_cmdline(&cmdline).map_err(NetSetupError::Cmdline)?;
    if config.is_empty() {
        return Ok(None);
    }
    apply(&config, paths, INTERFACE_WAIT).map(Some)
}

/// Runs at the start of serve mode: applies the parameters of
/// `/proc/cmdline` and logs the outcome. A failure is logged and does not
/// stop the agent, which the host needs to reach the guest at all.
pub fn setup_at_serve_start() {
    match setup_from_cmdline(Path::new("/proc/cmdline"), &SetupPaths::default()) {
        Ok(None) => {}
        Ok(Some(steps)) => log_line!("network: {}", steps.join(", ")),
        Err(error) => log_line!("network setup failed: {}", crate::error_chain(&error)),
    }
}

/// Applies `config`: the loopback up; with an address, the interface up
/// with that address and the default route; then `resolv.conf` and the
/// host name. Stops at the first failure.
pub fn apply(
    config: &NetConfig,
    paths: &SetupPaths,
    wait: Duration,
) -> Result<Vec<String>, NetSetupError> {
    let mut steps = Vec::new();
    let mut netlink = Netlink::open().map_err(NetSetupError::Netlink)?;

    let lo = interface_index("lo")?;
    netlink
        .set_link_up(lo)
        .map_err(|source| NetSetupError::LinkUp {
            name: "lo".to_owned(),
            source,
        })?;
    steps.push("lo up".to_owned());

    if let Some(address) = config.address {
        let name = match &config.interface {
            Some(name) => wait_for_interface(&paths.sys_class_net, name, wait)?,
            None => wait_for_ethernet(&paths.sys_class_net, wait)?,
        };
        let index = interface_index(&name)?;
        netlink
            .set_link_up(index)
            .map_err(|source| NetSetupError::LinkUp {
                name: name.clone(),
                source,
            })?;
        netlink
            .add_address(
                index,
                address.address,
                address.prefix_len,
                address.broadcast(),
            )
            .map_err(|source| NetSetupError::AddAddress {
                name: name.clone(),
                address,
                source,
            })?;
        steps.push(format!("{name} {address}"));
        if let Some(gateway) = config.gateway {
            netlink
                .replace_default_route(index, gateway)
                .map_err(|source| NetSetupError::DefaultRoute {
                    name: name.clone(),
                    gateway,
                    source,
                })?;
            steps.push(format!("default via {gateway}"));
        }
    }

    if let Some(dns) = config.dns {
        let contents = format!(
            "# Written by banger-agent from banger.dns on the kernel command line.\nnameserver {dns}\n"
        );
        replace_file(&paths.etc_dir.join("resolv.conf"), &contents)?;
        steps.push(format!("nameserver {dns}"));
    }

    if let Some(hostname) = &config.hostname {
        nix::unistd::sethostname(hostname).map_err(|source| NetSetupError::SetHostname {
            name: hostname.clone(),
            source,
        })?;
        replace_file(&paths.etc_dir.join("hostname"), &format!("{hostname}\n"))?;
        steps.push(format!("hostname {hostname}"));
    }
    Ok(steps)
}

fn interface_index(name: &str) -> Result<u32, NetSetupError> {
    nix::net::if_::if_nametoindex(name).map_err(|source| NetSetupError::InterfaceIndex {
        name: name.to_owned(),
        source,
    })
}

fn wait_for_interface(dir: &Path, name: &str, wait: Duration) -> Result<String, NetSetupError> {
    let deadline = Instant::now() + wait;
    while !dir.join(name).exists() {
        if Instant::now() >= deadline {
            return Err(NetSetupError::InterfaceMissing {
                name: name.to_owned(),
                waited: wait,
            });
        }
        thread::sleep(POLL);
    }
    Ok(name.to_owned())
}

fn wait_for_ethernet(dir: &Path, wait: Duration) -> Result<String, NetSetupError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(name) = first_ethernet(dir) {
            return Ok(name);
        }
        if Instant::now() >= deadline {
            return Err(NetSetupError::NoInterface {
                dir: dir.to_owned(),
                waited: wait,
            });
        }
        thread::sleep(POLL);
    }
}

/// Returns the Ethernet interface with the lowest index, leaving out the
/// loopback and bridges.
pub fn first_ethernet(dir: &Path) -> Option<String> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut best: Option<(u32, String)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let read = |attribute: &str| std::fs::read_to_string(path.join(attribute)).ok();
        if name == "lo" || path.join("bridge").exists() {
            continue;
        }
        if read("type").as_deref().map(str::trim) != Some(ARPHRD_ETHER) {
            continue;
        }
        let Some(index) = read("ifindex").and_then(|text| text.trim().parse::<u32>().ok()) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(best_index, _)| index < *best_index)
        {
            best = Some((index, name));
        }
    }
    best.map(|(_, name)| name)
}

/// Writes `contents` to a temporary file beside `path` and renames it over
/// `path`, so readers never see a partial file. A symbolic link at `path`
/// (such as systemd-resolved's `resolv.conf` link) is replaced by the file.
fn replace_file(path: &Path, contents: &str) -> Result<(), NetSetupError> {
    let write_error = |source| NetSetupError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.banger-agent"));
    std::fs::write(&temporary, contents).map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        write_error(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_interface(dir: &Path, name: &str, kind: &str, index: u32, bridge: bool) {
        let path = dir.join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(path.join("ifindex"), format!("{index}\n")).unwrap();
        if bridge {
            std::fs::create_dir(path.join("bridge")).unwrap();
        }
    }

    #[test]
    fn first_ethernet_picks_lowest_index() {
        let dir = tempfile::tempdir().unwrap();
        fake_interface(dir.path(), "lo", "772", 1, false);
        fake_interface(dir.path(), "br0", "1", 2, true);
        fake_interface(dir.path(), "eth1", "1", 4, false);
        fake_interface(dir.path(), "eth0", "1", 3, false);
        fake_interface(dir.path(), "sit0", "776", 5, false);
        std::fs::write(dir.path().join("bonding_masters"), "").unwrap();
        assert_eq!(first_ethernet(dir.path()).as_deref(), Some("eth0"));
    }

    #[test]
    fn no_ethernet_times_out_with_hint() {
        let dir = tempfile::tempdir().unwrap();
        fake_interface(dir.path(), "lo", "772", 1, false);
        let error = wait_for_ethernet(dir.path(), Duration::from_millis(150)).unwrap_err();
        assert!(
            error.to_string().ends_with("; pass banger.iface=NAME"),
            "{error}"
        );
        let error = wait_for_interface(dir.path(), "eth7", Duration::from_millis(150)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "interface eth7 (banger.iface) did not appear within 0.15 s"
        );
    }

    #[test]
    fn replace_file_replaces_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("stub-resolv.conf");
        std::fs::write(&target, "nameserver 127.0.0.53\n").unwrap();
        let link = dir.path().join("resolv.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        replace_file(&link, "nameserver 172.30.0.1\n").unwrap();
        assert!(
            !std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&link).unwrap(),
            "nameserver 172.30.0.1\n"
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "nameserver 127.0.0.53\n"
        );
        assert!(!dir.path().join(".resolv.conf.banger-agent").exists());
    }

    #[test]
    fn setup_without_parameters_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "console=ttyS0 root=LABEL=bangerroot\n").unwrap();
        let paths = SetupPaths {
            etc_dir: dir.path().to_owned(),
            sys_class_net: dir.path().join("none"),
        };
        assert!(setup_from_cmdline(&cmdline, &paths).unwrap().is_none());
        assert!(!dir.path().join("resolv.conf").exists());
    }

    #[test]
    fn setup_reports_bad_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "banger.ip=172.30.0.5\n").unwrap();
        let error = setup_from_cmdline(&cmdline, &SetupPaths::default()).unwrap_err();
        assert_eq!(
            crate::error_chain(&error),
            "invalid network parameters on the kernel command line: invalid banger.ip=\"172.30.0.5\": \
             expected an IPv4 address with prefix length, such as 172.30.0.5/24"
        );
    }
}
