//! VMM backends for banger.
//!
//! [`Vmm`] starts and controls one VMM process per VM. [`QemuVmm`] runs QEMU
//! with machine type `microvm`, controlled over QMP ([`qmp`]), with the guest
//! agent on a virtio-serial port. [`FirecrackerVmm`] runs Firecracker,
//! controlled over its HTTP API ([`firecracker::api`]), with the guest agent
//! on vsock. [`probe::probe_accel`] and [`firecracker::probe_firecracker`]
//! check whether KVM on this host can boot a guest at all.

pub mod firecracker;
pub mod probe;
pub mod process;
pub mod qemu;
pub mod qmp;
mod signals;
mod types;
pub mod validate;
mod vmm;

use std::error::Error;
use std::fmt::Write as _;

pub use banger_process::CommandError;
pub use firecracker::FirecrackerVmm;
pub use probe::{ProbeOptions, ProbeResult, probe_accel, probe_with};
pub use qemu::QemuVmm;
pub use types::{
    Accel, BackendKind, DiskSpec, LaunchSpec, NicSpec, StopPath, VmProcess, VmRunState,
};
pub use validate::SpecError;
pub use vmm::{Vmm, VmmError};

/// Formats an error and its sources on one line, for logs and reports.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
