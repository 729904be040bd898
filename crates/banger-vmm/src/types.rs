//! Backend-neutral descriptions of a VM to launch and of a running VMM process.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// VMM implementation that runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Qemu,
    Firecracker,
}

impl BackendKind {
    /// Lowercase name, as used in configuration and serialized records.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Firecracker => "firecracker",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CPU accelerator: hardware virtualization (KVM) or QEMU's software emulation (TCG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// Lowercase name, as QEMU's `-accel` option spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Raw disk image attached to the guest as a virtio block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Guest network interface backed by an existing host tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// Host tap device name, at most 15 bytes (`IFNAMSIZ` minus the NUL).
    pub tap: String,
    /// Guest MAC address as six colon-separated hex octets, unicast.
    pub mac: String,
}

/// Everything a backend needs to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// VM identifier: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
    pub vm_id: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Kernel image: a bzImage for QEMU, an ELF `vmlinux` for Firecracker.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the backend prepends its own console arguments.
    pub cmdline: String,
    /// Disks in guest order; the first one is the root disk (`/dev/vda`).
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    /// Per-VM directory for sockets, pid file and VMM log. The caller creates it
    /// with mode 0700, and launch rejects a directory open to group or others.
    pub run_dir: PathBuf,
    /// File that receives the guest serial console, appended to.
    pub console_log: PathBuf,
    pub accel: Accel,
}

/// Handle on a launched VMM process, stored by the daemon so that a restarted
/// daemon can find the process again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmProcess {
    pub backend: BackendKind,
    pub pid: u32,
    /// Start time of the process in clock ticks after boot (field 22 of
    /// `/proc/<pid>/stat`), so that a reused pid is not mistaken for this VMM.
    pub start_time: u64,
    /// Control socket: QMP for QEMU, the API socket for Firecracker.
    pub control_socket: PathBuf,
    /// Host end of the guest agent channel: the virtio-serial chardev socket for
    /// QEMU, the vsock Unix socket for Firecracker.
    pub agent_socket: PathBuf,
    /// Per-VM directory the process was launched with.
    pub run_dir: PathBuf,
    /// Accelerator QEMU was started with; `None` for Firecracker, which
    /// always uses KVM.
    pub accel: Option<Accel>,
}

/// Step of the stop sequence that ended the VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopPath {
    /// The guest powered off after the ACPI power button event.
    Acpi,
    /// The guest rebooted after Ctrl+Alt+Del, which ends Firecracker.
    CtrlAltDel,
    /// The VMM quit on a control-socket request (QMP `quit`).
    ControlQuit,
    Sigterm,
    Sigkill,
    /// The process was already gone when the stop began.
    AlreadyExited,
}

impl fmt::Display for StopPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            StopPath::Acpi => "ACPI power button",
            StopPath::CtrlAltDel => "Ctrl+Alt+Del",
            StopPath::ControlQuit => "control socket quit",
            StopPath::Sigterm => "SIGTERM",
            StopPath::Sigkill => "SIGKILL",
            StopPath::AlreadyExited => "already exited",
        };
        f.write_str(name)
    }
}

/// Run state of the guest as the VMM reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmRunState {
    Running,
    Paused,
    /// Any other state, in the backend's own word (QEMU: `internal-error`,
    /// `guest-panicked`, `shutdown` and others).
    Other(String),
}
