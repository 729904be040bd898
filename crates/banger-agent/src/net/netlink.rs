//! A minimal rtnetlink client: bring a link up, add an IPv4 address, add an
//! IPv4 default route. Messages are built byte by byte in the layouts of
//! `<linux/netlink.h>`, `<linux/rtnetlink.h>` and `<linux/if_addr.h>`.
//! Integers are in host byte order and addresses in network byte order, as
//! the kernel expects.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

const NLMSG_HEADER_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const AF_INET: u8 = libc::AF_INET as u8;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = libc::IFF_UP as u32;

/// A route netlink socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    sequence: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Self { fd, sequence: 0 })
    }

    /// Sets `IFF_UP` on the link with `index`.
    pub fn set_link_up(&mut self, index: u32) -> io::Result<()> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes());
        self.request(RTM_NEWLINK, 0, &body)
    }

    /// Adds `address/prefix_len` to the link with `index`, or replaces the
    /// same address, so running it again is harmless.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        let mut body = vec![AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&index.to_ne_bytes());
        push_attribute(&mut body, IFA_LOCAL, &address.octets());
        push_attribute(&mut body, IFA_ADDRESS, &address.octets());
        if prefix_len < 31 {
            push_attribute(&mut body, IFA_BROADCAST, &broadcast.octets());
        }
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &body)
    }

    /// Sets the IPv4 default route of the main table to `gateway` through
    /// the link with `index`, replacing an existing default route.
    pub fn replace_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope, type, flags.
        let mut body = vec![
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ];
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attribute(&mut body, RTA_GATEWAY, &gateway.octets());
        push_attribute(&mut body, RTA_OIF, &index.to_ne_bytes());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &body)
    }

    /// Sends one request with `NLM_F_ACK` and waits for its acknowledgement.
    fn request(&mut self, message_type: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let message = encode_message(
            message_type,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            sequence,
            body,
        );
        send(self.fd.as_raw_fd(), &message, MsgFlags::empty())?;

        let mut buffer = vec![0u8; 8192];
        loop {
            let len = recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
            if let Some(result) = find_ack(&buffer[..len], sequence) {
                return result;
            }
        }
    }
}

/// Builds a netlink message: `struct nlmsghdr` followed by `body`. The port
/// id is 0, which lets the kernel fill in the socket's.
fn encode_message(message_type: u16, flags: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    let mut message = Vec::with_capacity(NLMSG_HEADER_LEN + body.len());
    message.extend_from_slice(&len.to_ne_bytes());
    message.extend_from_slice(&message_type.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(body);
    message
}

/// Appends a `struct rtattr` with `data`, padded to 4 bytes.
fn push_attribute(body: &mut Vec<u8>, attribute_type: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    body.extend_from_slice(&len.to_ne_bytes());
    body.extend_from_slice(&attribute_type.to_ne_bytes());
    body.extend_from_slice(data);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

/// Looks for the `NLMSG_ERROR` acknowledgement of `sequence` in a received
/// buffer. Returns `Some(Ok(()))` for error code 0, `Some(Err(errno))` for a
/// negative code, and `None` when the buffer contains no such message.
fn find_ack(buffer: &[u8], sequence: u32) -> Option<io::Result<()>> {
    let mut offset = 0;
    while offset + NLMSG_HEADER_LEN <= buffer.len() {
        let header = &buffer[offset..];
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HEADER_LEN || offset + len > buffer.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed netlink message of length {len}"),
            )));
        }
        let message_type = u16::from_ne_bytes(header[4..6].try_into().ok()?);
        let message_sequence = u32::from_ne_bytes(header[8..12].try_into().ok()?);
        if message_type == NLMSG_ERROR
            && message_sequence == sequence
            && len >= NLMSG_HEADER_LEN + 4
        {
            let code = i32::from_ne_bytes(header[16..20].try_into().ok()?);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(code.saturating_abs()))
            });
        }
        // Messages are aligned to 4 bytes.
        offset += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_is_padded() {
        let mut body = Vec::new();
        push_attribute(&mut body, RTA_OIF, &[1, 2, 3, 4, 5]);
        assert_eq!(body.len(), 12);
        assert_eq!(u16::from_ne_bytes([body[0], body[1]]), 9);
        assert_eq!(u16::from_ne_bytes([body[2], body[3]]), RTA_OIF);
        assert_eq!(&body[4..9], &[1, 2, 3, 4, 5]);
        assert_eq!(&body[9..], &[0, 0, 0]);
    }

    #[test]
    fn message_header_layout() {
        let message = encode_message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, 7, &[9; 12]);
        assert_eq!(message.len(), 28);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([message[4], message[5]]), RTM_NEWROUTE);
        assert_eq!(u16::from_ne_bytes([message[6], message[7]]), 5);
        assert_eq!(u32::from_ne_bytes(message[8..12].try_into().unwrap()), 7);
    }

    fn ack(sequence: u32, code: i32) -> Vec<u8> {
        let mut body = code.to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        encode_message(NLMSG_ERROR, 0, sequence, &body)
    }

    #[test]
    fn find_ack_reads_codes() {
        assert!(matches!(find_ack(&ack(3, 0), 3), Some(Ok(()))));
        let error = find_ack(&ack(3, -libc::EEXIST), 3).unwrap().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EEXIST));
        assert!(find_ack(&ack(2, 0), 3).is_none(), "another sequence number");

        let mut two = ack(2, -libc::EPERM);
        two.extend_from_slice(&ack(3, 0));
        assert!(matches!(find_ack(&two, 3), Some(Ok(()))));
    }

    #[test]
    fn find_ack_rejects_bad_length() {
        let mut message = ack(3, 0);
        message[0..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(matches!(find_ack(&message, 3), Some(Err(_))));
    }
}
