//! banger's DNS server: answers `A` queries for `<name>.vm` over UDP from a
//! [`DnsRecords`] map that the daemon updates as VMs start and stop.
//!
//! The host's resolver reaches it through systemd-resolved's per-link
//! routing (see [`crate::resolved`]).

pub mod answer;
mod records;

use std::io;
use std::net::SocketAddr;

use thiserror::Error;
use tokio::net::UdpSocket;

pub use answer::{ANSWER_TTL, DnsResponse, ZONE, respond};
pub use records::DnsRecords;

/// Address the server listens on when the configuration names none.
pub const DEFAULT_DNS_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    42069,
));

/// Largest request read. Queries from stub resolvers fit in 512 bytes; EDNS
/// allows more, and anything longer is cut and then fails to decode.
const MAX_REQUEST: usize = 4096;

/// Receive errors in a row after which the server gives up, so a broken
/// socket cannot make it spin and flood the log.
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

#[derive(Debug, Error)]
pub enum DnsError {
    #[error("binding the DNS server to UDP {addr} failed; is another server on that port?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("reading the DNS server's local address failed")]
    LocalAddr(#[source] io::Error),
    #[error("receiving on the DNS socket {addr} failed {count} times in a row")]
    Receive {
        addr: SocketAddr,
        count: u32,
        #[source]
        source: io::Error,
    },
}

/// A bound DNS server. [`DnsServer::serve`] runs it.
pub struct DnsServer {
    socket: UdpSocket,
    addr: SocketAddr,
    records: DnsRecords,
}

impl DnsServer {
    /// Binds the UDP socket. Port 0 picks a free port; see
    /// [`DnsServer::local_addr`].
    pub async fn bind(addr: SocketAddr, records: DnsRecords) -> Result<Self, DnsError> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        let addr = socket.local_addr().map_err(DnsError::LocalAddr)?;
        Ok(Self {
            socket,
            addr,
            records,
        })
    }

    /// Returns the address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves requests until the future is dropped. Returns only when
    /// receiving keeps failing. A failure to send one response is logged and
    /// skipped.
    pub async fn serve(self) -> Result<(), DnsError> {
        tracing::info!(addr = %self.addr, "DNS server listening");
        let mut buffer = vec![0u8; MAX_REQUEST];
        let mut errors_in_a_row = 0;
        loop {
            let (len, peer) = match self.socket.recv_from(&mut buffer).await {
                Ok(received) => {
                    errors_in_a_row = 0;
                    received
                }
                Err(source) => {
                    errors_in_a_row += 1;
                    tracing::warn!(addr = %self.addr, error = %source, "receiving a DNS request failed");
                    if errors_in_a_row >= MAX_CONSECUTIVE_ERRORS {
                        return Err(DnsError::Receive {
                            addr: self.addr,
                            count: errors_in_a_row,
                            source,
                        });
                    }
                    continue;
                }
            };
            let Some(response) = respond(&buffer[..len], &self.records) else {
                tracing::debug!(%peer, len, "ignored a packet that is not a DNS request");
                continue;
            };
            tracing::debug!(%peer, code = %response.code, "answering DNS request");
            if let Err(error) = self.socket.send_to(&response.bytes, peer).await {
                tracing::warn!(%peer, %error, "sending a DNS response failed");
            }
        }
    }
}
