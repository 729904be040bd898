//! The single writer of outgoing frames.
//!
//! Every frame goes through one channel to one writer thread, so frames never
//! interleave on the wire. Control frames are queued without waiting, so the
//! thread that reads requests does not block on a slow host. (Only a
//! `Shutdown` request waits, up to 5 s, until its acknowledgement is written.)
//! Output frames
//! (`Stdout`, `Stderr`) wait while more than [`MAX_OUTPUT_IN_FLIGHT`] bytes are
//! queued, so a command that writes faster than the host reads is slowed down
//! through its pipe instead of filling the agent's memory.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use banger_agent_proto::{Frame, FrameError, encode};

/// Maximum output payload bytes queued for the writer at once.
pub const MAX_OUTPUT_IN_FLIGHT: usize = 1 << 20;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends frames to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Outgoing {
    queue: mpsc::Sender<Item>,
    budget: Arc<Budget>,
}

enum Item {
    Frame(QueuedFrame),
    /// Ends the writer thread; frames queued after it are dropped.
    Close,
}

struct QueuedFrame {
    frame: Frame,
    /// The exec stream the frame belongs to; the frame is dropped when that
    /// stream was cancelled after the frame was queued.
    gate: Option<Arc<StreamGate>>,
    /// Output bytes to give back to the budget once written or dropped.
    charged: usize,
    /// Receives one message once the frame was written.
    written: Option<mpsc::Sender<()>>,
}

/// Whether an exec stream may still send frames.
///
/// The lock is held while a frame is checked and queued, so once
/// [`Outgoing::send_exit`] or [`StreamGate::cancel`] returns, no further frame
/// of the stream can be queued behind it.
#[derive(Debug, Default)]
pub struct StreamGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    #[default]
    Open,
    /// The `Exit` frame was queued.
    Finished,
    /// A new session started: the stream's queued frames are dropped too.
    Cancelled,
}

impl StreamGate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Drops the stream's queued and future frames, including its `Exit`.
    pub fn cancel(&self) {
        *lock(&self.state) = GateState::Cancelled;
    }

    pub fn is_cancelled(&self) -> bool {
        *lock(&self.state) == GateState::Cancelled
    }

    /// Returns true until the stream's `Exit` was queued or it was cancelled.
    pub fn is_open(&self) -> bool {
        *lock(&self.state) == GateState::Open
    }
}

#[derive(Default)]
struct Budget {
    state: Mutex<BudgetState>,
    changed: Condvar,
}

#[derive(Default)]
struct BudgetState {
    in_flight: usize,
    /// Set when the writer stopped; waiting senders give up.
    closed: bool,
}

impl Budget {
    /// Waits until `bytes` more may be queued. Returns false when the writer
    /// has stopped. One frame is always allowed when nothing is queued, so
    /// a frame larger than the budget cannot wait forever.
    fn acquire(&self, bytes: usize) -> bool {
        let mut state = lock(&self.state);
        while !state.closed && state.in_flight > 0 && state.in_flight + bytes > MAX_OUTPUT_IN_FLIGHT
        {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return false;
        }
        state.in_flight += bytes;
        true
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut state = lock(&self.state);
        state.in_flight = state.in_flight.saturating_sub(bytes);
        self.changed.notify_all();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }
}

impl Outgoing {
    /// Starts the writer thread on `writer`.
    pub fn start(writer: impl Write + Send + 'static) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel();
        let budget = Arc::new(Budget::default());
        let thread_budget = Arc::clone(&budget);
        thread::Builder::new()
            .name("frame-writer".into())
            .spawn(move || write_frames(writer, receiver, &thread_budget))?;
        Ok(Self { queue, budget })
    }

    /// Queues a connection-level or control frame.
    pub fn send(&self, frame: Frame) {
        self.enqueue(QueuedFrame {
            frame,
            gate: None,
            charged: 0,
            written: None,
        });
    }

    /// Queues a frame and waits up to `timeout` until it was written.
    /// Returns whether it was written in time.
    pub fn send_and_wait(&self, frame: Frame, timeout: Duration) -> bool {
        let (written, done) = mpsc::channel();
        self.enqueue(QueuedFrame {
            frame,
            gate: None,
            charged: 0,
            written: Some(written),
        });
        done.recv_timeout(timeout).is_ok()
    }

