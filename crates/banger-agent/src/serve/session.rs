//! Handling of the frames the host sends on one connection.

use std::sync::Arc;
use std::time::Duration;

use banger_agent_proto::{
    ExecRequest, ExitStatus, Frame, FrameKind, Hello, HelloAck, PROTOCOL_VERSION, Shutdown,
    ShutdownAction, SignalRequest, TtySize, decode_json, encode_json,
};
use nix::unistd::sync;

use super::exec::{self, StartFailure};
use super::outgoing::Outgoing;
use super::pty;
use super::stream::{self, StreamTable};

/// Action run on a `Shutdown` request once `ShutdownAck` was sent.
pub type ShutdownHandler = Arc<dyn Fn(ShutdownAction) + Send + Sync>;

/// How long `ShutdownAck` may take to reach the host before the shutdown
/// goes ahead anyway.
const SHUTDOWN_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The state of one connection: its running streams and where frames go.
pub struct Session {
    out: Outgoing,
    streams: StreamTable,
    shutdown: ShutdownHandler,
    kernel_release: String,
}

impl Session {
    pub fn new(out: Outgoing, shutdown: ShutdownHandler, kernel_release: String) -> Self {
        Self {
            out,
            streams: StreamTable::default(),
            shutdown,
            kernel_release,
        }
    }

    /// Handles one frame from the host. Problems are reported in an
    /// `Error` frame on the frame's stream and logged.
    pub fn handle(&mut self, frame: Frame) {
        let stream = frame.stream;
        let result = match frame.kind {
            FrameKind::Hello => self.hello(&frame),
            FrameKind::Ping => {
                self.out
                    .send(Frame::new(FrameKind::Pong, stream, frame.payload));
                Ok(())
            }
            FrameKind::ExecStart => self.exec_start(&frame),
            FrameKind::Stdin => self
                .streams
                .write_stdin(stream, frame.payload)
                .map_err(|error| error.to_string()),
            FrameKind::StdinClose => self
                .streams
                .close_stdin(stream)
                .map_err(|error| error.to_string()),
            FrameKind::Signal => self.signal(&frame),
            FrameKind::Resize => self.resize(&frame),
            FrameKind::Shutdown => self.shutdown(&frame),
            FrameKind::HelloAck
            | FrameKind::Pong
            | FrameKind::Stdout
            | FrameKind::Stderr
            | FrameKind::Exit
            | FrameKind::ShutdownAck
            | FrameKind::StdinAck
            | FrameKind::Error => Err(format!(
                "unexpected {:?} frame: only the agent sends this kind",
                frame.kind
            )),
        };
        if let Err(message) = result {
            log_line!(
                "stream {stream}: rejected {:?} request: {message}",
                frame.kind
            );
            self.out
                .send(Frame::new(FrameKind::Error, stream, message.into_bytes()));
        }
    }

    /// Ends every running stream; called when the connection ends.
    pub fn end(&mut self) {
        let ended = self.streams.cancel_all();
        if !ended.is_empty() {
            log_line!("connection ended; killed the commands of streams {ended:?}");
        }
    }

    fn hello(&mut self, frame: &Frame) -> Result<(), String> {
        let hello: Hello = decode_json(&frame.payload)
            .map_err(|error| format!("invalid Hello payload: {error}"))?;
        let ended = self.streams.cancel_all();
        log_line!(
            "new session from host version {:?} (nonce {})",
            hello.host_version,
            hello.nonce
        );
        if !ended.is_empty() {
            log_line!("killed the commands of streams {ended:?} of the previous session");
        }
        let ack = HelloAck {
            nonce: hello.nonce,
            protocol: PROTOCOL_VERSION,
            agent_version: crate::VERSION.to_owned(),
            kernel_release: self.kernel_release.clone(),
        };
        self.out.send(Frame::new(
            FrameKind::HelloAck,
            frame.stream,
            encode_json(&ack),
        ));
        Ok(())
    }

    fn exec_start(&mut self, frame: &Frame) -> Result<(), String> {
        let id = frame.stream;
        let request: ExecRequest = decode_json(&frame.payload)
            .map_err(|error| format!("invalid ExecStart payload: {error}"))?;
        exec::validate(&request).map_err(|error| error.to_string())?;
        self.streams
            .check_free(id)
            .map_err(|error| error.to_string())?;

        let program = request.argv[0].clone();
        let started = exec::build_command(&request).and_then(|mut command| {
            let pty = match request.tty {
                Some(size) => Some(attach_pty(&mut command, size, &program)?),
                None => None,
            };
            stream::start(id, command, &program, pty, &self.out, &self.streams)
        });
        if let Err(failure) = started {
            self.report_start_failure(id, &failure);
        }
        Ok(())
    }

    /// Reports a command that could not start as a shell would: a line on
    /// its standard error, then `Exit` with code 127 or 126.
    fn report_start_failure(&self, id: u32, failure: &StartFailure) {
        let line = failure.stderr_line();
        log_line!("stream {id}: command did not start: {}", failure.message());
        let stderr = Frame::new(FrameKind::Stderr, id, format!("{line}\n").into_bytes());
        self.out.send(stderr);
        let status = ExitStatus {
            code: Some(failure.exit_code()),
            signal: None,
            error: Some(line),
        };
        self.out
            .send(Frame::new(FrameKind::Exit, id, encode_json(&status)));
    }

    fn signal(&mut self, frame: &Frame) -> Result<(), String> {
        let request: SignalRequest = decode_json(&frame.payload)
            .map_err(|error| format!("invalid Signal payload: {error}"))?;
        if request.signal <= 0 {
            return Err(format!(
                "invalid signal number {}: expected a positive number such as 15 (SIGTERM)",
                request.signal
            ));
        }
        self.streams
            .signal(frame.stream, request.signal)
            .map_err(|error| crate::error_chain(&error))?;
        log_line!("stream {}: sent signal {}", frame.stream, request.signal);
        Ok(())
    }

    fn resize(&self, frame: &Frame) -> Result<(), String> {
        let size: TtySize = decode_json(&frame.payload)
            .map_err(|error| format!("invalid Resize payload: {error}"))?;
        self.streams
            .resize(frame.stream, size)
            .map_err(|error| crate::error_chain(&error))
    }

    fn shutdown(&mut self, frame: &Frame) -> Result<(), String> {
        let request: Shutdown = decode_json(&frame.payload)
            .map_err(|error| format!("invalid Shutdown payload: {error}"))?;
        log_line!(
            "shutdown requested: {:?}; syncing file systems",
            request.action
        );
        sync();
        let ack = Frame::empty(FrameKind::ShutdownAck, frame.stream);
        if !self.out.send_and_wait(ack, SHUTDOWN_ACK_TIMEOUT) {
            log_line!(
                "ShutdownAck was not written within {SHUTDOWN_ACK_TIMEOUT:?}; shutting down anyway"
            );
        }
        (self.shutdown)(request.action);
        Ok(())
    }
}

/// Puts `command` on a new pseudo-terminal; a failure is reported like a
/// failed spawn of `program`.
fn attach_pty(
    command: &mut std::process::Command,
    size: TtySize,
    program: &str,
) -> Result<std::os::fd::OwnedFd, StartFailure> {
    pty::attach(command, size).map_err(|error| StartFailure::Spawn {
        program: program.to_owned(),
        error,
    })
}
