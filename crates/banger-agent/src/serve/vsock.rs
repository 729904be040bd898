//! Serving the protocol on AF_VSOCK, the agent channel under Firecracker.
//!
//! The host connects through Firecracker's vsock Unix socket, and each
//! accepted connection is one session, served on its own thread with
//! [`super::serve_connection`]. A connection that the host closes ends its
//! session and kills the session's commands, while other connections go on.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr, accept4, bind, getpeername, listen,
    socket,
};

use super::{ConnectionOptions, ServeError, serve_connection};

/// Pause after an accept failure that may pass, such as running out of
/// file descriptors, before accepting again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 16;

/// A listening AF_VSOCK stream socket.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
    port: u32,
}

impl VsockListener {
    /// Listens on `port` for connections to any CID of this machine.
    pub fn bind(port: u32) -> Result<Self, ServeError> {
        let bind_error = |source| ServeError::VsockBind { port, source };
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(bind_error)?;
        bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port)).map_err(bind_error)?;
        let backlog = Backlog::new(BACKLOG).map_err(bind_error)?;
        listen(&fd, backlog).map_err(bind_error)?;
        Ok(VsockListener { fd, port })
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    /// Waits for a connection and returns it with the peer's address as
    /// `cid:port`.
    pub fn accept(&self) -> io::Result<(File, String)> {
        let raw = accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
        // SAFETY: accept4 returned a new, open descriptor that nothing else
        // owns, so the OwnedFd may close it on drop.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let peer = match getpeername::<VsockAddr>(fd.as_raw_fd()) {
            Ok(address) => format!("{}:{}", address.cid(), address.port()),
            Err(error) => format!("unknown peer ({error})"),
        };
        // A File reads and writes with read(2) and write(2), which is all a
        // stream socket needs here.
        Ok((File::from(fd), peer))
    }
}

/// Serves the connections of `listener` until accepting fails for good.
pub fn serve_vsock(
    listener: &VsockListener,
    options: &ConnectionOptions,
) -> Result<(), ServeError> {
    let port = listener.port();
    log_line!("version {} listening on vsock port {port}", crate::VERSION);
    serve_each_connection(
        || {
            let (stream, peer) = listener.accept()?;
            let writer = stream.try_clone()?;
            Ok((stream, writer, peer))
        },
        &format!("vsock port {port}"),
        options,
    )
    .map_err(|source| ServeError::VsockAccept { port, source })
}

/// Calls `accept` in a loop and serves each connection it returns on a new
/// thread. Returns the error of an accept that failed for good. Failures
/// that may pass are logged and retried.
pub fn serve_each_connection<R, W, A>(
    mut accept: A,
    listener: &str,
    options: &ConnectionOptions,
) -> io::Result<()>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
    A: FnMut() -> io::Result<(R, W, String)>,
{
    loop {
        let (reader, writer, peer) = match accept() {
            Ok(connection) => connection,
            Err(error) if is_transient(&error) => {
                log_line!("accepting a connection on {listener} failed: {error}; retrying");
                thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        log_line!("connection from {peer} accepted on {listener}");
        let connection_options = options.clone();
        let connection_peer = peer.clone();
        let spawned = thread::Builder::new()
            .name(format!("connection {peer}"))
            .spawn(
                move || match serve_connection(reader, writer, &connection_options) {
                    Ok(()) => log_line!("connection from {connection_peer} closed by the peer"),
                    Err(error) => log_line!(
                        "connection from {connection_peer} ended: {}",
                        crate::error_chain(&error)
                    ),
                },
            );
        if let Err(error) = spawned {
            log_line!(
                "starting a thread for the connection from {peer} failed: {error}; closing it"
            );
        }
    }
}

/// Returns whether an accept failure may pass: the peer gave up before the
/// accept, or the process or system ran out of descriptors or memory.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::ECONNABORTED
                | Errno::EMFILE
                | Errno::ENFILE
                | Errno::ENOBUFS
                | Errno::ENOMEM
                | Errno::EPROTO
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_accept_errors() {
        assert!(is_transient(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_transient(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EBADF)));
        assert!(!is_transient(&io::Error::other("no errno")));
    }
}
