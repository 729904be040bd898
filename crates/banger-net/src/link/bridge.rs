//! The bridge the VMs' taps attach to.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::{LinkBridge, LinkUnspec};
use serde::{Deserialize, Serialize};

use super::{LinkError, Netlink, errno};
use crate::names::validate_bridge_name;
use crate::pool::Pool;

/// The bridge after [`Netlink::ensure_bridge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeState {
    pub name: String,
    pub index: u32,
    /// The pool's gateway address, now on the bridge.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// True when this call created the bridge.
    pub created: bool,
}

impl Netlink {
    /// Creates the bridge `name` unless it exists, puts the pool's gateway
    /// address on it and brings it up. Other addresses on an existing
    /// bridge are left alone. Running it again changes nothing.
    pub async fn ensure_bridge(&self, name: &str, pool: &Pool) -> Result<BridgeState, LinkError> {
        validate_bridge_name(name)?;
        let mut created = false;
        let link = match self.find_link(name).await? {
            Some(link) => link,
            None => {
                let added = self
                    .handle()
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await;
                match added {
                    Ok(()) => created = true,
                    // Another caller created it between the lookup and the add.
                    Err(error) if errno(&error) == Some(libc::EEXIST) => {}
                    Err(source) => {
                        return Err(LinkError::CreateBridge {
                            name: name.to_owned(),
                            source,
                        });
                    }
                }
                self.find_link(name)
                    .await?
                    .ok_or_else(|| LinkError::BridgeMissing {
                        name: name.to_owned(),
                    })?
            }
        };
        if link.kind.as_deref() != Some("bridge") {
            return Err(LinkError::NotABridge {
                name: name.to_owned(),
                kind: link.kind_for_message(),
            });
        }

        let address = pool.gateway();
        let prefix_len = pool.prefix_len();
        // `replace` makes adding an address the bridge already has a no-op.
        self.handle()
            .address()
            .add(link.index, IpAddr::V4(address), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|source| LinkError::AddAddress {
                name: name.to_owned(),
                address,
                prefix_len,
                source,
            })?;
        self.set_up(link.index, name).await?;

        Ok(BridgeState {
            name: name.to_owned(),
            index: link.index,
            address,
            prefix_len,
            created,
        })
    }

    /// Sets `IFF_UP` on the device with `index`.
    pub(crate) async fn set_up(&self, index: u32, name: &str) -> Result<(), LinkError> {
        self.handle()
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| LinkError::SetUp {
                name: name.to_owned(),
                source,
            })
    }
}
