//! Types shared by the daemon, the store and the CLI: VM records and their
//! states, VM specs, images and kernels, and the validation of names and sizes.

mod name;
mod size;
mod vm;
mod workspace;

pub use name::{NameError, generate_vm_name, validate_vm_name};
pub use size::{SizeError, format_size, parse_size};
pub use vm::{ImageRecord, KernelRecord, VmRecord, VmSpec, VmState};
pub use workspace::{
    DEFAULT_GUEST_PATH, Workspace, WorkspaceError, validate_guest_path, validate_workspace,
};

/// Name of the image used when none is given.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";

/// Name of the kernel catalog entry used when none is given.
pub const DEFAULT_KERNEL: &str = "debian-cloud-amd64";
