//! Host networking for banger VMs.
//!
//! - [`pool`]: the IPv4 address pool, gateway, leasable range and MAC
//!   addresses derived from VM addresses.
//! - [`names`]: device names (`banger*` bridges, `bgt*` taps) and VM ids.
//! - [`link`]: the bridge and the taps, through rtnetlink and
//!   `/dev/net/tun`; the default route's interface.
//! - [`nat`]: per-VM masquerading in the nftables table `inet banger`.
//! - [`resolved`]: routing the `vm` DNS domain through systemd-resolved.
//! - [`dns`]: the DNS server for `<name>.vm`.
//! - [`helper`]: requests of the privileged helper `banger-root`, their
//!   validation, an in-process executor and a client.
//! - [`command`]: the runner through which `nft` and `resolvectl` run.
//!
//! Changing devices, nftables rules and resolver settings needs root (or
//! CAP_NET_ADMIN); everything acts in the calling thread's network
//! namespace.

pub mod command;
pub mod dns;
pub mod helper;
pub mod link;
pub mod names;
pub mod nat;
pub mod pool;
pub mod resolved;

use std::error::Error;
use std::fmt::Write as _;

/// Formats an error and all its sources as `outer: inner: innermost`.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