    /// Queues an output frame of an exec stream, waiting for room in the
    /// output budget. The frame is dropped when the stream's gate is closed
    /// or the writer stopped.
    pub fn send_output(&self, gate: &Arc<StreamGate>, frame: Frame) {
        let charged = frame.payload.len();
        if !self.budget.acquire(charged) {
            return;
        }
        let state = lock(&gate.state);
        if *state != GateState::Open {
            drop(state);
            self.budget.release(charged);
            return;
        }
        self.enqueue(QueuedFrame {
            frame,
            gate: Some(Arc::clone(gate)),
            charged,
            written: None,
        });
    }

    /// Queues a control frame of an exec stream without waiting for the
    /// output budget. The frame is dropped when the stream's gate is closed.
    pub fn send_stream_control(&self, gate: &Arc<StreamGate>, frame: Frame) {
        let state = lock(&gate.state);
        if *state != GateState::Open {
            return;
        }
        self.enqueue(QueuedFrame {
            frame,
            gate: Some(Arc::clone(gate)),
            charged: 0,
            written: None,
        });
    }

    /// Queues the last frame of an exec stream and closes its gate. Does
    /// nothing when the stream was cancelled.
    pub fn send_exit(&self, gate: &Arc<StreamGate>, frame: Frame) {
        let mut state = lock(&gate.state);
        if *state != GateState::Open {
            return;
        }
        *state = GateState::Finished;
        self.enqueue(QueuedFrame {
            frame,
            gate: Some(Arc::clone(gate)),
            charged: 0,
            written: None,
        });
    }

    /// Stops the writer thread after the frames queued so far.
    pub fn close(&self) {
        let _ = self.queue.send(Item::Close);
    }

    fn enqueue(&self, frame: QueuedFrame) {
        if let Err(mpsc::SendError(Item::Frame(frame))) = self.queue.send(Item::Frame(frame)) {
            // The writer thread has ended; nothing can be sent any more.
            self.budget.release(frame.charged);
        }
    }
}

fn write_frames(mut writer: impl Write, receiver: mpsc::Receiver<Item>, budget: &Budget) {
    for item in receiver {
        let queued = match item {
            Item::Frame(queued) => queued,
            Item::Close => break,
        };
        let cancelled = queued.gate.as_ref().is_some_and(|gate| gate.is_cancelled());
        let result = if cancelled {
            Ok(())
        } else {
            write_frame(&mut writer, &queued.frame)
        };
        budget.release(queued.charged);
        match result {
            Ok(()) => {
                if let Some(written) = queued.written {
                    let _ = written.send(());
                }
            }
            Err(WriteError::Encode(error)) => {
                log_line!(
                    "dropping a {:?} frame of stream {}: {error}",
                    queued.frame.kind,
                    queued.frame.stream
                );
            }
            Err(WriteError::Io(error)) => {
                log_line!(
                    "writing a {:?} frame of stream {} failed: {error}; no more frames are sent on this connection",
                    queued.frame.kind,
                    queued.frame.stream
                );
                break;
            }
        }
    }
    budget.close();
}

enum WriteError {
    Encode(FrameError),
    Io(std::io::Error),
}

