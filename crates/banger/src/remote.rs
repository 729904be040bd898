//! Running a command in a guest through the daemon's exec route, with the
//! working directory, environment, standard input, output handling and
//! pseudo-terminal chosen by the caller.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use banger_agent_proto::{
    Decoder, ExecRequest, ExitStatus, Frame, FrameKind, SignalRequest, TtySize, decode_json,
    encode, encode_json,
};
use banger_api::{ErrorBody, ErrorKind};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::{Client, error_from};
use crate::render::CliError;
use crate::terminal::RawMode;

/// Bytes read from this process's standard input per `Stdin` frame.
const STDIN_CHUNK: usize = 64 * 1024;
/// Frames queued for the connection before senders wait.
const FRAME_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the exec connection to the daemon failed")]
    Connection(#[source] std::io::Error),
    #[error("the daemon did not switch the connection to the exec protocol")]
    Upgrade(#[source] hyper::Error),
    #[error("the guest agent sent an invalid exit status")]
    InvalidExit(#[source] serde_json::Error),
    #[error("the command failed in the guest: {0}")]
    Guest(String),
    #[error("the daemon closed the exec connection before the command ended")]
    ClosedEarly,
    #[error("failed to write the command's output to {stream}")]
    Write {
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to put the terminal in raw mode")]
    RawMode(#[source] std::io::Error),
}

/// A command for the guest.
#[derive(Debug, Clone, Default)]
pub struct RemoteCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory; the daemon uses `/root` when unset.
    pub cwd: Option<String>,
    /// Runs the command on a pseudo-terminal of this size.
    pub tty: Option<TtySize>,
}

/// Source of the command's standard input.
pub enum Input {
    /// `/dev/null` (or nothing, on a pty).
    Null,
    /// This process's standard input. On a pty with a local terminal, the
    /// terminal is in raw mode while the command runs.
    Inherit,
    /// Chunks from another task; standard input closes after the last one.
    Chunks(mpsc::Receiver<Vec<u8>>),
}

/// Destination of the command's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Written to this process's standard output and error as it arrives.
    Inherit,
    /// Kept and returned in [`Finished`].
    Capture,
}

/// Exit status of the command, and its output when it was captured.
#[derive(Debug, Default)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Turns an error and its causes into the CLI's error shape.
pub fn cli_error(kind: ErrorKind, error: &(dyn std::error::Error + 'static)) -> CliError {
    CliError::Local(ErrorBody::from_error(kind, error))
}

/// Runs `command` in VM `vm` and returns how it ended. SIGINT, SIGTERM and
/// SIGHUP of this process are forwarded to the command, and with a pty
/// SIGWINCH becomes a `Resize` frame.
pub async fn run(
    client: &Client,
    vm: &str,
    command: RemoteCommand,
    input: Input,
    output: Output,
) -> Result<Finished, CliError> {
    let response = client
        .send(
            Method::POST,
            &format!("/vms/{vm}/exec"),
            None,
            Some(banger_api::EXEC_UPGRADE),
        )
        .await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(error_from(response).await);
    }
    // Signals go through their own route when the daemon names the stream
    // (daemons before that route do not), so they do not wait behind stdin.
    let signal_route = response
        .headers()
        .get(banger_api::EXEC_STREAM_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u32>().ok())
        .map(|stream| SignalRoute {
            client: Client {
                paths: client.paths.clone(),
            },
            path: format!("/vms/{vm}/exec/{stream}/signal"),
        });
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| cli_error(ErrorKind::Internal, &RemoteError::Upgrade(e)))?;
    let (mut rx, mut tx) = tokio::io::split(TokioIo::new(upgraded));

    let tty = command.tty.is_some();
    let raw_mode = if tty && matches!(input, Input::Inherit) && std::io::stdin().is_terminal() {
        let guard = RawMode::enable(std::io::stdin().as_fd())
            .map_err(|e| cli_error(ErrorKind::Internal, &RemoteError::RawMode(e)))?;
        Some(guard)
    } else {
        None
    };
    let request = ExecRequest {
        argv: command.argv,
        env: command.env,
        cwd: command.cwd,
        stdin: !matches!(input, Input::Null),
        tty: command.tty,
    };
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(FRAME_QUEUE);
    let writer = tokio::spawn(async move {
        let start = Frame::new(FrameKind::ExecStart, 0, encode_json(&request));
        let Ok(bytes) = encode(&start) else { return };
        if tx.write_all(&bytes).await.is_err() {
            return;
        }
        while let Some(frame) = frames_rx.recv().await {
            let Ok(bytes) = encode(&frame) else { continue };
            if tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut helpers = Vec::new();
    match input {
        Input::Null => {}
        Input::Inherit => spawn_stdin_thread(frames_tx.clone(), !tty),
        Input::Chunks(chunks) => {
            helpers.push(tokio::spawn(forward_chunks(chunks, frames_tx.clone())))
        }
    }
    helpers.extend(spawn_signal_forwarding(&frames_tx, signal_route, tty));
    drop(frames_tx);

    let result = receive(&mut rx, output).await;
    writer.abort();
    for helper in helpers {
        helper.abort();
    }
    drop(raw_mode);
    result.map_err(|e| cli_error(ErrorKind::Internal, &e))
}

/// Reads frames until `Exit`, writing or keeping the output.
async fn receive(
    rx: &mut (impl tokio::io::AsyncRead + Unpin),
    output: Output,
) -> Result<Finished, RemoteError> {
    let mut finished = Finished::default();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout_open = true;
    loop {
        while let Some(frame) = decoder.next_frame() {
            match (frame.kind, output) {
                (FrameKind::Stdout, Output::Capture) => finished.stdout.extend(frame.payload),
                (FrameKind::Stderr, Output::Capture) => finished.stderr.extend(frame.payload),
                (FrameKind::Stdout, Output::Inherit) if stdout_open => {
                    let mut stdout = std::io::stdout().lock();
                    match stdout
                        .write_all(&frame.payload)
                        .and_then(|()| stdout.flush())
                    {
                        Ok(()) => {}
                        // A closed pipe (`| head`) drops the rest quietly,
                        // as a shell pipeline would.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            stdout_open = false;
                        }
                        Err(source) => {
                            return Err(RemoteError::Write {
                                stream: "stdout",
                                source,
                            });
                        }
                    }
                }
                (FrameKind::Stderr, Output::Inherit) => {
                    let mut stderr = std::io::stderr().lock();
                    let _ = stderr.write_all(&frame.payload);
                    let _ = stderr.flush();
                }
                (FrameKind::Exit, _) => {
                    finished.status =
                        decode_json(&frame.payload).map_err(RemoteError::InvalidExit)?;
                    return Ok(finished);
                }
                (FrameKind::Error, _) => {
                    return Err(RemoteError::Guest(
                        String::from_utf8_lossy(&frame.payload).into_owned(),
                    ));
                }
                _ => {}
            }
        }
        let n = rx.read(&mut buf).await.map_err(RemoteError::Connection)?;
        if n == 0 {
            return Err(RemoteError::ClosedEarly);
        }
        decoder.push(&buf[..n]);
    }
}

async fn forward_chunks(mut chunks: mpsc::Receiver<Vec<u8>>, frames: mpsc::Sender<Frame>) {
    while let Some(chunk) = chunks.recv().await {
        if frames
            .send(Frame::new(FrameKind::Stdin, 0, chunk))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = frames.send(Frame::empty(FrameKind::StdinClose, 0)).await;
}

/// Forwards this process's standard input from a plain thread: a read
/// that waits on a terminal must not keep the async runtime from shutting
/// down when the command has ended. `close` sends `StdinClose` at end of
/// input; a pty has no such thing.
fn spawn_stdin_thread(frames: mpsc::Sender<Frame>, close: bool) {
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                    Ok(n) => {
                        let frame = Frame::new(FrameKind::Stdin, 0, buf[..n].to_vec());
                        if frames.blocking_send(frame).is_err() {
                            return;
                        }
                    }
                }
            }
            if close {
                let _ = frames.blocking_send(Frame::empty(FrameKind::StdinClose, 0));
            }
        });
    if let Err(error) = spawned {
        eprintln!("warning: standard input is not forwarded: starting its thread failed: {error}");
    }
}

