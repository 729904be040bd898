use thiserror::Error;

/// Bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"BNG\x01";

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 24;

/// Largest payload a frame may carry (1 MiB). Larger data is sent as several
/// frames.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Frame type. Payloads of control kinds are JSON; `Stdin`,
/// `Stdout` and `Stderr` carry raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Host to agent: opens a session (JSON `Hello`).
    Hello = 1,
    /// Agent to host: accepts a session (JSON `HelloAck`).
    HelloAck = 2,
    /// Either direction: liveness check; the peer replies `Pong` with the same payload.
    Ping = 3,
    Pong = 4,
    /// Host to agent: starts a command on a new stream (JSON `ExecRequest`).
    ExecStart = 5,
    /// Host to agent: bytes for the command's standard input.
    Stdin = 6,
    /// Host to agent: closes the command's standard input.
    StdinClose = 7,
    /// Agent to host: bytes the command wrote to standard output.
    Stdout = 8,
    /// Agent to host: bytes the command wrote to standard error.
    Stderr = 9,
    /// Agent to host: the command ended (JSON `ExitStatus`); the stream is closed.
    Exit = 10,
    /// Host to agent: deliver a signal to the command (JSON `SignalRequest`).
    Signal = 11,
    /// Host to agent: sync file systems, then power off or reboot (JSON `Shutdown`).
    Shutdown = 12,
    /// Agent to host: file systems are synced and the shutdown has begun.
    ShutdownAck = 13,
    /// Agent to host: a request could not be handled (UTF-8 message).
    Error = 14,
    /// Host to agent: the terminal of a command started with a pty changed
    /// its size (JSON `TtySize`).
    Resize = 15,
    /// Agent to host: the command's standard input took more bytes (JSON
    /// `StdinAck`); protocol 2 and later.
    StdinAck = 16,
}

impl FrameKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        use FrameKind::*;
        Some(match value {
            1 => Hello,
            2 => HelloAck,
            3 => Ping,
            4 => Pong,
            5 => ExecStart,
            6 => Stdin,
            7 => StdinClose,
            8 => Stdout,
            9 => Stderr,
            10 => Exit,
            11 => Signal,
            12 => Shutdown,
            13 => ShutdownAck,
            14 => Error,
            15 => Resize,
            16 => StdinAck,
            _ => return None,
        })
    }
}

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameKind, stream: u32, payload: Vec<u8>) -> Self {
        Self {
            kind,
            stream,
            payload,
        }
    }

    /// Creates a frame without payload.
    pub fn empty(kind: FrameKind, stream: u32) -> Self {
        Self::new(kind, stream, Vec::new())
    }
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame payload of {len} bytes exceeds the maximum of {MAX_PAYLOAD} bytes")]
    PayloadTooLarge { len: usize },
}

/// Encodes a frame into its wire form.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let len = frame.payload.len();
    if len > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge { len });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&MAGIC);
    out.push(frame.kind as u8);
    out.push(0);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&frame.stream.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let payload_crc = crc32fast::hash(&frame.payload);
    out.extend_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&out[4..20]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&frame.payload);
    Ok(out)
}

/// Incremental frame decoder that resynchronises after garbage.
///
/// Feed it bytes with [`Decoder::push`] and take complete frames with
/// [`Decoder::next_frame`]. Bytes that do not form a valid frame are dropped
/// and counted in [`Decoder::skipped`].
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    skipped: u64,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Number of bytes discarded so far because they were not part of a valid frame.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Number of bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete, valid frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            // Drop everything before the first possible magic number. A partial
            // magic at the end of the buffer is kept for the next push.
            let start = find_magic(&self.buf);
            if start > 0 {
                self.discard(start);
            }
            if self.buf.len() < HEADER_LEN {
                return None;
            }
            let header = &self.buf[..HEADER_LEN];
            let header_crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
            // The header checksum rejects a false magic at once, so garbage
            // with a plausible large length never holds back later frames.
            if crc32fast::hash(&header[4..20]) != header_crc {
                self.discard(1);
                continue;
            }
            let kind = header[4];
            let len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
            let payload_crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
            let reserved_ok = header[5] == 0 && header[6] == 0 && header[7] == 0;
            let Some(kind) = FrameKind::from_u8(kind).filter(|_| reserved_ok && len <= MAX_PAYLOAD)
            else {
                self.discard(1);
                continue;
            };
            if self.buf.len() < HEADER_LEN + len {
                return None;
            }
            let payload = &self.buf[HEADER_LEN..HEADER_LEN + len];
            if crc32fast::hash(payload) != payload_crc {
                self.discard(1);
                continue;
            }
            let stream = u32::from_le_bytes(self.buf[8..12].try_into().expect("4 bytes"));
            let payload = payload.to_vec();
            self.buf.drain(..HEADER_LEN + len);
            return Some(Frame {
                kind,
                stream,
                payload,
            });
        }
    }

    fn discard(&mut self, count: usize) {
        self.buf.drain(..count);
        self.skipped += count as u64;
    }
}

