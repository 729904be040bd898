//! Persistent tap devices, one per VM, owned by the user that runs the VMM.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use rtnetlink::LinkUnspec;
use serde::{Deserialize, Serialize};

use super::{LinkError, LinkInfo, Netlink, errno};
use crate::names::{validate_bridge_name, validate_tap_name};

/// The clone device through which tun and tap devices are created.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// Flags of the tap at creation. `IFF_VNET_HDR` and `IFF_NO_PI` are stored
/// per attached file, so QEMU (`-netdev tap,ifname=X`) and Firecracker
/// (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) set their own when they attach.
/// What must match at attach time is the device type (tap) and the absence
/// of `IFF_MULTI_QUEUE`, which neither VMM requests in its default setup.
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// A tap after [`Netlink::create_tap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapState {
    pub name: String,
    pub index: u32,
    pub owner_uid: u32,
    pub bridge: String,
    /// True when this call created the device.
    pub created: bool,
}

impl Netlink {
    /// Creates the persistent tap `name` owned by `owner_uid`, attaches it
    /// to `bridge` and brings it up. An existing tap of that name that no
    /// VM has open gets the same treatment, so running it again changes
    /// nothing.
    pub async fn create_tap(
        &self,
        name: &str,
        owner_uid: u32,
        bridge: &str,
    ) -> Result<TapState, LinkError> {
        validate_tap_name(name)?;
        validate_bridge_name(bridge)?;
        let bridge_link = self.require_bridge(bridge).await?;
        let existing = self.find_link(name).await?;
        if let Some(link) = &existing {
            check_is_tap(link)?;
        }

        create_persistent_tap(name, owner_uid)?;
        let created = existing.is_none();
        let result = self.attach_and_up(name, &bridge_link).await;
        let index = match result {
            Ok(index) => index,
            Err(error) => {
                if created {
                    // Best effort: leave no unattached tap behind. The
                    // attach error is the one worth reporting.
                    let _ = self.delete_tap(name).await;
                }
                return Err(error);
            }
        };
        Ok(TapState {
            name: name.to_owned(),
            index,
            owner_uid,
            bridge: bridge.to_owned(),
            created,
        })
    }

    /// Deletes the tap `name`. Returns false when it did not exist. Devices
    /// of other kinds are never deleted, whatever their name.
    pub async fn delete_tap(&self, name: &str) -> Result<bool, LinkError> {
        validate_tap_name(name)?;
        let Some(link) = self.find_link(name).await? else {
            return Ok(false);
        };
        check_is_tap(&link)?;
        match self.handle().link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(error) if errno(&error) == Some(libc::ENODEV) => Ok(false),
            Err(source) => Err(LinkError::Delete {
                name: name.to_owned(),
                source,
            }),
        }
    }

    async fn require_bridge(&self, bridge: &str) -> Result<LinkInfo, LinkError> {
        let link = self
            .find_link(bridge)
            .await?
            .ok_or_else(|| LinkError::BridgeMissing {
                name: bridge.to_owned(),
            })?;
        if link.kind.as_deref() != Some("bridge") {
            return Err(LinkError::NotABridge {
                name: bridge.to_owned(),
                kind: link.kind_for_message(),
            });
        }
        Ok(link)
    }

    async fn attach_and_up(&self, name: &str, bridge: &LinkInfo) -> Result<u32, LinkError> {
        let link = self
            .find_link(name)
            .await?
            .ok_or_else(|| LinkError::Attach {
                name: name.to_owned(),
                bridge: bridge.name.clone(),
                source: rtnetlink::Error::RequestFailed,
            })?;
        self.handle()
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .controller(bridge.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| LinkError::Attach {
                name: name.to_owned(),
                bridge: bridge.name.clone(),
                source,
            })?;
        Ok(link.index)
    }
}

fn check_is_tap(link: &LinkInfo) -> Result<(), LinkError> {
    if link.kind.as_deref() == Some("tun") {
        Ok(())
    } else {
        Err(LinkError::NotATap {
            name: link.name.clone(),
            kind: link.kind_for_message(),
        })
    }
}

/// Creates (or attaches to) the tap `name` through `/dev/net/tun`, sets
/// its owner and makes it persistent, so it outlives the file descriptor
/// closed on return.
fn create_persistent_tap(name: &str, owner_uid: u32) -> Result<(), LinkError> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(LinkError::OpenTun)?;

    let ioctl_error = |ioctl, source| LinkError::TunIoctl {
        name: name.to_owned(),
        ioctl,
        source,
    };
    let mut request = interface_request(name);
    // SAFETY: `tun` is an open /dev/net/tun descriptor and TUNSETIFF reads
    // and writes a `struct ifreq`, which `request` is, with a NUL-terminated
    // name of at most 15 bytes.
    let status = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if status < 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EBUSY) {
            return Err(LinkError::TapBusy {
                name: name.to_owned(),
            });
        }
        return Err(ioctl_error("TUNSETIFF", source));
    }
    set_tun_value(&tun, libc::TUNSETOWNER, libc::c_ulong::from(owner_uid))
        .map_err(|source| ioctl_error("TUNSETOWNER", source))?;
    set_tun_value(&tun, libc::TUNSETPERSIST, 1)
        .map_err(|source| ioctl_error("TUNSETPERSIST", source))?;
    Ok(())
}

/// Issues a tun ioctl whose argument is a value, not a pointer.
fn set_tun_value(tun: &File, request: libc::Ioctl, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: TUNSETOWNER and TUNSETPERSIST take their argument by value,
    // so no memory is passed to the kernel. `tun` is an open descriptor,
    // attached to a device by the preceding TUNSETIFF call.
    let status = unsafe { libc::ioctl(tun.as_raw_fd(), request, value) };
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Builds the TUNSETIFF request for a tap named `name`, which the caller
/// has validated (ASCII, at most 15 bytes).
fn interface_request(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct of integers, arrays and a union
    // of such, for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // The flags fit in a c_short: TAP_FLAGS is 0x5002.
    request.ifr_ifru.ifru_flags = TAP_FLAGS as libc::c_short;
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_request_holds_name_and_flags() {
        let request = interface_request("bgt0123456789ab");
        let name: Vec<u8> = request.ifr_name.iter().map(|&c| c as u8).collect();
        assert_eq!(&name[..15], b"bgt0123456789ab");
        assert_eq!(name[15], 0, "the name is NUL-terminated");
        // SAFETY: `ifru_flags` is the member `interface_request` wrote.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        assert_eq!(flags as libc::c_int, TAP_FLAGS);
        assert_eq!(TAP_FLAGS & libc::IFF_MULTI_QUEUE, 0);
    }
}
