//! The bangerd HTTP/JSON API, shared by the daemon and the CLI.
//!
//! Routes (all under `/v1`, on the daemon's Unix socket):
//!
//! | method and path               | body                 | answer                      |
//! |-------------------------------|----------------------|-----------------------------|
//! | `GET /health`                 |                      | [`Health`]                  |
//! | `GET /defaults`               |                      | [`Defaults`]                |
//! | `GET /doctor`                 |                      | `Vec<DoctorCheck>`          |
//! | `POST /shutdown`              |                      | 204                         |
//! | `GET /vms`                    |                      | `Vec<VmRecord>`             |
//! | `GET /vms/{name}`             |                      | `VmRecord`                  |
//! | `POST /vms`                   | [`CreateVmRequest`]  | event stream, `VmRecord`    |
//! | `POST /vms/{name}/start`      |                      | event stream, `VmRecord`    |
//! | `POST /vms/{name}/stop`       |                      | event stream, `VmRecord`    |
//! | `POST /vms/{name}/restart`    |                      | event stream, `VmRecord`    |
//! | `PATCH /vms/{name}`           | [`SetVmRequest`]     | `VmRecord`                  |
//! | `GET /vms/{name}/stats`       |                      | [`VmStats`]                 |
//! | `DELETE /vms/{name}`          |                      | event stream, `VmRecord`    |
//! | `POST /vms/{name}/kill`       |                      | event stream, `VmRecord`    |
//! | `POST /vms/{name}/exec`       | upgrade `banger-exec`| agent frames both ways      |
//! | `GET /vms/{name}/logs?follow=`|                      | console bytes               |
//! | `PUT /vms/{name}/workspace`   | `Workspace`          | `VmRecord`                  |
//! | `GET /kernels`                |                      | `Vec<KernelRecord>`         |
//! | `POST /kernels/import`        | [`ImportKernelRequest`] | event stream, `KernelRecord` |
//! | `POST /kernels/pull`          | [`PullKernelRequest`]| event stream, `KernelRecord`|
//! | `DELETE /kernels/{name}`      |                      | 204                         |
//! | `GET /images`                 |                      | `Vec<ImageRecord>`          |
//! | `POST /images/build`          | [`BuildImageRequest`]| event stream, `ImageRecord` |
//! | `DELETE /images/{name}`       |                      | 204                         |
//!
//! Long operations answer 200 with an event stream: one JSON [`Event`] per
//! line, ending with `done` or `error`. Failures before the stream starts are
//! an HTTP error status with an [`ErrorBody`].
//!
//! `exec` upgrades the connection (`Upgrade: banger-exec`); both sides then
//! exchange `banger-agent-proto` frames: the client sends one `ExecStart`,
//! optional `Stdin`/`StdinClose`/`Signal`/`Resize`, and receives `Stdout`, `Stderr` and
//! a final `Exit` or `Error`.

pub mod network;
pub mod paths;
pub mod units;

use serde::{Deserialize, Serialize};

pub use banger_model::{ImageRecord, KernelRecord, VmRecord, VmSpec, VmState, Workspace};

/// Path prefix of every route.
pub const PREFIX: &str = "/v1";

/// `Upgrade` protocol name of the exec route.
pub const EXEC_UPGRADE: &str = "banger-exec";

/// Header of the exec route's `101` response: the id of the agent stream
/// the command runs on, for `POST /vms/{name}/exec/{stream}/signal`.
pub const EXEC_STREAM_HEADER: &str = "x-banger-exec-stream";

/// Header that carries the operation id on every response.
pub const OPERATION_HEADER: &str = "x-banger-operation";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub pid: u32,
}

/// Resource use of one VM (`GET /vms/{name}/stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    pub name: String,
    pub state: VmState,
    /// Bytes the VM's disk files take on the host (sparse files count only
    /// what is allocated).
    pub disk_allocated_bytes: u64,
    /// The VMM process, while the VM runs.
    pub vmm: Option<VmmStats>,
    /// Figures from inside the guest, while the VM runs and its agent responds.
    pub guest: Option<GuestStats>,
    /// Reason `guest` is absent although the VM runs.
    pub guest_error: Option<String>,
}

/// The host's view of a VMM process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmmStats {
    pub pid: u32,
    /// Time since the VMM started.
    pub uptime_seconds: f64,
    /// CPU time (user and system) the VMM used since it started.
    pub cpu_seconds: f64,
    /// Resident memory of the VMM process.
    pub rss_bytes: u64,
}

/// The guest's own figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestStats {
    pub uptime_seconds: f64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Usage of the file systems on `/` and on `/root` (the work disk).
    pub filesystems: Vec<FilesystemStats>,
}

