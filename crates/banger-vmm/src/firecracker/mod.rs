//! Firecracker backend: one `firecracker` process per VM, configured and
//! controlled over its HTTP API on a Unix socket, with the guest agent on
//! vsock and the serial console on Firecracker's standard output.

pub mod api;
mod binary;
mod control;
mod launch;
pub mod probe;
mod rundir;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::types::{BackendKind, LaunchSpec, StopPath, VmProcess, VmRunState};
use crate::vmm::{Vmm, VmmError};

pub use api::{ApiClient, ApiError};
pub use binary::{
    FirecrackerVersion, MIN_VERSION, check_version, format_version, parse_version, resolve_binary,
    version,
};
pub use launch::{boot_args, firecracker_args, instance_id};
pub use probe::{FirecrackerProbeOptions, probe_firecracker};
pub use vsock::HandshakeError;

/// API socket name inside the run directory.
pub const API_SOCKET: &str = "fc.sock";
/// Host end of the guest's vsock device inside the run directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// Firecracker's own log (`PUT /logger`) inside the run directory, truncated
/// at each launch.
pub const LOG_FILE: &str = "vmm.log";
/// Firecracker's standard error inside the run directory, truncated at each
/// launch. Firecracker writes the reason it exited there.
pub const STDERR_FILE: &str = "stderr.log";
/// Metrics file (`PUT /metrics`) inside the run directory, truncated at each
/// launch.
pub const METRICS_FILE: &str = "metrics.json";

/// Context id of the guest on its vsock device. Ids 0 to 2 are reserved for
/// the hypervisor, the local loopback and the host.
pub const GUEST_CID: u32 = 3;

/// Arguments that the backend puts before the caller's kernel command line.
/// `console=ttyS0` puts the console on the serial port. `reboot=k` reboots
/// through the keyboard controller, and Firecracker exits when the guest
/// resets. `panic=1` reboots one second after a panic. `pci=off` skips PCI
/// probing, because Firecracker attaches its devices over virtio-mmio.
pub const CONSOLE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Default program name, looked up on `PATH`.
pub const DEFAULT_BINARY: &str = "firecracker";

/// Paths of the per-VM files inside the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub api_socket: PathBuf,
    pub vsock_socket: PathBuf,
    pub log: PathBuf,
    pub stderr: PathBuf,
    pub metrics: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path) -> Self {
        RunPaths {
            api_socket: run_dir.join(API_SOCKET),
            vsock_socket: run_dir.join(VSOCK_SOCKET),
            log: run_dir.join(LOG_FILE),
            stderr: run_dir.join(STDERR_FILE),
            metrics: run_dir.join(METRICS_FILE),
        }
    }
}

/// Firecracker backend.
#[derive(Debug, Clone)]
pub struct FirecrackerVmm {
    /// Firecracker program: a path, or a name looked up on `PATH`.
    pub binary: PathBuf,
    /// Deadline for Firecracker to create its API socket and for the whole
    /// configuration up to `InstanceStart`.
    pub startup_timeout: Duration,
    /// Deadline for each API request, for the vsock handshake and for each
    /// step of the stop sequence after the Ctrl+Alt+Del grace period.
    pub step_timeout: Duration,
    /// vsock port the guest agent listens on.
    pub agent_port: u32,
}

impl Default for FirecrackerVmm {
    fn default() -> Self {
        FirecrackerVmm::new(DEFAULT_BINARY)
    }
}

impl FirecrackerVmm {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        FirecrackerVmm {
            binary: binary.into(),
            startup_timeout: Duration::from_secs(15),
            step_timeout: Duration::from_secs(5),
            agent_port: banger_agent_proto::VSOCK_PORT,
        }
    }

    /// Finds `firecracker` on `PATH`.
    pub fn locate() -> Result<Self, VmmError> {
        resolve_binary(Path::new(DEFAULT_BINARY)).map(FirecrackerVmm::new)
    }

    /// Returns the version of [`FirecrackerVmm::binary`].
    pub async fn version(&self) -> Result<FirecrackerVersion, VmmError> {
        version(&self.binary).await
    }

    fn api(&self, process: &VmProcess) -> ApiClient {
        ApiClient::new(&process.control_socket, self.step_timeout)
    }

    fn check_backend(&self, process: &VmProcess) -> Result<(), VmmError> {
        if process.backend != BackendKind::Firecracker {
            return Err(VmmError::WrongBackend {
                expected: BackendKind::Firecracker,
                found: process.backend,
            });
        }
        Ok(())
    }

    fn check_running(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_backend(process)?;
        if !self.is_running(process) {
            return Err(VmmError::NotRunning { pid: process.pid });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Vmm for FirecrackerVmm {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<VmProcess, VmmError> {
        launch::launch(self, spec).await
    }

    /// Connects to the vsock socket and completes Firecracker's `CONNECT`
    /// handshake for the agent port. Fails at once while no guest program
    /// listens on that port, so callers retry until the agent is up.
    async fn connect_agent(&self, process: &VmProcess) -> Result<UnixStream, VmmError> {
        self.check_running(process)?;
        vsock::connect(&process.agent_socket, self.agent_port, self.step_timeout)
            .await
            .map_err(|source| VmmError::AgentHandshake {
                path: process.agent_socket.clone(),
                port: self.agent_port,
                source: Box::new(source),
            })
    }

    async fn request_poweroff(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_running(process)?;
        control::send_ctrl_alt_del(self, process).await
    }

    async fn stop(&self, process: &VmProcess, grace: Duration) -> Result<StopPath, VmmError> {
        self.check_backend(process)?;
        control::stop(self, process, grace).await
    }

    async fn kill(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_backend(process)?;
        control::kill(self, process).await
    }

    async fn pause(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_running(process)?;
        control::set_state(self, process, api::VmState::Paused).await
    }

    async fn resume(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_running(process)?;
        control::set_state(self, process, api::VmState::Resumed).await
    }

    async fn run_state(&self, process: &VmProcess) -> Result<VmRunState, VmmError> {
        self.check_running(process)?;
        control::run_state(self, process).await
    }
}
