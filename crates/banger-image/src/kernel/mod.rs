//! Kernel import: turns a Debian `linux-image-*` package, or a kernel file
//! with an optional modules directory, into a bzImage for QEMU, an ELF
//! vmlinux for Firecracker and the virtio modules an initramfs loads, stored
//! under `<cache>/kernels/<sha256>/`.

mod bzimage;
pub(crate) mod deb;
mod download;
mod elf;
mod file;
mod import;
mod initramfs;
pub mod modules;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bzimage::BzImageError;
pub use download::download_deb;
pub use file::import_kernel_file;
pub use import::import_deb;
pub use initramfs::{MODULE_DIR, MODULE_LIST_PATH, build_initramfs};

use crate::cpio::CpioError;
use crate::store;
use banger_process::CommandError;

/// Version of the `kernel.json` layout. Other versions are not loaded.
const METADATA_FORMAT: u32 = 1;
const METADATA_FILE: &str = "kernel.json";
const BZIMAGE_FILE: &str = "vmlinuz";
const VMLINUX_FILE: &str = "vmlinux";
const MODULES_DIR: &str = "modules";

/// An imported kernel in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// Sha256 of the .deb it came from: the content address.
    pub sha256: String,
    /// Kernel release, e.g. "6.1.0-57-cloud-amd64".
    pub release: String,
    /// `<cache>/kernels/<sha256>/`
    pub dir: PathBuf,
    /// `dir/vmlinuz`, the bzImage QEMU boots; absent for a kernel imported
    /// as a bare ELF vmlinux.
    pub bzimage: Option<PathBuf>,
    /// `dir/vmlinux`, the ELF image Firecracker boots.
    pub vmlinux: PathBuf,
    /// `dir/modules/<name>.ko`, in load order.
    pub modules: Vec<PathBuf>,
}

/// Contents of `kernel.json`. Paths are derived from the directory, so the
/// cache can move.
#[derive(Debug, Serialize, Deserialize)]
struct KernelMetadata {
    format: u32,
    sha256: String,
    release: String,
    /// File name of the package it was imported from, for display.
    source: String,
    /// Module names in load order.
    modules: Vec<String>,
}

/// Errors from importing, loading and downloading kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("failed to read kernel package {path}")]
    ReadPackage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a Debian package: {reason}")]
    NotDebianPackage { path: PathBuf, reason: String },
    #[error(
        "{path} contains {member}, whose compression banger does not read; use a package compressed with xz, gzip or zstd"
    )]
    UnsupportedMember { path: PathBuf, member: String },
    #[error("truncated or corrupt {member} in {path}; download the package again")]
    CorruptMember {
        path: PathBuf,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no /boot/vmlinuz-* in {path}; pass a linux-image-<release> package rather than a metapackage"
    )]
    NoKernelImage { path: PathBuf },
    #[error("{path} contains several kernels ({releases}); banger imports packages with one")]
    SeveralKernels { path: PathBuf, releases: String },
    #[error("invalid kernel module {module}: {reason}")]
    InvalidModule { module: String, reason: String },
    #[error("kernel module {module}{} is neither among the kernel's modules nor listed in modules.builtin", required_by.as_ref().map(|by| format!(" (required by {by})")).unwrap_or_default())]
    ModuleNotFound {
        module: String,
        required_by: Option<String>,
    },
    #[error("kernel modules depend on each other in a cycle: {cycle}")]
    ModuleCycle { cycle: String },
    #[error("failed to extract vmlinux from the kernel image")]
    Vmlinux(#[source] BzImageError),
    #[error("failed to {action} {path}")]
    Cache {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid kernel id {value:?}: expected a 64-digit lowercase hex sha256")]
    InvalidSha256 { value: String },
    #[error("kernel {sha256} is not imported ({path} is missing); import its .deb first")]
    NotImported { sha256: String, path: PathBuf },
    #[error("invalid kernel metadata {path}: {reason}; delete {path} and import the kernel again")]
    InvalidMetadata { path: PathBuf, reason: String },
    #[error("failed to read the agent binary {path}")]
    ReadAgent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to build the initramfs {path}")]
    Initramfs {
        path: PathBuf,
        #[source]
        source: CpioError,
    },
    #[error(
        "kernel {release} was imported as an ELF vmlinux without a PVH entry point, which QEMU cannot boot"
    )]
    NoQemuImage { release: String },
    #[error(
        "{path} is neither an ELF vmlinux nor an x86 bzImage{}; pass a kernel such as /boot/vmlinuz-<release>",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    NotKernelImage {
        path: PathBuf,
        reason: Option<String>,
    },
    #[error(
        "no \"Linux version\" banner in {path}, so it is no Linux kernel or one banger cannot read; pass a kernel such as /boot/vmlinuz-<release>"
    )]
    NoRelease { path: PathBuf },
    #[error("failed to read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a modules directory: it has no kernel/ subdirectory; pass the kernel's /lib/modules/<release>"
    )]
    NotModulesDir { path: PathBuf },
    #[error("module {module} in {dir} is built for kernel {module_release}, not for {release}")]
    ModuleReleaseMismatch {
        module: String,
        dir: PathBuf,
        module_release: String,
        release: String,
    },
    #[error("invalid Debian package name {package:?}")]
    InvalidPackageName { package: String },
    #[error("failed to download package {package}")]
    Download {
        package: String,
        #[source]
        source: CommandError,
    },
    #[error("apt-get download {package} left no {package}_*.deb in {dir}")]
    DownloadedFileMissing { package: String, dir: PathBuf },
    #[error(
        "{package} ({path}) has no /boot/vmlinuz-* and does not depend on a linux-image-* package"
    )]
    NotKernelPackage { package: String, path: PathBuf },
}