/// Offset of the first position where a magic number starts or may start
/// (a prefix of it at the end of the buffer).
fn find_magic(buf: &[u8]) -> usize {
    for start in 0..buf.len() {
        let rest = &buf[start..];
        let n = rest.len().min(MAGIC.len());
        if rest[..n] == MAGIC[..n] {
            return start;
        }
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, stream: u32, payload: &[u8]) -> Frame {
        Frame::new(kind, stream, payload.to_vec())
    }

    fn decode_all(decoder: &mut Decoder) -> Vec<Frame> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    #[test]
    fn round_trip_single_frame() {
        let original = frame(FrameKind::Stdout, 7, b"hello");
        let mut decoder = Decoder::new();
        decoder.push(&encode(&original).unwrap());
        assert_eq!(decoder.next_frame(), Some(original));
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.skipped(), 0);
    }

    #[test]
    fn byte_at_a_time_delivery() {
        let frames = vec![
            frame(FrameKind::Hello, 0, b"{}"),
            frame(FrameKind::Stderr, 3, &[0, 1, 2, 255]),
            frame(FrameKind::StdinClose, 3, b""),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            got.extend(decode_all(&mut decoder));
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn garbage_before_frame_is_skipped() {
        let original = frame(FrameKind::Pong, 0, b"42");
        let mut wire = b"login: \x00\xffBNG".to_vec();
        wire.extend(encode(&original).unwrap());
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        assert_eq!(decoder.next_frame(), Some(original));
        assert_eq!(decoder.skipped(), 12);
    }

    #[test]
    fn payload_containing_magic_is_intact() {
        let mut payload = MAGIC.to_vec();
        payload.extend(encode(&frame(FrameKind::Exit, 1, b"{}")).unwrap());
        let original = frame(FrameKind::Stdout, 1, &payload);
        let mut decoder = Decoder::new();
        decoder.push(&encode(&original).unwrap());
        assert_eq!(decoder.next_frame(), Some(original));
        assert_eq!(decoder.next_frame(), None);
    }

    #[test]
    fn corrupted_frame_is_dropped_and_next_one_found() {
        let bad = frame(FrameKind::Stdout, 1, b"first");
        let good = frame(FrameKind::Stdout, 1, b"second");
        let mut wire = encode(&bad).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 0x55;
        wire.extend(encode(&good).unwrap());
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        assert_eq!(decode_all(&mut decoder), vec![good]);
        assert!(decoder.skipped() > 0);
    }

    #[test]
    fn oversized_length_is_not_trusted() {
        let mut header = MAGIC.to_vec();
        header.push(FrameKind::Stdout as u8);
        header.extend_from_slice(&[0, 0, 0]);
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let good = frame(FrameKind::Ping, 0, b"x");
        header.extend(encode(&good).unwrap());
        let mut decoder = Decoder::new();
        decoder.push(&header);
        assert_eq!(decoder.next_frame(), Some(good));
    }

    #[test]
    fn false_header_with_large_length_does_not_stall() {
        // A header whose fields look valid but whose checksum is wrong must
        // not make the decoder wait for its claimed payload.
        let mut wire = encode(&frame(FrameKind::Stdout, 1, &vec![7u8; 100_000])).unwrap();
        wire.truncate(HEADER_LEN);
        wire[20] ^= 1;
        let good = frame(FrameKind::Pong, 0, b"x");
        wire.extend(encode(&good).unwrap());
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        assert_eq!(decoder.next_frame(), Some(good));
    }

    #[test]
    fn unknown_kind_is_skipped() {
        let good = frame(FrameKind::Ping, 0, b"");
        let mut wire = encode(&good).unwrap();
        wire[4] = 200;
        let header_crc = crc32fast::hash(&wire[4..20]);
        wire[20..24].copy_from_slice(&header_crc.to_le_bytes());
        wire.extend(encode(&good).unwrap());
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        assert_eq!(decode_all(&mut decoder), vec![good]);
    }

    #[test]
    fn payload_limit_is_enforced_on_encode() {
        let big = Frame::new(FrameKind::Stdout, 1, vec![0; MAX_PAYLOAD + 1]);
        assert!(matches!(
            encode(&big),
            Err(FrameError::PayloadTooLarge { len }) if len == MAX_PAYLOAD + 1
        ));
    }

    #[test]
    fn random_noise_never_panics() {
        // A fixed pseudo-random sequence (xorshift) keeps the test repeatable.
        let mut state: u32 = 0x9e37_79b9;
        let mut noise = Vec::with_capacity(64 * 1024);
        for _ in 0..64 * 1024 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            noise.push(state as u8);
        }
        let mut decoder = Decoder::new();
        decoder.push(&noise);
        let _ = decode_all(&mut decoder);
        let good = frame(FrameKind::HelloAck, 0, b"ready");
        decoder.push(&encode(&good).unwrap());
        assert_eq!(decoder.next_frame(), Some(good));
    }
}
