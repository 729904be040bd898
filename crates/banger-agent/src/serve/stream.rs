//! Running commands as exec streams: the table of running streams, and the
//! threads that feed a command's standard input, forward its output and
//! report its exit.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, PipeWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;

use banger_agent_proto::{
    ExitStatus, Frame, FrameKind, STDIN_WINDOW, StdinAck, TtySize, encode_json,
};
use nix::errno::Errno;
use thiserror::Error;

use super::exec::StartFailure;
use super::outgoing::{Outgoing, StreamGate};
use super::pump::OutputPump;
use super::reaper;

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("stream {0} has no running command")]
    NotRunning(u32),
    #[error("stream {0} is already running a command; use a new stream id")]
    AlreadyRunning(u32),
    #[error("stream 0 is reserved for connection messages; start commands on stream 1 or higher")]
    ReservedStream,
    #[error(
        "the command of stream {0} was started without stdin (set `stdin: true` in ExecRequest)"
    )]
    NoStdin(u32),
    #[error("the stdin of stream {0} is already closed")]
    StdinClosed(u32),
    #[error(
        "stream {stream} got {queued} bytes of stdin ahead of the command, more than {limit}; wait for StdinAck frames before sending more"
    )]
    StdinOverflow {
        stream: u32,
        queued: usize,
        limit: usize,
    },
    #[error("stream {0} has no terminal to resize (set `tty` in ExecRequest)")]
    NoTty(u32),
    #[error("resizing the terminal of stream {stream} to {rows}x{cols} failed")]
    Resize {
        stream: u32,
        rows: u16,
        cols: u16,
        #[source]
        source: io::Error,
    },
    #[error("sending signal {signal} to the process group {pgid} of stream {stream} failed")]
    Kill {
        stream: u32,
        signal: i32,
        pgid: i32,
        #[source]
        source: Errno,
    },
}

/// Session state of a running command.
struct StreamHandle {
    /// Process group id, equal to the pid of the command.
    pgid: i32,
    stdin: StdinState,
    gate: Arc<StreamGate>,
    /// Master side of the command's pseudo-terminal, when it has one.
    pty: Option<OwnedFd>,
}

enum StdinState {
    NotRequested,
    Open {
        sender: mpsc::Sender<Vec<u8>>,
        /// Bytes queued for the writer thread and not yet written.
        queued: Arc<AtomicUsize>,
    },
    Closed,
}

/// Stdin bytes a stream may have queued before the agent rejects more. A
/// host that keeps to [`STDIN_WINDOW`] stays far below it.
const MAX_QUEUED_STDIN: usize = 2 * STDIN_WINDOW;

/// The running streams of one connection, by stream id.
#[derive(Clone, Default)]
pub struct StreamTable {
    streams: Arc<Mutex<HashMap<u32, StreamHandle>>>,
}

