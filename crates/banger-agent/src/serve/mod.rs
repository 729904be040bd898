//! Serve mode: the agent serves the `banger-agent-proto` protocol.
//!
//! Without options it serves every channel a VMM may give it: it listens on
//! AF_VSOCK (Firecracker) and serves the virtio-serial port named
//! `banger.agent` (QEMU) once that appears. Frames of a connection are read
//! on one thread and decoded with
//! [`banger_agent_proto::Decoder`], which skips bytes that are not part of a
//! valid frame. Replies and command output go out through the single writer
//! thread of [`outgoing::Outgoing`].

pub mod channel;
pub mod exec;
pub mod outgoing;
pub mod power;
pub mod pty;
mod pump;
pub mod reaper;
pub mod session;
pub mod stream;
pub mod vsock;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use banger_agent_proto::{Decoder, SERIAL_PORT_NAME, VSOCK_PORT};
use thiserror::Error;

use crate::cli::ServeTarget;
use crate::system::{is_pid1, kernel_release_or_unknown};
use channel::{ChannelError, PORT_WAIT, VIRTIO_PORTS_DIR};
use outgoing::Outgoing;
use session::Session;
pub use session::ShutdownHandler;
use vsock::VsockListener;

/// Pause before reading a virtio-serial port again after it returned 0
/// bytes, which it does while no host is connected.
const RECONNECT_POLL: Duration = Duration::from_millis(100);

/// Size of the read buffer for incoming frames.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("opening the agent channel failed")]
    Channel(#[source] ChannelError),
    #[error("starting the frame writer thread failed")]
    StartWriter(#[source] std::io::Error),
    #[error("reading from the agent channel failed")]
    Read(#[source] std::io::Error),
    #[error("removing the stale socket {path} failed")]
    RemoveSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; choose another --unix-socket path")]
    NotASocket { path: PathBuf },
    #[error("listening on {path} failed")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting a connection on {path} failed")]
    Accept {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "listening on vsock port {port} failed; check that the vsock and vmw_vsock_virtio_transport modules are loaded and that no other program uses the port"
    )]
    VsockBind {
        port: u32,
        #[source]
        source: nix::Error,
    },
    #[error("accepting a connection on vsock port {port} failed")]
    VsockAccept {
        port: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread serving vsock port {port} panicked")]
    VsockThreadPanicked { port: u32 },
}

/// Meaning of a read that returns 0 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOfInput {
    /// The peer closed the connection: the session ends.
    Close,
    /// No host is connected to the virtio-serial port right now: read again
    /// after the given pause.
    Retry(Duration),
}

/// Settings of one served connection.
#[derive(Clone)]
pub struct ConnectionOptions {
    pub end_of_input: EndOfInput,
    /// Runs after `ShutdownAck` was sent.
    pub shutdown: ShutdownHandler,
}

/// Runs serve mode on `target`. Returns only on errors, or when a Unix
/// socket listener stops.
pub fn run(target: &ServeTarget) -> Result<(), ServeError> {
    if is_pid1() {
        log_line!("running as PID 1; reaping orphaned processes");
        reaper::start_orphan_reaper();
    }
    match target {
        ServeTarget::VirtioPort => serve_every_channel(VSOCK_PORT),
        ServeTarget::Device(path) => serve_device(path),
        ServeTarget::UnixSocket(path) => serve_unix_socket(path),
        ServeTarget::Vsock(port) => {
            let listener = VsockListener::bind(*port)?;
            vsock::serve_vsock(&listener, &guest_connection_options())
        }
    }
}

/// Listens on vsock `port` in the background when this machine has vsock,
/// and serves the virtio-serial port once it appears. Without that port,
/// vsock alone is served; with neither, the missing port is the error.
fn serve_every_channel(port: u32) -> Result<(), ServeError> {
    let vsock_thread = match VsockListener::bind(port) {
        Ok(listener) => {
            let spawned = thread::Builder::new()
                .name(format!("vsock port {port}"))
                .spawn(move || vsock::serve_vsock(&listener, &guest_connection_options()));
            match spawned {
                Ok(handle) => Some(handle),
                Err(error) => {
                    log_line!(
                        "starting the vsock listener thread failed: {error}; serving the virtio-serial port only"
                    );
                    None
                }
            }
        }
        Err(error) => {
            log_line!(
                "not serving vsock: {}; serving the virtio-serial port only",
                crate::error_chain(&error)
            );
            None
        }
    };

    match channel::find_virtio_port(Path::new(VIRTIO_PORTS_DIR), SERIAL_PORT_NAME, PORT_WAIT) {
        Ok(path) => serve_device(&path),
        Err(error) => match vsock_thread {
            Some(handle) => {
                log_line!(
                    "no virtio-serial port named {SERIAL_PORT_NAME} appeared within {PORT_WAIT:?}; serving vsock port {port} only"
                );
                handle
                    .join()
                    .unwrap_or(Err(ServeError::VsockThreadPanicked { port }))
            }
            None => Err(ServeError::Channel(error)),
        },
    }
}

/// Settings of a connection from the host to a guest: a `Shutdown` request
/// powers off or restarts the guest.
fn guest_connection_options() -> ConnectionOptions {
    ConnectionOptions {
        end_of_input: EndOfInput::Close,
        shutdown: Arc::new(power::shut_down_guest),
    }
}

fn serve_device(path: &Path) -> Result<(), ServeError> {
    let (reader, writer) = channel::open_device(path).map_err(ServeError::Channel)?;
    log_line!("version {} serving {}", crate::VERSION, path.display());
    let options = ConnectionOptions {
        end_of_input: EndOfInput::Retry(RECONNECT_POLL),
        shutdown: Arc::new(power::shut_down_guest),
    };
    serve_connection(reader, writer, &options)
}

fn serve_unix_socket(path: &Path) -> Result<(), ServeError> {
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_owned(),
        source,
    })?;
    log_line!("version {} listening on {}", crate::VERSION, path.display());
    let options = ConnectionOptions {
        end_of_input: EndOfInput::Close,
        shutdown: Arc::new(|action| {
            log_line!(
                "shutdown ({action:?}) acknowledged; --unix-socket mode does not power off the machine"
            );
        }),
    };
    loop {
        let (stream, _) = listener.accept().map_err(|source| ServeError::Accept {
            path: path.to_owned(),
            source,
        })?;
        log_line!("connection accepted on {}", path.display());
        let writer = match stream.try_clone() {
            Ok(writer) => writer,
            Err(error) => {
                log_line!("duplicating the connection's socket failed: {error}; closing it");
                continue;
            }
        };
        match serve_connection(stream, writer, &options) {
            Ok(()) => log_line!("connection closed by the peer"),
            Err(error) => log_line!("connection ended: {}", crate::error_chain(&error)),
        }
    }
}

