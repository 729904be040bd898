//! Forwarding a command's standard output or error as frames.
//!
//! A pump reads its pipe until end of file. When the command exited but a
//! background process it started keeps the pipe open, the pump stops
//! waiting [`EXIT_GRACE`] after the exit, so the `Exit` frame is not held
//! back for as long as that process runs.

use std::fs::File;
use std::io::{self, PipeReader, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use banger_agent_proto::{Frame, FrameKind};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::outgoing::{Outgoing, StreamGate};

/// Largest payload of one `Stdout` or `Stderr` frame.
pub const OUTPUT_CHUNK: usize = 64 * 1024;

/// How long output is still forwarded after the command exited while a
/// background process it started keeps its standard output or error open.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Forwards one output pipe of a command as frames.
pub struct OutputPump {
    pub kind: FrameKind,
    pub stream: u32,
    pub pipe: File,
    /// Becomes readable (end of file) when the command exited.
    pub exit_notice: PipeReader,
    pub out: Outgoing,
    pub gate: Arc<StreamGate>,
    /// Receives one message when the output is complete or was cut off
    /// after [`EXIT_GRACE`].
    pub done: mpsc::Sender<()>,
}

impl OutputPump {
    pub fn run(mut self) {
        let mut buffer = vec![0u8; OUTPUT_CHUNK];
        let mut exited_at: Option<Instant> = None;
        loop {
            let timeout = match exited_at {
                None => None,
                Some(exited) => {
                    let left = (exited + EXIT_GRACE).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.cut_off(&mut buffer);
                        return;
                    }
                    Some(left)
                }
            };
            let notice = exited_at.is_none().then_some(&self.exit_notice);
            let ready = match wait_readable(&self.pipe, notice, timeout) {
                Ok(ready) => ready,
                Err(error) => {
                    log_line!(
                        "stream {}: poll on {:?} failed: {error}",
                        self.stream,
                        self.kind
                    );
                    break;
                }
            };
            if ready.exited && exited_at.is_none() {
                exited_at = Some(Instant::now());
            }
            if ready.pipe {
                match self.pipe.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(len) => self.forward(&buffer[..len]),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    // The master side of a pseudo-terminal reports the end
                    // of its output, once every slave descriptor is closed,
                    // as EIO instead of end of file.
                    Err(error) if error.raw_os_error() == Some(libc::EIO) => break,
                    Err(error) => {
                        log_line!(
                            "stream {}: reading {:?} failed: {error}",
                            self.stream,
                            self.kind
                        );
                        break;
                    }
                }
            }
        }
        let _ = self.done.send(());
    }

    fn forward(&self, bytes: &[u8]) {
        let frame = Frame::new(self.kind, self.stream, bytes.to_vec());
        self.out.send_output(&self.gate, frame);
    }

    /// Sends what is in the pipe now, reports the output complete, and then
    /// reads and drops the rest, so a background process that still writes
    /// there does not get SIGPIPE.
    fn cut_off(mut self, buffer: &mut [u8]) {
        let mut pending = pending_bytes(&self.pipe);
        while pending > 0 {
            let want = pending.min(buffer.len());
            match self.pipe.read(&mut buffer[..want]) {
                Ok(0) | Err(_) => break,
                Ok(len) => {
                    self.forward(&buffer[..len]);
                    pending -= len.min(pending);
                }
            }
        }
        log_line!(
            "stream {}: {:?} is still open {EXIT_GRACE:?} after the command exited (a background process holds it); reporting the exit",
            self.stream,
            self.kind
        );
        let _ = self.done.send(());
        while matches!(self.pipe.read(buffer), Ok(len) if len > 0) {}
    }
}

struct Readiness {
    pipe: bool,
    exited: bool,
}

/// Waits until `pipe` or `exit_notice` is readable or at end of file, or
/// until `timeout` passed (`None`: no limit).
fn wait_readable(
    pipe: &File,
    exit_notice: Option<&PipeReader>,
    timeout: Option<Duration>,
) -> Result<Readiness, Errno> {
    let mut fds = vec![PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    if let Some(notice) = exit_notice {
        fds.push(PollFd::new(notice.as_fd(), PollFlags::POLLIN));
    }
    // Rounded up to whole milliseconds so a short remainder does not spin.
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(left) => {
            let millis = left.as_millis().saturating_add(1);
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
        }
    };
    loop {
        match poll(&mut fds, timeout) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error),
        }
    }
    let is_ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
    Ok(Readiness {
        pipe: is_ready(&fds[0]),
        exited: fds.get(1).is_some_and(is_ready),
    })
}

/// Returns the number of unread bytes in a pipe (`FIONREAD`).
fn pending_bytes(pipe: &File) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points to
    // a live local variable of that type.
    let result = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut count) };
    if result == 0 {
        usize::try_from(count).unwrap_or(0)
    } else {
        0
    }
}
