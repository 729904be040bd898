//! The host side of the agent protocol: one connection per running VM,
//! shared by every exec stream of that VM.
//!
//! QEMU's virtio-serial chardev accepts one client at a time, so the daemon
//! keeps a single connection per VM and multiplexes streams over it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_agent_proto::{
    Decoder, Frame, FrameKind, Hello, HelloAck, Shutdown, ShutdownAction, decode_json, encode,
    encode_json,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// Frames buffered per stream before the connection's reader waits.
const STREAM_BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent did not answer before the deadline")]
    Timeout,
    #[error("the connection to the guest agent was closed")]
    Closed,
    #[error("the guest agent speaks protocol {found}, this daemon speaks {expected}")]
    Protocol { found: u32, expected: u32 },
    #[error("failed to talk to the guest agent")]
    Io(#[from] std::io::Error),
}

type Streams = Arc<Mutex<HashMap<u32, mpsc::Sender<Frame>>>>;

/// A live session with one guest's agent.
pub struct AgentConn {
    outgoing: mpsc::UnboundedSender<Frame>,
    streams: Streams,
    control: tokio::sync::Mutex<mpsc::Receiver<Frame>>,
    next_stream: AtomicU32,
    closed: Arc<AtomicBool>,
    pub info: HelloAck,
}

impl AgentConn {
    /// Opens a session on `stream`: sends `Hello` once a second until the agent
    /// answers with the same nonce or `deadline` passes.
    pub async fn handshake(stream: UnixStream, deadline: Instant) -> Result<Arc<Self>, AgentError> {
        let (mut reader, mut writer) = stream.into_split();
        let nonce: u64 = rand::random();
        let hello = encode(&Frame::new(
            FrameKind::Hello,
            0,
            encode_json(&Hello {
                nonce,
                host_version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        ))
        .expect("hello fits in a frame");

        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let info = loop {
            writer.write_all(&hello).await?;
            let resend_at = Instant::now() + Duration::from_secs(1);
            let ack = loop {
                if let Some(frame) = decoder.next_frame() {
                    if frame.kind == FrameKind::HelloAck
                        && let Ok(ack) = decode_json::<HelloAck>(&frame.payload)
                        && ack.nonce == nonce
                    {
                        break Some(ack);
                    }
                    continue;
                }
                let wait_until = resend_at.min(deadline);
                match timeout_at(wait_until, reader.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(AgentError::Closed),
                    Ok(Ok(n)) => decoder.push(&buf[..n]),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) if Instant::now() >= deadline => return Err(AgentError::Timeout),
                    Err(_) => break None,
                }
            };
            if let Some(ack) = ack {
                break ack;
            }
        };
        let supported =
            banger_agent_proto::MIN_PROTOCOL_VERSION..=banger_agent_proto::PROTOCOL_VERSION;
        if !supported.contains(&info.protocol) {
            return Err(AgentError::Protocol {
                found: info.protocol,
                expected: banger_agent_proto::PROTOCOL_VERSION,
            });
        }

        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<Frame>();
        let (control_tx, control_rx) = mpsc::channel(16);
        let streams: Streams = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        tokio::spawn(async move {
            while let Some(frame) = outgoing_rx.recv().await {
                let Ok(bytes) = encode(&frame) else { continue };
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });

        let reader_streams = streams.clone();
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                while let Some(frame) = decoder.next_frame() {
                    dispatch(frame, &reader_streams, &control_tx).await;
                }
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => decoder.push(&buf[..n]),
                }
            }
            reader_closed.store(true, Ordering::SeqCst);
            // Dropping the senders ends every stream's receiver.
            reader_streams.lock().expect("streams lock").clear();
        });

        Ok(Arc::new(Self {
            outgoing,
            streams,
            control: tokio::sync::Mutex::new(control_rx),
            next_stream: AtomicU32::new(1),
            closed,
            info,
        }))
    }

    /// Stdin bytes that may be unacknowledged on one stream, or `None` for
    /// an agent that sends no `StdinAck` (protocol 1).
    pub fn stdin_window(&self) -> Option<usize> {
        (self.info.protocol >= 2).then_some(banger_agent_proto::STDIN_WINDOW)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.outgoing.is_closed()
    }

    /// Registers a new stream and returns its id and the frames the agent sends on it.
    pub fn open_stream(&self) -> Result<(u32, mpsc::Receiver<Frame>), AgentError> {
        if self.is_closed() {
            return Err(AgentError::Closed);
        }
        let id = self.next_stream.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.streams.lock().expect("streams lock").insert(id, tx);
        Ok((id, rx))
    }

    /// Returns whether stream `id` is open.
    pub fn has_stream(&self, id: u32) -> bool {
        self.streams.lock().expect("streams lock").contains_key(&id)
    }

    /// Forgets a stream whose owner has gone.
    pub fn close_stream(&self, id: u32) {
        self.streams.lock().expect("streams lock").remove(&id);
    }

    pub fn send(&self, frame: Frame) -> Result<(), AgentError> {
        self.outgoing.send(frame).map_err(|_| AgentError::Closed)
    }

    /// Asks the guest to sync its file systems and power off; returns when the
    /// agent confirms the sync.
    pub async fn shutdown(&self, action: ShutdownAction, wait: Duration) -> Result<(), AgentError> {
        let mut control = self.control.lock().await;
        self.send(Frame::new(
            FrameKind::Shutdown,
            0,
            encode_json(&Shutdown { action }),
        ))?;
        let deadline = Instant::now() + wait;
        loop {
            match timeout_at(deadline, control.recv()).await {
                Ok(Some(frame)) if frame.kind == FrameKind::ShutdownAck => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(AgentError::Closed),
                Err(_) => return Err(AgentError::Timeout),
            }
        }
    }
}

async fn dispatch(frame: Frame, streams: &Streams, control: &mpsc::Sender<Frame>) {
    if frame.stream == 0 {
        // Connection-level replies. A caller may not be waiting for them, so a full channel drops them.
        let _ = control.try_send(frame);
        return;
    }
    let ends_stream = matches!(frame.kind, FrameKind::Exit | FrameKind::Error);
    let id = frame.stream;
    let sender = streams.lock().expect("streams lock").get(&id).cloned();
    if let Some(sender) = sender {
        // Waiting here applies backpressure to the whole connection when one
        // client reads slowly, instead of buffering without bound.
        let _ = sender.send(frame).await;
    }
    if ends_stream {
        streams.lock().expect("streams lock").remove(&id);
    }
}