/// Removes a socket left by an earlier run, so bind can succeed. Any other
/// kind of file at `path` is left alone.
fn remove_stale_socket(path: &Path) -> Result<(), ServeError> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ServeError::RemoveSocket {
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => Err(ServeError::NotASocket {
            path: path.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

/// Serves one connection until the peer closes it (with
/// [`EndOfInput::Close`]) or reading fails. Commands still running when it
/// returns are killed.
pub fn serve_connection(
    reader: impl Read,
    writer: impl Write + Send + 'static,
    options: &ConnectionOptions,
) -> Result<(), ServeError> {
    let out = Outgoing::start(writer).map_err(ServeError::StartWriter)?;
    let mut session = Session::new(
        out.clone(),
        Arc::clone(&options.shutdown),
        kernel_release_or_unknown(),
    );
    let result = read_frames(reader, options.end_of_input, &mut session);
    session.end();
    out.close();
    result
}

fn read_frames(
    mut reader: impl Read,
    end_of_input: EndOfInput,
    session: &mut Session,
) -> Result<(), ServeError> {
    let mut decoder = Decoder::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut skipped_reported = 0;
    let mut host_connected = true;
    loop {
        let len = match reader.read(&mut buffer) {
            Ok(len) => len,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(ServeError::Read(error)),
        };
        if len == 0 {
            match end_of_input {
                EndOfInput::Close => return Ok(()),
                EndOfInput::Retry(pause) => {
                    if host_connected {
                        log_line!("no host connected to the channel; waiting for one");
                        host_connected = false;
                    }
                    // A partial frame from the previous host would hold
                    // back the next host's first frames until its claimed
                    // length arrived, so it is dropped.
                    decoder = Decoder::new();
                    skipped_reported = 0;
                    thread::sleep(pause);
                    continue;
                }
            }
        }
        if !host_connected {
            log_line!("host connected to the channel");
            host_connected = true;
        }

        decoder.push(&buffer[..len]);
        while let Some(frame) = decoder.next_frame() {
            if decoder.skipped() > skipped_reported {
                log_line!(
                    "skipped {} bytes that were not valid frames",
                    decoder.skipped() - skipped_reported
                );
                skipped_reported = decoder.skipped();
            }
            session.handle(frame);
        }
    }
}