impl StreamTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, StreamHandle>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks that `id` may start a new command.
    pub fn check_free(&self, id: u32) -> Result<(), StreamError> {
        if id == 0 {
            return Err(StreamError::ReservedStream);
        }
        if self.lock().contains_key(&id) {
            return Err(StreamError::AlreadyRunning(id));
        }
        Ok(())
    }

    /// Queues bytes for the command's standard input.
    pub fn write_stdin(&self, id: u32, bytes: Vec<u8>) -> Result<(), StreamError> {
        let streams = self.lock();
        let handle = streams.get(&id).ok_or(StreamError::NotRunning(id))?;
        match &handle.stdin {
            StdinState::Open { sender, queued } => {
                let len = bytes.len();
                let before = queued.fetch_add(len, Ordering::AcqRel);
                if before + len > MAX_QUEUED_STDIN {
                    queued.fetch_sub(len, Ordering::AcqRel);
                    return Err(StreamError::StdinOverflow {
                        stream: id,
                        queued: before + len,
                        limit: MAX_QUEUED_STDIN,
                    });
                }
                // A send error means the writer thread ended because the
                // command closed its stdin; the bytes are dropped, as a
                // pipe would drop them.
                let _ = sender.send(bytes);
                Ok(())
            }
            StdinState::NotRequested => Err(StreamError::NoStdin(id)),
            StdinState::Closed => Err(StreamError::StdinClosed(id)),
        }
    }

    /// Closes the command's standard input once the queued bytes are written.
    pub fn close_stdin(&self, id: u32) -> Result<(), StreamError> {
        let mut streams = self.lock();
        let handle = streams.get_mut(&id).ok_or(StreamError::NotRunning(id))?;
        match handle.stdin {
            StdinState::Open { .. } => {
                // Dropping the sender ends the writer thread after the queue.
                handle.stdin = StdinState::Closed;
                Ok(())
            }
            StdinState::NotRequested => Err(StreamError::NoStdin(id)),
            StdinState::Closed => Err(StreamError::StdinClosed(id)),
        }
    }

    /// Sends `signal` to the command's process group.
    pub fn signal(&self, id: u32, signal: i32) -> Result<(), StreamError> {
        let streams = self.lock();
        let handle = streams.get(&id).ok_or(StreamError::NotRunning(id))?;
        kill_group(handle.pgid, signal).map_err(|source| StreamError::Kill {
            stream: id,
            signal,
            pgid: handle.pgid,
            source,
        })
    }

    /// Changes the size of the command's pseudo-terminal.
    pub fn resize(&self, id: u32, size: TtySize) -> Result<(), StreamError> {
        let streams = self.lock();
        let handle = streams.get(&id).ok_or(StreamError::NotRunning(id))?;
        let master = handle.pty.as_ref().ok_or(StreamError::NoTty(id))?;
        super::pty::set_size(master.as_fd(), size).map_err(|source| StreamError::Resize {
            stream: id,
            rows: size.rows,
            cols: size.cols,
            source,
        })
    }

    /// Ends every stream: their frames are dropped and their process groups
    /// get SIGKILL. Returns the ids of the streams that were running.
    pub fn cancel_all(&self) -> Vec<u32> {
        let mut streams = self.lock();
        let mut ids = Vec::with_capacity(streams.len());
        for (id, handle) in streams.drain() {
            handle.gate.cancel();
            if let Err(error) = kill_group(handle.pgid, libc::SIGKILL)
                && error != Errno::ESRCH
            {
                log_line!(
                    "stream {id}: killing process group {} failed: {error}",
                    handle.pgid
                );
            }
            ids.push(id);
        }
        ids.sort_unstable();
        ids
    }
}

fn kill_group(pgid: i32, signal: i32) -> Result<(), Errno> {
    // SAFETY: kill has no memory effects. A negative pid addresses a process
    // group. The pgid is the pid of a child this agent started, so it is above
    // 1 and -pgid is never -1, which would mean every process.
    let result = unsafe { libc::kill(-pgid, signal) };
    Errno::result(result).map(drop)
}

/// Spawns `command` as stream `id` and starts the threads that serve it.
/// `program` is the name shown in error messages. `pty` is the master side
/// of the pseudo-terminal set up by [`super::pty::attach`], when the command
/// runs on one: its output then arrives as `Stdout` only, and `Stdin` bytes
/// are written to it.
pub fn start(
    id: u32,
    mut command: Command,
    program: &str,
    pty: Option<OwnedFd>,
    out: &Outgoing,
    table: &StreamTable,
) -> Result<(), StartFailure> {
    let spawn_failure = |error: io::Error| StartFailure::Spawn {
        program: program.to_owned(),
        error,
    };
    // The waiter closes the writer end when the command exited, which wakes
    // the output threads.
    let (exit_notice, exit_notifier) = io::pipe().map_err(spawn_failure)?;
    let stderr_notice = exit_notice.try_clone().map_err(spawn_failure)?;

    // Copies of a pty's master side for the stdin writer and the output pump.
    let (pty_input, pty_output) = match &pty {
        Some(master) => (
            Some(master.try_clone().map_err(spawn_failure)?),
            Some(master.try_clone().map_err(spawn_failure)?),
        ),
        None => (None, None),
    };

    let mut child = reaper::spawn_tracked(&mut command).map_err(spawn_failure)?;
    // The command holds the parent's copies of a pty's slave side; they must
    // close so that reading the master ends when the command's side closes.
    drop(command);
    let pid = child.id();
    let gate = StreamGate::new();
    log_line!("stream {id}: started {program} as pid {pid}");

    let stdin_writer: Option<Box<dyn Write + Send>> = match (pty_input, child.stdin.take()) {
        (Some(master), _) => Some(Box::new(File::from(master))),
        (None, Some(child_stdin)) => Some(Box::new(child_stdin)),
        (None, None) => None,
    };
    let stdin = match stdin_writer {
        Some(writer) => {
            let (sender, receiver) = mpsc::channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let feeder = StdinFeeder {
                stream: id,
                writer,
                receiver,
                queued: Arc::clone(&queued),
                out: out.clone(),
                gate: Arc::clone(&gate),
            };
            spawn_named(format!("stdin-{id}"), move || feeder.run());
            StdinState::Open { sender, queued }
        }
        None => StdinState::NotRequested,
    };
    table.lock().insert(
        id,
        StreamHandle {
            pgid: i32::try_from(pid).unwrap_or(i32::MAX),
            stdin,
            gate: Arc::clone(&gate),
            pty,
        },
    );

    let (done, pumps_done) = mpsc::channel();
    let outputs = [
        (
            FrameKind::Stdout,
            pty_output.or_else(|| child.stdout.take().map(OwnedFd::from)),
            exit_notice,
        ),
        (
            FrameKind::Stderr,
            child.stderr.take().map(OwnedFd::from),
            stderr_notice,
        ),
    ];
    let mut pumps = 0;
    for (kind, pipe, notice) in outputs {
        let Some(pipe) = pipe else { continue };
        let pump = OutputPump {
            kind,
            stream: id,
            pipe: File::from(pipe),
            exit_notice: notice,
            out: out.clone(),
            gate: Arc::clone(&gate),
            done: done.clone(),
        };
        spawn_named(format!("{kind:?}-{id}").to_lowercase(), move || pump.run());
        pumps += 1;
    }
    drop(done);

    let waiter = ExitWaiter {
        stream: id,
        child,
        exit_notifier,
        pumps,
        pumps_done,
        out: out.clone(),
        gate,
        table: table.clone(),
    };
    spawn_named(format!("wait-{id}"), move || waiter.run());
    Ok(())
}