/// Size and usage of one guest file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemStats {
    pub mount: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// New size or backend for a stopped VM; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetVmRequest {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    /// VMM backend: `auto`, `firecracker` or `qemu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateVmRequest {
    /// Generated when absent.
    pub name: Option<String>,
    /// Default image when absent.
    pub image: Option<String>,
    /// Default kernel when absent.
    pub kernel: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size_bytes: Option<u64>,
    /// Create the disks and the record without booting.
    #[serde(default)]
    pub no_start: bool,
    /// VMM backend: `auto`, `firecracker` or `qemu`; the config's `vmm` when absent.
    #[serde(default)]
    pub vmm: Option<String>,
    /// Masquerade the guest's traffic out of the host's uplink.
    #[serde(default)]
    pub nat: bool,
    /// The VM lives for one client command (`vm run --rm`): when the create
    /// fails, or the client disconnects before it finishes, the daemon
    /// deletes the VM instead of keeping it in `error` or running.
    #[serde(default)]
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportKernelRequest {
    /// Absolute path of a Debian `linux-image-*` package on the daemon's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deb: Option<String>,
    /// Absolute path of a kernel file instead: an ELF vmlinux or a bzImage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmlinux: Option<String>,
    /// With `vmlinux`: absolute path of its `/lib/modules/<release>` tree,
    /// when the virtio drivers are modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    /// Catalog name; the kernel release when absent.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullKernelRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildImageRequest {
    pub name: String,
}

/// Resolved defaults the CLI shows in its `spec:` line before creating a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Defaults {
    pub image: String,
    pub kernel: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_size_bytes: u64,
}

/// Outcome of one `doctor` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DoctorStatus {
    Ok,
    /// banger works, but slower or with less than it could.
    Warn,
    /// banger cannot work until this is fixed.
    Fail,
}

/// One check of `banger doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorCheck {
    pub name: String,
    pub status: DoctorStatus,
    pub detail: String,
    /// Fix to apply when the status is not `ok`.
    pub fix: Option<String>,
}

impl DoctorCheck {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, DoctorStatus::Ok, detail, None)
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self::new(name, DoctorStatus::Warn, detail, fix)
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self::new(name, DoctorStatus::Fail, detail, fix)
    }

    fn new(
        name: impl Into<String>,
        status: DoctorStatus,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// Values a create request resolved to, before the VM exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedVm {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_size_bytes: u64,
    pub image: String,
    pub kernel: String,
}

/// One line of an event stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A step has begun or advanced; for humans.
    Progress { message: String },
    /// The daemon validated a create request and resolved its defaults;
    /// sent before any download or build.
    Accepted { vm: AcceptedVm },
    /// The operation finished; `result` is the route's response type.
    Done { result: serde_json::Value },
    /// The operation failed.
    Error { error: ErrorBody },
}

/// Failure category, for exit codes and HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input: invalid name, size, path.
    Invalid,
    /// The named VM, image or kernel does not exist.
    NotFound,
    /// The request conflicts with the current state (duplicate name, VM stopped, image in use).
    Conflict,
    /// A required program or device is missing on the host.
    Unavailable,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }
}

/// A failure as it travels from the daemon to the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// The top-level message.
    pub message: String,
    /// The chain of causes, outermost first, without the top-level message.
    #[serde(default)]
    pub causes: Vec<String>,
    /// Fix the user can apply.
    #[serde(default)]
    pub hint: Option<String>,
    /// The daemon's operation id, also in its log.
    #[serde(default)]
    pub operation: Option<String>,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            operation: None,
        }
    }

    /// Builds a body from an error and its `source()` chain.
    pub fn from_error(kind: ErrorKind, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut body = Self::new(kind, error.to_string());
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Some errors repeat their source in their own message; skip exact repeats.
            if body.causes.last() != Some(&text) && text != body.message {
                body.causes.push(text);
            }
            source = cause.source();
        }
        body
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_body_keeps_the_cause_chain() {
        let error = Layer(
            "failed to start VM dev",
            Some(Box::new(Layer(
                "failed to launch QEMU",
                Some(Box::new(Layer("No such file or directory", None))),
            ))),
        );
        let body = ErrorBody::from_error(ErrorKind::Internal, &error);
        assert_eq!(body.message, "failed to start VM dev");
        assert_eq!(
            body.causes,
            vec!["failed to launch QEMU", "No such file or directory"]
        );
        let json = serde_json::to_string(&body).unwrap();
        let back: ErrorBody = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn events_are_tagged() {
        let line = serde_json::to_string(&Event::Progress {
            message: "booting".into(),
        })
        .unwrap();
        assert_eq!(line, r#"{"event":"progress","message":"booting"}"#);
    }
}
