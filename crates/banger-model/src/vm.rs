use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::workspace::Workspace;

/// Lifecycle state of a VM.
///
/// `Creating` and `Starting` are transient: a daemon that finds a VM in one of
/// them at startup was interrupted and settles it (running if the VMM process
/// is alive, otherwise error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Error,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        }
    }

    /// States from which `vm start` may boot the VM.
    pub fn can_start(self) -> bool {
        matches!(self, VmState::Stopped | VmState::Error)
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "creating" => VmState::Creating,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "stopped" => VmState::Stopped,
            "error" => VmState::Error,
            other => return Err(format!("unknown VM state {other:?}")),
        })
    }
}

/// The resources a VM was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Size of the work disk mounted at `/root`, in bytes.
    pub disk_size_bytes: u64,
}

/// A VM as stored by the daemon and shown by the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub name: String,
    pub state: VmState,
    pub image: String,
    pub kernel: String,
    pub spec: VmSpec,
    /// VMM backend that runs the VM (`qemu` or `firecracker`).
    pub backend: String,
    /// RFC 3339 timestamps in UTC.
    pub created_at: String,
    pub updated_at: String,
    /// Cause of the `error` state.
    pub last_error: Option<String>,
    /// Backend-specific process record (pid, sockets) while the VM runs.
    pub runtime: Option<serde_json::Value>,
    /// The host repository copied into the guest by `vm workspace prepare`.
    #[serde(default)]
    pub workspace: Option<Workspace>,
}

/// A kernel in the catalog of this user's daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRecord {
    pub name: String,
    /// sha256 of the package or file it was imported from: its cache address.
    pub sha256: String,
    pub release: String,
    /// Origin: a package name or a file path.
    pub source: String,
    pub created_at: String,
}

/// A root file system image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// sha256 of the ext4 file: its cache address.
    pub sha256: String,
    pub size_bytes: u64,
    /// Origin, e.g. `mmdebstrap bookworm`.
    pub source: String,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_text() {
        for state in [
            VmState::Creating,
            VmState::Starting,
            VmState::Running,
            VmState::Stopping,
            VmState::Stopped,
            VmState::Error,
        ] {
            assert_eq!(state.as_str().parse::<VmState>(), Ok(state));
        }
        assert!("paused".parse::<VmState>().is_err());
    }
}
