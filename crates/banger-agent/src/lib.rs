//! `banger-agent`, the binary banger puts inside every guest.
//!
//! It has three jobs:
//!
//! - [`initramfs`]: as `/init` of the initramfs banger generates for
//!   distribution kernels, it loads the listed kernel modules, waits for the
//!   root device, mounts it and switches root to the real init.
//! - [`serve`]: started by systemd in the root file system (or as PID 1 in
//!   images without systemd), it serves the `banger-agent-proto` protocol on a
//!   virtio-serial port (QEMU) or on vsock (Firecracker). The protocol covers
//!   the session handshake, command execution with streamed output, signals
//!   and shutdown.
//! - [`net`]: at the start of serve mode and as `banger-agent net-setup`,
//!   it configures the guest's network from `banger.*` kernel parameters.

#[macro_use]
mod log;

pub mod cli;
pub mod initramfs;
pub mod net;
pub mod process;
pub mod serve;
pub mod system;

/// Version of this agent, reported by `banger-agent version` and in `HelloAck`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use log::error_chain;
