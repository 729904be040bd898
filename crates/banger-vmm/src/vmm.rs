//! The backend-neutral `Vmm` trait and its error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use banger_process::CommandError;
use thiserror::Error;
use tokio::net::UnixStream;

use crate::firecracker::{ApiError, HandshakeError};
use crate::process::{self, ProcessError};
use crate::qmp::QmpError;
use crate::types::{Accel, BackendKind, LaunchSpec, StopPath, VmProcess, VmRunState};
use crate::validate::SpecError;

/// Failure of a VMM operation.
#[derive(Debug, Error)]
pub enum VmmError {
    #[error("invalid launch spec")]
    InvalidSpec(#[from] SpecError),

    #[error(
        "QEMU binary {} not found: install it with `apt-get install qemu-system-x86` or configure the path to qemu-system-x86_64",
        binary.display()
    )]
    QemuNotFound {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "Firecracker binary {} not found: install it from https://github.com/firecracker-microvm/firecracker/releases or set firecracker_bin to its path",
        binary.display()
    )]
    FirecrackerNotFound {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "Firecracker binary {} is not an executable file: run `chmod +x` on it or set firecracker_bin to a Firecracker executable",
        binary.display()
    )]
    FirecrackerNotExecutable { binary: PathBuf },

    #[error("failed to read the version of Firecracker binary {}", binary.display())]
    FirecrackerVersion {
        binary: PathBuf,
        #[source]
        source: Box<CommandError>,
    },

    #[error(
        "`{} --version` printed {output:?}, which contains no version such as `Firecracker v1.12.1`: check that it is a Firecracker binary",
        binary.display()
    )]
    FirecrackerVersionUnknown { binary: PathBuf, output: String },

    #[error(
        "Firecracker binary {} is version {found}, older than the minimum {minimum}: install a newer release from https://github.com/firecracker-microvm/firecracker/releases or set firecracker_bin to one",
        binary.display()
    )]
    FirecrackerTooOld {
        binary: PathBuf,
        found: String,
        minimum: String,
    },

    #[error(
        "VM {vm_id} was launched with accelerator {accel}, but Firecracker runs guests only under KVM: use kvm or the QEMU backend"
    )]
    UnsupportedAccel { vm_id: String, accel: Accel },

    #[error("Firecracker failed to {action} for VM {vm_id} (VMM log {})", log.display())]
    Configure {
        vm_id: String,
        action: String,
        log: PathBuf,
        #[source]
        source: Box<ApiError>,
    },

    #[error("Firecracker API request {request} to VMM process {pid} failed")]
    Api {
        pid: u32,
        request: &'static str,
        #[source]
        source: Box<ApiError>,
    },

    #[error("failed to reach the guest agent on vsock port {port} through {}", path.display())]
    AgentHandshake {
        path: PathBuf,
        port: u32,
        #[source]
        source: Box<HandshakeError>,
    },

    #[error("failed to launch VM {vm_id}; VMM log {}: {log_tail}", log.display())]
    Launch {
        vm_id: String,
        log: PathBuf,
        log_tail: String,
        #[source]
        source: Box<CommandError>,
    },

    #[error("VMM of VM {vm_id} exited during startup; VMM log {}: {log_tail}", log.display())]
    ExitedDuringStartup {
        vm_id: String,
        log: PathBuf,
        log_tail: String,
    },

    #[error(
        "timed out after {} s waiting for {} of VM {vm_id}; VMM log {}: {log_tail}",
        timeout.as_secs_f64(), path.display(), log.display()
    )]
    StartupTimedOut {
        vm_id: String,
        path: PathBuf,
        timeout: Duration,
        log: PathBuf,
        log_tail: String,
    },

    #[error("failed to read pid file {}", path.display())]
    ReadPidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("invalid pid file {}: {content:?} is not a process id", path.display())]
    InvalidPidFile { path: PathBuf, content: String },

    #[error(
        "a VMM is already running in {} as process {pid}: stop it before launching again",
        run_dir.display()
    )]
    AlreadyRunning { run_dir: PathBuf, pid: i32 },

    #[error(
        "process {found} listens on the API socket {} instead of the Firecracker process {expected} that was just started: stop process {found}",
        socket.display()
    )]
    ForeignSocketOwner {
        socket: PathBuf,
        expected: u32,
        found: i32,
    },

    #[error("failed to inspect VMM process {pid}")]
    Process {
        pid: u32,
        #[source]
        source: ProcessError,
    },

    #[error("VMM process {pid} is not running")]
    NotRunning { pid: u32 },

    #[error("process record is for the {found} backend, but this is the {expected} backend")]
    WrongBackend {
        expected: BackendKind,
        found: BackendKind,
    },

    #[error("failed to connect to the guest agent socket {}", path.display())]
    ConnectAgent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("control request {request} to VMM process {pid} failed")]
    Control {
        pid: u32,
        request: &'static str,
        #[source]
        source: QmpError,
    },

    #[error("VMM process {pid} still exists {} s after SIGKILL", waited.as_secs_f64())]
    KillTimedOut { pid: u32, waited: Duration },

    #[error("failed to create {} with mode 0600", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to set mode 0600 on {}", path.display())]
    SetPermissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to remove {}", path.display())]
    RemoveFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Returns the error behind a missing VMM binary: the one from starting it,
