//! Network devices through rtnetlink: the bridge, the VMs' tap devices and
//! the default route's interface.
//!
//! Every function acts in the network namespace of the calling thread, which
//! is where [`Netlink::connect`] opens its socket and where `/dev/net/tun`
//! is opened.

mod bridge;
mod route;
mod tap;

use std::io;
use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo as InfoAttribute, LinkMessage,
};
use thiserror::Error;

use crate::names::NameError;

pub use bridge::BridgeState;
pub use tap::{TUN_DEVICE, TapState};

#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("opening a netlink socket failed")]
    Connect(#[source] io::Error),
    #[error("looking up link {name} failed")]
    Query {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("creating bridge {name} failed")]
    CreateBridge {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(
        "link {name} exists but is a {kind} device, not a bridge; delete it or configure another bridge name"
    )]
    NotABridge { name: String, kind: String },
    #[error("adding address {address}/{prefix_len} to {name} failed")]
    AddAddress {
        name: String,
        address: Ipv4Addr,
        prefix_len: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("bringing link {name} up failed")]
    SetUp {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("bridge {name} not found; ensure the bridge before creating taps")]
    BridgeMissing { name: String },
    #[error("opening {TUN_DEVICE} failed; load the tun kernel module (modprobe tun)")]
    OpenTun(#[source] io::Error),
    #[error("ioctl {ioctl} on tap {name} failed")]
    TunIoctl {
        name: String,
        ioctl: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("tap {name} is in use by a running VM; stop the VM first")]
    TapBusy { name: String },
    #[error("link {name} exists but is a {kind} device, not a tap; delete it by hand")]
    NotATap { name: String, kind: String },
    #[error("attaching tap {name} to bridge {bridge} failed")]
    Attach {
        name: String,
        bridge: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting link {name} failed")]
    Delete {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("listing IPv4 routes failed")]
    ListRoutes(#[source] rtnetlink::Error),
    #[error("no IPv4 default route found; configure the uplink interface explicitly")]
    NoDefaultRoute,
    #[error("the default route's interface (index {index}) was not found")]
    UplinkMissing { index: u32 },
}

/// Properties of one network device that banger uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` such as `bridge` or `tun`; `None` for physical
    /// devices and loopback.
    pub kind: Option<String>,
    /// Index of the bridge the device is attached to.
    pub controller: Option<u32>,
    /// Administrative state (`IFF_UP`).
    pub up: bool,
}

impl LinkInfo {
    fn from_message(message: &LinkMessage) -> Self {
        let mut info = LinkInfo {
            index: message.header.index,
            name: String::new(),
            kind: None,
            controller: None,
            up: message.header.flags.contains(LinkFlags::Up),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => info.name = name.clone(),
                LinkAttribute::Controller(index) => info.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for item in infos {
                        if let InfoAttribute::Kind(kind) = item {
                            info.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }

    /// Kind for messages: the `IFLA_INFO_KIND`, or `physical`.
    fn kind_for_message(&self) -> String {
        self.kind.clone().unwrap_or_else(|| "physical".to_owned())
    }
}

/// A route netlink connection in the calling thread's network namespace.
/// The connection task runs on the current tokio runtime until the
/// `Netlink` value is dropped.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket and spawns its connection task. Must be called
    /// inside a tokio runtime.
    pub fn connect() -> Result<Self, LinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Looks a device up by name; `Ok(None)` when it does not exist.
    pub async fn find_link(&self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(message)) => Ok(Some(LinkInfo::from_message(&message))),
            Ok(None) => Ok(None),
            Err(error) if errno(&error) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(LinkError::Query {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Looks a device up by index; `Ok(None)` when it does not exist.
    pub async fn find_link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, LinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(message)) => Ok(Some(LinkInfo::from_message(&message))),
            Ok(None) => Ok(None),
            Err(error) if errno(&error) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(LinkError::Query {
                name: format!("#{index}"),
                source,
            }),
        }
    }

    /// Lists the names of the devices attached to the bridge with `index`.
    pub async fn bridge_ports(&self, index: u32) -> Result<Vec<String>, LinkError> {
        let mut links = self.handle.link().get().execute();
        let mut ports = Vec::new();
        loop {
            let message = links.try_next().await.map_err(|source| LinkError::Query {
                name: format!("ports of #{index}"),
                source,
            })?;
            let Some(message) = message else {
                break;
            };
            let link = LinkInfo::from_message(&message);
            if link.controller == Some(index) {
                ports.push(link.name);
            }
        }
        Ok(ports)
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Returns the positive errno of a netlink error message.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}