fn write_frame(writer: &mut impl Write, frame: &Frame) -> Result<(), WriteError> {
    let bytes = encode(frame).map_err(WriteError::Encode)?;
    writer.write_all(&bytes).map_err(WriteError::Io)?;
    writer.flush().map_err(WriteError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_agent_proto::{Decoder, FrameKind};
    use std::time::Instant;

    /// Collects written bytes. Each write waits for one permit when
    /// `permits` is set, so a test can hold the writer thread inside a write.
    struct TestWriter {
        written: Arc<Mutex<Vec<u8>>>,
        permits: Option<mpsc::Receiver<()>>,
    }

    impl Write for TestWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(permits) = &self.permits {
                permits.recv().map_err(|_| std::io::ErrorKind::BrokenPipe)?;
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Bytes written by the writer thread.
    type Written = Arc<Mutex<Vec<u8>>>;

    /// Starts a writer on a [`TestWriter`]. With `gated`, the returned
    /// sender lets each write through.
    fn start(gated: bool) -> (Outgoing, Written, Option<mpsc::Sender<()>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (permit, permits) = mpsc::channel();
        let writer = TestWriter {
            written: Arc::clone(&written),
            permits: gated.then_some(permits),
        };
        let out = Outgoing::start(writer).unwrap();
        (out, written, gated.then_some(permit))
    }

    fn frames(written: &Mutex<Vec<u8>>) -> Vec<(FrameKind, u32, Vec<u8>)> {
        let mut decoder = Decoder::new();
        decoder.push(&written.lock().unwrap());
        std::iter::from_fn(|| decoder.next_frame())
            .map(|frame| (frame.kind, frame.stream, frame.payload))
            .collect()
    }

    fn wait_for(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "condition not reached within 5 s"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn frames_are_written_in_order() {
        let (out, written, _) = start(false);
        let gate = StreamGate::new();
        out.send(Frame::new(FrameKind::Pong, 0, b"p".to_vec()));
        out.send_output(&gate, Frame::new(FrameKind::Stdout, 1, b"o".to_vec()));
        out.send_exit(&gate, Frame::new(FrameKind::Exit, 1, b"{}".to_vec()));
        assert!(out.send_and_wait(
            Frame::empty(FrameKind::ShutdownAck, 0),
            Duration::from_secs(5)
        ));
        assert_eq!(
            frames(&written),
            vec![
                (FrameKind::Pong, 0, b"p".to_vec()),
                (FrameKind::Stdout, 1, b"o".to_vec()),
                (FrameKind::Exit, 1, b"{}".to_vec()),
                (FrameKind::ShutdownAck, 0, Vec::new()),
            ]
        );
    }

    #[test]
    fn output_after_exit_is_dropped() {
        let (out, written, _) = start(false);
        let gate = StreamGate::new();
        out.send_exit(&gate, Frame::new(FrameKind::Exit, 1, b"{}".to_vec()));
        out.send_output(&gate, Frame::new(FrameKind::Stdout, 1, b"late".to_vec()));
        assert!(out.send_and_wait(Frame::empty(FrameKind::Pong, 0), Duration::from_secs(5)));
        let kinds: Vec<FrameKind> = frames(&written).into_iter().map(|f| f.0).collect();
        assert_eq!(kinds, vec![FrameKind::Exit, FrameKind::Pong]);
        assert!(!gate.is_open());
    }

    #[test]
    fn cancel_drops_already_queued_frames() {
        let (out, written, permit) = start(true);
        let permit = permit.unwrap();
        let gate = StreamGate::new();
        // The writer thread takes this frame and waits inside write().
        out.send(Frame::new(FrameKind::Pong, 0, b"first".to_vec()));
        out.send_output(&gate, Frame::new(FrameKind::Stdout, 1, b"queued".to_vec()));
        gate.cancel();
        out.send(Frame::new(FrameKind::HelloAck, 0, b"ack".to_vec()));
        for _ in 0..3 {
            permit.send(()).unwrap();
        }
        wait_for(|| frames(&written).len() == 2);
        let kinds: Vec<FrameKind> = frames(&written).into_iter().map(|f| f.0).collect();
        assert_eq!(kinds, vec![FrameKind::Pong, FrameKind::HelloAck]);
    }

    #[test]
    fn output_waits_while_budget_is_full() {
        let (out, written, permit) = start(true);
        let permit = permit.unwrap();
        let gate = StreamGate::new();
        let chunk = MAX_OUTPUT_IN_FLIGHT / 2 + 1;
        let sender = {
            let out = out.clone();
            let gate = Arc::clone(&gate);
            thread::spawn(move || {
                for _ in 0..3 {
                    out.send_output(&gate, Frame::new(FrameKind::Stdout, 1, vec![7; chunk]));
                }
            })
        };
        // Two chunks exceed the budget, so the second send waits while the
        // first frame is held inside write().
        thread::sleep(Duration::from_millis(200));
        assert!(
            !sender.is_finished(),
            "send_output did not wait for the budget"
        );
        for _ in 0..3 {
            permit.send(()).unwrap();
        }
        sender.join().unwrap();
        wait_for(|| frames(&written).len() == 3);
    }
}
