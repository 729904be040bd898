//! The protocol between the host (bangerd) and `banger-agent` in the guest.
//!
//! Both ends exchange frames over one byte stream: a virtio-serial port under
//! QEMU, or a vsock connection under Firecracker. A virtio-serial port keeps
//! whatever the guest wrote while no host was connected, and a reconnecting
//! host may start reading in the middle of a frame, so the framing is built to
//! resynchronise: every frame starts with a magic number, and carries one
//! CRC-32 over its header and another over its payload. A reader that finds
//! garbage skips forward to the next magic number whose frame checks out.
//!
//! Frame layout, all integers little-endian (24-byte header):
//!
//! ```text
//! magic  [u8; 4]  b"BNG\x01"
//! kind   u8       FrameKind
//! flags  u8       0 (reserved)
//! _      u16      0 (reserved)
//! stream u32      exec stream id, 0 for connection-level messages
//! len    u32      payload length, at most MAX_PAYLOAD
//! pcrc   u32      CRC-32 (IEEE) of the payload
//! hcrc   u32      CRC-32 (IEEE) of header bytes 4..20
//! ```
//!
//! Several exec streams share one connection. A new `Hello` starts a new
//! session: the agent ends the streams of the previous one.

mod frame;
mod messages;

pub use frame::{Decoder, Frame, FrameError, FrameKind, HEADER_LEN, MAGIC, MAX_PAYLOAD, encode};
pub use messages::{
    ExecRequest, ExitStatus, Hello, HelloAck, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, STDIN_WINDOW,
    Shutdown, ShutdownAction, SignalRequest, StdinAck, TtySize, decode_json, encode_json,
};

/// Name of the virtio-serial port the agent listens on under QEMU.
pub const SERIAL_PORT_NAME: &str = "banger.agent";

/// vsock port the agent listens on under Firecracker.
pub const VSOCK_PORT: u32 = 10_789;

/// Exit code reported when the command could not be found in the guest,
/// matching the shell convention.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Exit code reported when the command was found but could not be started.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