/// The daemon route that delivers signals to one exec stream.
struct SignalRoute {
    client: Client,
    path: String,
}

/// Forwards Ctrl-C, SIGTERM and SIGHUP to the guest command instead of
/// leaving it running when the CLI dies, and window size changes to its pty.
/// Signals take `route` when there is one, else the exec connection.
fn spawn_signal_forwarding(
    frames: &mpsc::Sender<Frame>,
    route: Option<SignalRoute>,
    tty: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let route = route.map(Arc::new);
    use tokio::signal::unix::{SignalKind, signal};
    let mut tasks = Vec::new();
    for (kind, number) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let frames = frames.clone();
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let request = SignalRequest { signal: number };
                if let Some(route) = &route {
                    let sent: Result<(), CliError> = route
                        .client
                        .request(Method::POST, &route.path, Some(&request))
                        .await;
                    // When the route fails (the command may have ended
                    // meanwhile), the exec connection carries the signal.
                    if sent.is_ok() {
                        continue;
                    }
                }
                let frame = Frame::new(FrameKind::Signal, 0, encode_json(&request));
                if frames.send(frame).await.is_err() {
                    break;
                }
            }
        }));
    }
    if tty && let Ok(mut stream) = signal(SignalKind::window_change()) {
        let frames = frames.clone();
        tasks.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let Some(size) = crate::terminal::window_size() else {
                    continue;
                };
                let frame = Frame::new(FrameKind::Resize, 0, encode_json(&size));
                if frames.send(frame).await.is_err() {
                    break;
                }
            }
        }));
    }
    tasks
}
