//! QEMU backend: machine type `microvm`, controlled over QMP, with the guest
//! agent on a virtio-serial port bound to a Unix socket.

mod args;
mod control;
mod launch;
mod pidfile;
mod tsc;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::types::{BackendKind, LaunchSpec, StopPath, VmProcess, VmRunState};
use crate::vmm::{Vmm, VmmError};

pub use args::{CONSOLE_CMDLINE, MACHINE, RunPaths, accel_args, full_cmdline, qemu_args};
pub(crate) use launch::read_log_tail;
pub use tsc::host_tsc_khz;

/// QMP socket name inside the run directory.
pub const QMP_SOCKET: &str = "qmp.sock";
/// Guest agent chardev socket name inside the run directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// Pid file name inside the run directory; QEMU holds a lock on it while it runs.
pub const PID_FILE: &str = "qemu.pid";
/// VMM log name inside the run directory; QEMU truncates it at each launch.
pub const LOG_FILE: &str = "vmm.log";

/// Default program name, looked up on `PATH`.
pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";

/// QEMU `microvm` backend.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    /// QEMU program: a path, or a name looked up on `PATH`.
    pub binary: PathBuf,
    /// Deadline for QEMU to daemonize and create its sockets.
    pub startup_timeout: Duration,
    /// Deadline for each QMP request and for each step of the stop sequence
    /// after the ACPI grace period.
    pub step_timeout: Duration,
}

impl Default for QemuVmm {
    fn default() -> Self {
        QemuVmm::new(DEFAULT_BINARY)
    }
}

impl QemuVmm {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        QemuVmm {
            binary: binary.into(),
            startup_timeout: Duration::from_secs(15),
            step_timeout: Duration::from_secs(5),
        }
    }

    /// Finds `qemu-system-x86_64` on `PATH`.
    pub fn locate() -> Result<Self, VmmError> {
        find_on_path(DEFAULT_BINARY)
            .map(QemuVmm::new)
            .ok_or_else(|| VmmError::QemuNotFound {
                binary: PathBuf::from(DEFAULT_BINARY),
                source: crate::vmm::not_found_source(None),
            })
    }

    fn check_backend(&self, process: &VmProcess) -> Result<(), VmmError> {
        if process.backend != BackendKind::Qemu {
            return Err(VmmError::WrongBackend {
                expected: BackendKind::Qemu,
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

/// Returns the first executable file called `name` in the `PATH` directories.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    banger_process::find_in_path(name, std::env::var_os("PATH").as_deref())
}

#[async_trait::async_trait]
impl Vmm for QemuVmm {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<VmProcess, VmmError> {
        launch::launch(self, spec).await
    }

    async fn connect_agent(&self, process: &VmProcess) -> Result<UnixStream, VmmError> {
        self.check_running(process)?;
        connect_unix(&process.agent_socket, self.step_timeout)
            .await
            .map_err(|source| VmmError::ConnectAgent {
                path: process.agent_socket.clone(),
                source,
            })
    }

    async fn request_poweroff(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_running(process)?;
        control::execute(self, process, "system_powerdown").await
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
        control::execute(self, process, "stop").await
    }

    async fn resume(&self, process: &VmProcess) -> Result<(), VmmError> {
        self.check_running(process)?;
        control::execute(self, process, "cont").await
    }

    async fn run_state(&self, process: &VmProcess) -> Result<VmRunState, VmmError> {
        self.check_running(process)?;
        control::run_state(self, process).await
    }
}

/// Connects to a Unix socket with a deadline.
///
/// QEMU serves one client per chardev socket at a time: a second connection
/// is accepted by the kernel but stays silent until the first one closes.
async fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {} s", timeout.as_secs_f64()),
        )),
    }
}
