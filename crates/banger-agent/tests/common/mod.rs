//! A test client for the agent protocol, speaking to `serve_connection` over
//! a Unix socket pair or to the binary over `--unix-socket`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use banger_agent::serve::{ConnectionOptions, EndOfInput, serve_connection};
use banger_agent_proto::{
    Decoder, ExecRequest, ExitStatus, Frame, FrameKind, Hello, HelloAck, ShutdownAction, StdinAck,
    decode_json, encode, encode_json,
};

/// How long a test waits for any expected frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    socket: UnixStream,
    decoder: Decoder,
    /// Frames read but not yet taken, in arrival order.
    pending: VecDeque<Frame>,
    /// Shutdown actions the agent ran, when the agent runs in this process.
    pub shutdowns: Arc<Mutex<Vec<ShutdownAction>>>,
}

/// The collected result of one exec stream.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
    /// Payload sizes of the output frames, in order.
    pub frame_sizes: Vec<usize>,
    /// Stdin bytes the agent acknowledged with `StdinAck`.
    pub stdin_acked: u64,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|arg| arg.to_string()).collect(),
        ..Default::default()
    }
}

pub fn sh(script: &str) -> ExecRequest {
    request(&["sh", "-c", script])
}

impl Client {
    /// Runs `serve_connection` on one end of a socket pair in a thread and
    /// returns a client on the other end.
    pub fn in_process() -> Self {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let shutdowns = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&shutdowns);
        let options = ConnectionOptions {
            end_of_input: EndOfInput::Close,
            shutdown: Arc::new(move |action| recorded.lock().unwrap().push(action)),
        };
        thread::spawn(move || {
            let writer = agent_end.try_clone().unwrap();
            serve_connection(agent_end, writer, &options).unwrap();
        });
        Self::from_socket(client_end, shutdowns)
    }

    pub fn from_socket(socket: UnixStream, shutdowns: Arc<Mutex<Vec<ShutdownAction>>>) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            decoder: Decoder::new(),
            pending: VecDeque::new(),
            shutdowns,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, kind: FrameKind, stream: u32, payload: Vec<u8>) {
        let bytes = encode(&Frame::new(kind, stream, payload)).unwrap();
        self.send_raw(&bytes);
    }

    pub fn send_json<T: serde::Serialize>(&mut self, kind: FrameKind, stream: u32, value: &T) {
        self.send(kind, stream, encode_json(value));
    }

    /// Sends `Hello` and returns the `HelloAck` with the same nonce,
    /// skipping any other frame before it.
    pub fn hello(&mut self, nonce: u64) -> HelloAck {
        let hello = Hello {
            nonce,
            host_version: "test".into(),
        };
        self.send_json(FrameKind::Hello, 0, &hello);
        loop {
            let frame = self.next_frame_where(|frame| frame.kind == FrameKind::HelloAck);
            let ack: HelloAck = decode_json(&frame.payload).unwrap();
            if ack.nonce == nonce {
                return ack;
            }
        }
    }

    pub fn exec(&mut self, stream: u32, request: &ExecRequest) {
        self.send_json(FrameKind::ExecStart, stream, request);
    }

    /// Collects the output of `stream` until its `Exit` frame.
    pub fn wait_exit(&mut self, stream: u32) -> Output {
        let mut output = Output::default();
        loop {
            let frame = self.next_frame_where(|frame| frame.stream == stream);
            match frame.kind {
                FrameKind::Stdout => {
                    output.frame_sizes.push(frame.payload.len());
                    output.stdout.extend(frame.payload);
                }
                FrameKind::Stderr => {
                    output.frame_sizes.push(frame.payload.len());
                    output.stderr.extend(frame.payload);
                }
                FrameKind::StdinAck => {
                    let ack: StdinAck = decode_json(&frame.payload).unwrap();
                    output.stdin_acked += ack.bytes;
                }
                FrameKind::Exit => {
                    output.status = decode_json(&frame.payload).unwrap();
                    return output;
                }
                other => panic!(
                    "unexpected {other:?} frame on stream {stream}: {}",
                    String::from_utf8_lossy(&frame.payload)
                ),
            }
        }
    }

    /// Runs a command on `stream` and waits for its exit.
    pub fn run(&mut self, stream: u32, request: &ExecRequest) -> Output {
        self.exec(stream, request);
        self.wait_exit(stream)
    }

    /// Returns the next frame that satisfies `wanted`. Other frames stay
    /// queued for later calls. Panics after [`FRAME_TIMEOUT`].
    pub fn next_frame_where(&mut self, wanted: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + FRAME_TIMEOUT;
        loop {
            if let Some(index) = self.pending.iter().position(&wanted) {
                return self.pending.remove(index).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no matching frame within {FRAME_TIMEOUT:?}; frames received: {:?}",
                self.pending
                    .iter()
                    .map(|frame| (frame.kind, frame.stream))
                    .collect::<Vec<_>>()
            );
            self.read_more();
        }
    }

    /// Reads frames for `duration` and returns those that arrived.
    pub fn frames_during(&mut self, duration: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.read_more();
        }
        self.pending.drain(..).collect()
    }

    fn read_more(&mut self) {
        let mut buffer = [0u8; 64 * 1024];
        match self.socket.read(&mut buffer) {
            Ok(0) => panic!("the agent closed the connection"),
            Ok(len) => {
                self.decoder.push(&buffer[..len]);
                while let Some(frame) = self.decoder.next_frame() {
                    self.pending.push_back(frame);
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(error) => panic!(
                "reading from the agent failed: {error} ({:?}); frames received before: {:?}",
                error.kind(),
                self.pending
                    .iter()
                    .map(|frame| (frame.kind, frame.stream))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// Bytes from a fixed xorshift sequence, so a failure can be reproduced.
pub fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}