pub(crate) fn cache_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Cache {
        action,
        path,
        source,
    }
}

/// Decompresses the vmlinux inside a bzImage (gzip, xz, zstd or LZ4 legacy
/// payload) and checks that it is an ELF file.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, KernelError> {
    bzimage::extract(bzimage).map_err(KernelError::Vmlinux)
}

/// Returns `<cache>/kernels/<sha256>/`.
fn kernel_dir(cache_root: &Path, sha256: &str) -> PathBuf {
    cache_root.join("kernels").join(sha256)
}

/// Loads an imported kernel from `<cache>/kernels/<sha256>/kernel.json`.
pub fn load(cache_root: &Path, sha256: &str) -> Result<KernelArtifacts, KernelError> {
    if !store::is_sha256_hex(sha256) {
        return Err(KernelError::InvalidSha256 {
            value: sha256.to_string(),
        });
    }
    let dir = kernel_dir(cache_root, sha256);
    let metadata_path = dir.join(METADATA_FILE);
    let text = match std::fs::read_to_string(&metadata_path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(KernelError::NotImported {
                sha256: sha256.to_string(),
                path: metadata_path,
            });
        }
        Err(source) => return Err(cache_error("read", &metadata_path)(source)),
    };
    let invalid = |reason: String| KernelError::InvalidMetadata {
        path: metadata_path.clone(),
        reason,
    };
    let metadata: KernelMetadata =
        serde_json::from_str(&text).map_err(|err| invalid(err.to_string()))?;
    if metadata.format != METADATA_FORMAT {
        return Err(invalid(format!(
            "format {} is not the supported format {METADATA_FORMAT}",
            metadata.format
        )));
    }
    if metadata.sha256 != sha256 {
        return Err(invalid(format!("records sha256 {}", metadata.sha256)));
    }

    let mut modules = Vec::with_capacity(metadata.modules.len());
    for name in &metadata.modules {
        let path = store::join_relative(&dir.join(MODULES_DIR), &format!("{name}.ko"))
            .filter(|_| !name.contains('/'))
            .ok_or_else(|| invalid(format!("invalid module name {name:?}")))?;
        modules.push(path);
    }
    let artifacts = KernelArtifacts {
        sha256: sha256.to_string(),
        release: metadata.release,
        bzimage: Some(dir.join(BZIMAGE_FILE)).filter(|path| path.is_file()),
        vmlinux: dir.join(VMLINUX_FILE),
        modules,
        dir,
    };
    let expected = std::iter::once(&artifacts.vmlinux).chain(&artifacts.modules);
    for path in expected {
        if !path.is_file() {
            return Err(invalid(format!("{} is missing", path.display())));
        }
    }
    Ok(artifacts)
}

impl KernelArtifacts {
    /// The image QEMU boots: the bzImage, or else the ELF vmlinux when it
    /// has a PVH entry point.
    pub fn qemu_image(&self) -> Result<&Path, KernelError> {
        if let Some(bzimage) = &self.bzimage {
            return Ok(bzimage);
        }
        let vmlinux = std::fs::read(&self.vmlinux).map_err(cache_error("read", &self.vmlinux))?;
        if elf::has_pvh_entry(&vmlinux) {
            Ok(&self.vmlinux)
        } else {
            Err(KernelError::NoQemuImage {
                release: self.release.clone(),
            })
        }
    }
}
