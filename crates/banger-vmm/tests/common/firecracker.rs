//! Helpers for the tests that run real Firecracker: the binary, the small
//! test guest of `tests/guest/fc_guest.S`, the Debian kernel as an ELF
//! vmlinux, and launch specs.
//!
//! Each helper returns `None` after printing why when a precondition is
//! missing, and the test then returns early as skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use banger_vmm::{Accel, DiskSpec, FirecrackerVmm, LaunchSpec};

use super::skip;

/// Variants of the test guest, named by their `-D` define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guest {
    /// Prints its lines and resets on Ctrl+Alt+Del.
    Ready,
    IgnoreCtrlAltDel,
    Stall,
    ResetAtOnce,
}

impl Guest {
    fn define(self) -> Option<&'static str> {
        match self {
            Guest::Ready => None,
            Guest::IgnoreCtrlAltDel => Some("-DIGNORE_CTRL_ALT_DEL"),
            Guest::Stall => Some("-DSTALL"),
            Guest::ResetAtOnce => Some("-DRESET_AT_ONCE"),
        }
    }
}

/// Returns a Firecracker backend for `BANGER_FIRECRACKER_BIN` or for
/// `firecracker` on `PATH`, when `/dev/kvm` is usable.
pub fn firecracker() -> Option<FirecrackerVmm> {
    let vmm = match std::env::var_os("BANGER_FIRECRACKER_BIN") {
        Some(binary) => FirecrackerVmm::new(PathBuf::from(binary)),
        None => match FirecrackerVmm::locate() {
            Ok(vmm) => vmm,
            Err(_) => {
                skip(
                    "firecracker is not on PATH and BANGER_FIRECRACKER_BIN is not set (scripts/install-firecracker.sh installs it)",
                );
                return None;
            }
        },
    };
    let kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_usable {
        skip("/dev/kvm is missing or not readable and writable, and Firecracker needs it");
        return None;
    }
    Some(vmm)
}

/// Compiles the test guest variant once per test run and returns its ELF.
pub fn guest(variant: Guest) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<Guest, Option<PathBuf>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    let path = built.entry(variant).or_insert_with(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fc-guest");
        std::fs::create_dir_all(&dir).unwrap();
        let elf = dir.join(format!("{variant:?}.elf"));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/fc_guest.S");
        let mut command = Command::new("gcc");
        command.args(variant.define());
        command
            .args(["-nostdlib", "-static", "-no-pie"])
            .args(["-Wl,-Ttext=0x1000000", "-Wl,--build-id=none", "-o"])
            .arg(&elf)
            .arg(&source);
        matches!(command.status(), Ok(status) if status.success()).then_some(elf)
    });
    if path.is_none() {
        skip("gcc cannot build the Firecracker test guest (install gcc)");
    }
    path.clone()
}

/// Returns a KVM launch spec for `kernel` with an initrd and two drives (a
/// root and a work disk of 1 MiB), its run directory in `dir`.
pub fn spec(vm_id: &str, kernel: &Path, dir: &Path) -> LaunchSpec {
    let run_dir = dir.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let initrd = dir.join("initrd.cpio");
    std::fs::write(&initrd, b"not read by the test guest").unwrap();
    let mut disks = Vec::new();
    for name in ["root.img", "work.img"] {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        disks.push(DiskSpec {
            path,
            read_only: false,
        });
    }
    LaunchSpec {
        vm_id: vm_id.to_owned(),
        vcpus: 1,
        memory_mib: 128,
        kernel: kernel.to_owned(),
        initrd: Some(initrd),
        cmdline: String::new(),
        disks,
        nics: Vec::new(),
        run_dir,
        console_log: dir.join("console.log"),
        accel: Accel::Kvm,
    }
}

/// Returns the run directory's socket files that are left.
pub fn sockets_left(run_dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir(run_dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_socket())
        .map(|entry| entry.path())
        .collect()
}

/// Cache for imported kernels and initramfs images: `BANGER_TEST_CACHE`,
/// else a directory under the target's test directory.
pub fn test_cache() -> PathBuf {
    let dir = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-cache"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Imports the Debian kernel package once per test run and returns the
/// artifacts, whose `vmlinux` Firecracker boots.
pub fn debian_kernel() -> Option<&'static banger_image::KernelArtifacts> {
    static KERNEL: OnceLock<Option<banger_image::KernelArtifacts>> = OnceLock::new();
    let kernel = KERNEL.get_or_init(|| {
        let deb = banger_test_support::kernel_deb()?;
        let artifacts = banger_image::import_deb(&deb, &test_cache(), &mut |step| {
            eprintln!("kernel import: {step}");
        })
        .unwrap();
        Some(artifacts)
    });
    if kernel.is_none() {
        skip(format!(
            "no Debian cloud kernel package in {}",
            banger_test_support::KERNEL_DIR_ENV
        ));
    }
    kernel.as_ref()
}

/// Returns the static `banger-agent` from `BANGER_AGENT_BIN` or
/// `$BANGER_BIN_DIR/banger-agent` (scripts/build.sh builds it), or `None`
/// when neither names a file.
pub fn static_agent() -> Option<PathBuf> {
    std::env::var_os("BANGER_AGENT_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("BANGER_BIN_DIR").map(|dir| PathBuf::from(dir).join("banger-agent"))
        })
        .filter(|agent| agent.is_file())
}

/// Polls the console log until it contains `text`; returns the log.
pub async fn wait_for_console(path: &Path, text: &str) -> String {
    super::wait_for_console(path, text, Duration::from_secs(20)).await
}
