//! Request and response bodies of the Firecracker API, as the OpenAPI
//! description in Firecracker's repository (`firecracker.yaml`) defines them,
//! checked against Firecracker v1.12.1. Firecracker rejects unknown fields,
//! so the structs carry only the fields banger sets.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `PUT /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
}

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    /// Uncompressed ELF kernel (`vmlinux`).
    pub kernel_image_path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    pub boot_args: String,
}

/// Host-side caching of a drive. `Unsafe`, Firecracker's default, ignores the
/// guest's flush requests, and `Writeback` passes them on as `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// `PUT /drives/{drive_id}`: a virtio block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    pub is_root_device: bool,
    pub is_read_only: bool,
    pub cache_type: CacheType,
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device on a host tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// `PUT /vsock`: a virtio-vsock device whose host side is a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// Minimum severity of the lines Firecracker writes to its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `PUT /logger`. The file must exist: Firecracker opens it without creating it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logger {
    pub log_path: PathBuf,
    pub level: LogLevel,
}

/// `PUT /metrics`. The file must exist: Firecracker opens it without creating
/// it, and appends one JSON object per line at each flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

/// Action of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    /// Boots the configured microVM.
    InstanceStart,
    /// Sends Ctrl+Alt+Del through the emulated i8042 keyboard controller.
    SendCtrlAltDel,
    /// Appends the current metrics to the metrics file.
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InstanceAction {
    pub action_type: ActionType,
}

/// Requested state of `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmStateUpdate {
    pub state: VmState,
}

/// `GET /` response.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceInfo {
    /// Instance id given with `--id`.
    pub id: String,
    /// `Not started`, `Running` or `Paused` (Firecracker 1.12).
    pub state: String,
    pub vmm_version: String,
    #[serde(default)]
    pub app_name: String,
}

/// Error body of a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Fault {
    pub fault_message: String,
}