fn spawn_named(name: String, work: impl FnOnce() + Send + 'static) {
    if let Err(error) = thread::Builder::new().name(name.clone()).spawn(work) {
        log_line!("starting thread {name} failed: {error}");
    }
}

/// Writes a stream's queued stdin bytes to the command and acknowledges
/// each chunk with `StdinAck`, so the host can keep to its window.
struct StdinFeeder {
    stream: u32,
    writer: Box<dyn Write + Send>,
    receiver: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    out: Outgoing,
    gate: Arc<StreamGate>,
}

impl StdinFeeder {
    fn run(mut self) {
        for bytes in &self.receiver {
            // A command that closed its standard input (EPIPE) loses the
            // bytes, as with a pipe. They are still acknowledged, so the
            // host is not left waiting.
            let written = self.writer.write_all(&bytes).is_ok();
            self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
            let ack = StdinAck {
                bytes: bytes.len() as u64,
            };
            let frame = Frame::new(FrameKind::StdinAck, self.stream, encode_json(&ack));
            self.out.send_stream_control(&self.gate, frame);
            if !written {
                self.writer = Box::new(io::sink());
            }
        }
    }
}

/// Waits for the command, then for its output, and sends `Exit`.
struct ExitWaiter {
    stream: u32,
    child: Child,
    /// Dropped when the command exited, which wakes the output pumps.
    exit_notifier: PipeWriter,
    pumps: usize,
    pumps_done: mpsc::Receiver<()>,
    out: Outgoing,
    gate: Arc<StreamGate>,
    table: StreamTable,
}

impl ExitWaiter {
    fn run(mut self) {
        let pid = self.child.id();
        let waited = self.child.wait();
        reaper::untrack(pid);
        drop(self.exit_notifier);

        for _ in 0..self.pumps {
            // An error means every pump thread has ended.
            if self.pumps_done.recv().is_err() {
                break;
            }
        }

        let status = match waited {
            Ok(status) => ExitStatus {
                code: status.code(),
                signal: status.signal(),
                error: None,
            },
            Err(error) => {
                log_line!(
                    "stream {}: waiting for pid {pid} failed: {error}",
                    self.stream
                );
                ExitStatus {
                    code: Some(1),
                    signal: None,
                    error: Some(format!(
                        "waiting for the command (pid {pid}) failed: {error}"
                    )),
                }
            }
        };
        log_line!(
            "stream {}: pid {pid} ended with code {:?}, signal {:?}",
            self.stream,
            status.code,
            status.signal
        );

        // Removing the stream and queueing its Exit under the table lock
        // keeps a concurrent Hello from seeing the stream in between.
        let mut streams = self.table.lock();
        let same_stream = streams
            .get(&self.stream)
            .is_some_and(|handle| Arc::ptr_eq(&handle.gate, &self.gate));
        if same_stream {
            streams.remove(&self.stream);
        }
        let frame = Frame::new(FrameKind::Exit, self.stream, encode_json(&status));
        self.out.send_exit(&self.gate, frame);
    }
}
