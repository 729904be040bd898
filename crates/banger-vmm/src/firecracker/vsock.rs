//! Host-initiated vsock connections through Firecracker's Unix socket, as
//! Firecracker's `docs/vsock.md` describes them.
//!
//! The host connects to the socket given as `uds_path`, writes
//! `CONNECT <port>\n`, and Firecracker replies `OK <host port>\n` once a guest
//! program accepted the connection on that vsock port. From then on the
//! socket carries the connection's bytes. When nothing in the guest listens
//! on the port, Firecracker closes the socket without a reply. While the
//! guest has no vsock driver yet, no reply comes at all, which the deadline
//! of [`connect`] covers.

use std::io;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Maximum length of the reply line. The longest valid reply,
/// `OK 4294967295\n`, is 14 bytes.
const MAX_REPLY_LEN: usize = 32;

/// Failure of the `CONNECT` handshake.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("failed to connect to the vsock socket")]
    Connect(#[source] io::Error),

    #[error("failed to send `CONNECT {port}`")]
    Write {
        port: u32,
        #[source]
        source: io::Error,
    },

    #[error("failed to read the reply to `CONNECT {port}`")]
    Read {
        port: u32,
        #[source]
        source: io::Error,
    },

    #[error(
        "Firecracker closed the connection without a reply after {received:?}: no guest program accepts connections on vsock port {port} yet"
    )]
    Closed { port: u32, received: String },

    #[error("invalid reply {reply:?} to `CONNECT {port}`: expected `OK <host port>`")]
    InvalidReply { port: u32, reply: String },

    #[error("no reply to `CONNECT {port}` within {} s", timeout.as_secs_f64())]
    TimedOut { port: u32, timeout: Duration },
}

/// Connects to guest vsock `port` through Firecracker's socket at `path` and
/// returns the stream positioned right after the `OK` line. `timeout` bounds
/// the whole handshake.
pub async fn connect(
    path: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, HandshakeError> {
    match tokio::time::timeout(timeout, handshake(path, port)).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::TimedOut { port, timeout }),
    }
}

async fn handshake(path: &Path, port: u32) -> Result<UnixStream, HandshakeError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(HandshakeError::Connect)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| HandshakeError::Write { port, source })?;

    // The reply is read one byte at a time, so that no byte after the
    // newline is consumed, because those bytes belong to the guest program.
    let mut reply = Vec::with_capacity(MAX_REPLY_LEN);
    loop {
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Closed {
                    port,
                    received: String::from_utf8_lossy(&reply).into_owned(),
                });
            }
            // Firecracker may reset the connection instead of closing it.
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                return Err(HandshakeError::Closed {
                    port,
                    received: String::from_utf8_lossy(&reply).into_owned(),
                });
            }
            Err(source) => return Err(HandshakeError::Read { port, source }),
        };
        if byte == b'\n' {
            break;
        }
        reply.push(byte);
        if reply.len() > MAX_REPLY_LEN {
            return Err(HandshakeError::InvalidReply {
                port,
                reply: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
    }

    let text = String::from_utf8_lossy(&reply);
    if !is_ok_reply(&text) {
        return Err(HandshakeError::InvalidReply {
            port,
            reply: text.into_owned(),
        });
    }
    Ok(stream)
}

/// Returns whether `line` (without its newline) is `OK <host port>`.
fn is_ok_reply(line: &str) -> bool {
    line.strip_prefix("OK ")
        .is_some_and(|host_port| host_port.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    use super::*;

    /// Serves one connection: checks the request line, then writes `reply`
    /// and keeps the connection open for a while.
    fn fake_firecracker(path: PathBuf, reply: &'static [u8]) -> tokio::task::JoinHandle<String> {
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = tokio::io::BufReader::new(stream);
            let mut request = String::new();
            reader.read_line(&mut request).await.unwrap();
            let mut stream = reader.into_inner();
            stream.write_all(reply).await.unwrap();
            if !reply.is_empty() {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            request
        })
    }

    #[tokio::test]
    async fn handshake_leaves_following_bytes_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let server = fake_firecracker(path.clone(), b"OK 1073741824\nBNG\x01payload");

        let mut stream = connect(&path, 10_789, Duration::from_secs(5))
            .await
            .unwrap();
        let mut rest = [0u8; 11];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"BNG\x01payload");
        assert_eq!(server.await.unwrap(), "CONNECT 10789\n");
    }

    #[tokio::test]
    async fn closed_connection_means_no_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _server = fake_firecracker(path.clone(), b"");

        let error = connect(&path, 52, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(error, HandshakeError::Closed { port: 52, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("vsock port 52"), "{error}");
    }

    #[tokio::test]
    async fn invalid_replies_are_rejected() {
        let replies: [&'static [u8]; 3] = [b"ERR no\n", b"OK abc\n", &[b'O'; 40]];
        for reply in replies {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("vsock.sock");
            let _server = fake_firecracker(path.clone(), reply);
            let error = connect(&path, 52, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                matches!(error, HandshakeError::InvalidReply { .. }),
                "{reply:?}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();

        let error = connect(&path, 52, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(error, HandshakeError::TimedOut { .. }),
            "{error:?}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn missing_socket_fails_to_connect() {
        let dir = tempfile::tempdir().unwrap();
        let error = connect(&dir.path().join("none.sock"), 52, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, HandshakeError::Connect(_)), "{error:?}");
    }

    #[test]
    fn ok_reply_cases() {
        assert!(is_ok_reply("OK 1073741824"));
        assert!(!is_ok_reply("OK"));
        assert!(!is_ok_reply("OK -1"));
        assert!(!is_ok_reply("ok 5"));
    }
}
