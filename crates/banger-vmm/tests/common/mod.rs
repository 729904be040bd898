//! Helpers for the tests that run real QEMU: the Debian cloud kernel from its
//! package, a test initramfs, and launch specs.
//!
//! Each helper returns `None` after printing why when a precondition is
//! missing, and the test then returns early as skipped.

#![allow(dead_code)]

pub mod firecracker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use banger_vmm::{Accel, LaunchSpec, QemuVmm, VmProcess};

/// Modules the test init loads, in load order, relative to the package's
/// `lib/modules/<release>/kernel`.
const GUEST_MODULES: [&str; 7] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/char/virtio_console.ko",
    "drivers/acpi/button.ko",
    "drivers/input/evdev.ko",
];

/// Kernel image and module tree extracted from the package.
pub struct Kernel {
    pub image: PathBuf,
    pub release: String,
    pub modules: PathBuf,
}

/// Kills the VMM process when dropped, so a failed test leaves no VM behind.
pub struct KillOnDrop(pub VmProcess);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = banger_vmm::process::send_signal(
            self.0.pid,
            self.0.start_time,
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

pub use banger_test_support::skip;

/// Returns a QEMU backend for `qemu-system-x86_64` on `PATH`.
pub fn qemu() -> Option<QemuVmm> {
    match QemuVmm::locate() {
        Ok(vmm) => Some(vmm),
        Err(_) => {
            skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
            None
        }
    }
}

/// Extracts the kernel package once per test run into the target's test
/// directory and returns the kernel.
pub fn kernel() -> Option<&'static Kernel> {
    static KERNEL: OnceLock<Option<Kernel>> = OnceLock::new();
    let kernel = KERNEL.get_or_init(|| {
        let deb = banger_test_support::kernel_deb()?;
        // One directory per package, so a newer package is unpacked afresh.
        let stem = deb.file_stem().unwrap().to_string_lossy().into_owned();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(stem);
        if !root.join("boot").exists() {
            let partial = root.with_extension("partial");
            let _ = std::fs::remove_dir_all(&partial);
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial));
            std::fs::rename(&partial, &root).unwrap();
        }
        let image = std::fs::read_dir(root.join("boot"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })
            .expect("the package contains /boot/vmlinuz-*");
        let release = image
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_owned();
        let modules = root.join("lib/modules").join(&release).join("kernel");
        Some(Kernel {
            image,
            release,
            modules,
        })
    });
    if kernel.is_none() {
        skip(format!(
            "no Debian cloud kernel package in {}",
            banger_test_support::KERNEL_DIR_ENV
        ));
    }
    kernel.as_ref()
}

/// Builds, once per test run, an initramfs whose `/init` is
/// `tests/guest/init.c` compiled statically, with the virtio modules in `/m`.
pub fn test_initramfs(kernel: &Kernel) -> Option<&'static Path> {
    static INITRAMFS: OnceLock<Option<PathBuf>> = OnceLock::new();
    let initramfs = INITRAMFS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-initramfs");
        std::fs::create_dir_all(&dir).unwrap();
        let init = dir.join("init");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/init.c");
        let compiled = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&init)
            .arg(&source)
            .status();
        if !matches!(compiled, Ok(status) if status.success()) {
            return None;
        }

        let mut archive = NewcWriter::default();
        for directory in ["dev", "proc", "sys", "m"] {
            archive.directory(directory);
        }
        archive.char_device("dev/console", 5, 1);
        archive.file("init", 0o755, &std::fs::read(&init).unwrap());
        for module in GUEST_MODULES {
            let name = Path::new(module).file_name().unwrap().to_string_lossy();
            let bytes = std::fs::read(kernel.modules.join(module)).unwrap();
            archive.file(&format!("m/{name}"), 0o644, &bytes);
        }
        let path = dir.join("initramfs.cpio");
        std::fs::write(&path, archive.finish()).unwrap();
        Some(path)
    });
    if initramfs.is_none() {
        skip("gcc cannot build a static test init (install gcc and libc6-dev)");
    }
    initramfs.as_deref()
}

/// Returns a TCG launch spec for `kernel` with its run directory in `dir`.
pub fn tcg_spec(vm_id: &str, kernel: &Kernel, dir: &Path, cmdline: &str) -> LaunchSpec {
    let run_dir = dir.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    LaunchSpec {
        vm_id: vm_id.to_owned(),
        vcpus: 1,
        memory_mib: 256,
        kernel: kernel.image.clone(),
        initrd: None,
        cmdline: cmdline.to_owned(),
        disks: Vec::new(),
        nics: Vec::new(),
        run_dir,
        console_log: dir.join("console.log"),
        accel: Accel::Tcg,
    }
}

/// Polls the console log until it contains `text`; returns the log.
pub async fn wait_for_console(path: &Path, text: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) {
            return log;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "console log {} lacks {text:?} after {timeout:?}:\n{log}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?} failed with {status}");
}

/// Writer of a cpio archive in the "newc" format that the kernel unpacks as
/// an initramfs.
#[derive(Default)]
struct NewcWriter {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl NewcWriter {
    fn directory(&mut self, name: &str) {
        self.entry(name, 0o040_755, 0, &[]);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major << 8) | minor, &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, 0, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.bytes
    }

    /// `device` packs the major number in bits 8 and up and the minor in bits 0-7.
    fn entry(&mut self, name: &str, mode: u32, device: u32, data: &[u8]) {
        self.next_inode += 1;
        let fields = [
            self.next_inode,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap(),
            0,
            0,
            device >> 8,
            device & 0xff,
            u32::try_from(name.len() + 1).unwrap(),
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}