/// or a `NotFound` error for a `PATH` search that found no executable file.
pub(crate) fn not_found_source(source: Option<io::Error>) -> io::Error {
    source.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no executable file of that name in any PATH directory",
        )
    })
}

/// Starts and controls VMM processes, one per VM.
///
/// A launched process outlives the caller: it runs in its own session, and a
/// restarted daemon regains control from the stored [`VmProcess`].
#[async_trait::async_trait]
pub trait Vmm: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Starts the VMM for `spec` and returns once its control and agent
    /// sockets exist.
    async fn launch(&self, spec: &LaunchSpec) -> Result<VmProcess, VmmError>;

    /// Returns whether the process exists, has the recorded start time and is
    /// not a zombie.
    fn is_running(&self, process: &VmProcess) -> bool {
        process::is_running(process.pid, process.start_time)
    }

    /// Connects to the host end of the guest agent channel.
    async fn connect_agent(&self, process: &VmProcess) -> Result<UnixStream, VmmError>;

    /// Polls until the process is gone or `timeout` passes; returns true when
    /// it is gone.
    async fn wait_exit(&self, process: &VmProcess, timeout: Duration) -> bool {
        process::wait_gone(process.pid, process.start_time, timeout).await
    }

    /// Asks the guest to shut down and returns without waiting: the ACPI
    /// power button under QEMU, Ctrl+Alt+Del under Firecracker.
    async fn request_poweroff(&self, process: &VmProcess) -> Result<(), VmmError>;

    /// Ends the process and returns which step ended it: a shutdown request
    /// to the guest with `grace` to finish (QEMU: the ACPI power button,
    /// Firecracker: Ctrl+Alt+Del), then for QEMU a control-socket quit, then
    /// SIGTERM and SIGKILL, each with a short deadline. The process is gone
    /// and its sockets are removed when this returns `Ok`.
    ///
    /// This is the fallback after the guest agent was asked to sync and power
    /// off.
    async fn stop(&self, process: &VmProcess, grace: Duration) -> Result<StopPath, VmmError>;

    /// Sends SIGKILL and waits until the process is gone.
    async fn kill(&self, process: &VmProcess) -> Result<(), VmmError>;

    /// Pauses the guest's vCPUs.
    async fn pause(&self, process: &VmProcess) -> Result<(), VmmError>;

    /// Resumes a paused guest.
    async fn resume(&self, process: &VmProcess) -> Result<(), VmmError>;

    /// Returns the guest run state as the VMM reports it.
    async fn run_state(&self, process: &VmProcess) -> Result<VmRunState, VmmError>;
}
