//! Initramfs mode: the agent runs as `/init` (PID 1) of the initramfs banger
//! generates for distribution kernels whose virtio drivers are modules.
//!
//! It mounts `/dev`, `/proc` and `/sys`, reads the kernel command line, loads
//! the modules listed in `/etc/banger/modules`, waits for the root device,
//! mounts it on `/newroot`, switches root and executes the real init. Any
//! failure prints `banger-agent: initramfs: <what failed>: <why>` on the
//! console and powers the machine off, so QEMU exits and the host shows the
//! console output to the user.

pub mod cmdline;
pub mod modules;
pub mod rootdev;
pub mod superblock;
pub mod switch_root;

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::RebootMode;
use thiserror::Error;

use crate::system::{kernel_release_or_unknown, reboot_now};
use cmdline::{BootConfig, CmdlineError, parse_cmdline};
use modules::{LoadOutcome, MODULE_LIST_PATH, ModuleListError, ModuleLoadError};
use rootdev::{DeviceDirs, RootDeviceError, WaitPolicy, wait_for_root};
use switch_root::SwitchRootError;

/// Path of the console device.
const CONSOLE: &str = "/dev/console";

#[derive(Debug, Error)]
pub enum InitramfsError {
    #[error("creating mount point {path} failed")]
    CreateMountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {fstype} on {target} failed")]
    MountPseudoFs {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
    #[error("reading /proc/cmdline failed")]
    ReadCmdline(#[source] std::io::Error),
    #[error("parsing the kernel command line failed")]
    ParseCmdline(#[source] CmdlineError),
    #[error("reading the module list {path} failed")]
    ReadModuleList {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the module list {path} failed")]
    ParseModuleList {
        path: &'static str,
        #[source]
        source: ModuleListError,
    },
    #[error("loading kernel modules failed")]
    LoadModule(#[source] ModuleLoadError),
    #[error("no root= on the kernel command line; add root=/dev/vda, root=LABEL=x or root=UUID=x")]
    MissingRoot,
    #[error("waiting for the root device failed")]
    WaitRoot(#[source] RootDeviceError),
    #[error("switching to the root file system failed")]
    SwitchRoot(#[source] SwitchRootError),
}

/// Runs initramfs mode. Never returns: it either executes the real init or
/// powers the machine off.
pub fn run() -> ! {
    let error = match boot() {
        Ok(never) => match never {},
        Err(error) => error,
    };
    let line = format!("banger-agent: initramfs: {}", crate::error_chain(&error));
    write_console_line(&line);
    // The pause lets the console drain before the machine stops.
    thread::sleep(Duration::from_secs(1));
    power_off()
}

fn boot() -> Result<Infallible, InitramfsError> {
    mount_pseudo_filesystems()?;
    attach_console();

    let cmdline = fs::read_to_string("/proc/cmdline").map_err(InitramfsError::ReadCmdline)?;
    let config = parse_cmdline(&cmdline).map_err(InitramfsError::ParseCmdline)?;

    // The probe only reports to the host that the kernel reached user
    // space, so it needs neither modules nor disks.
    if config.probe {
        write_console_line(&format!("banger-probe: ok {}", kernel_release_or_unknown()));
        power_off();
    }

    load_listed_modules()?;
    mount_and_switch(&config)
}

fn mount_pseudo_filesystems() -> Result<(), InitramfsError> {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mounts: [(&'static str, &'static str, MsFlags, Option<&str>); 3] = [
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("proc", "/proc", nosuid_noexec, None),
        ("sysfs", "/sys", nosuid_noexec, None),
    ];
    for (fstype, target, flags, data) in mounts {
        fs::create_dir_all(target).map_err(|source| InitramfsError::CreateMountPoint {
            path: PathBuf::from(target),
            source,
        })?;
        match mount(Some(fstype), target, Some(fstype), flags, data) {
            // EBUSY: the kernel already mounted it (devtmpfs.mount=1).
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(source) => {
                return Err(InitramfsError::MountPseudoFs {
                    fstype,
                    target,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Points standard input, output and error at `/dev/console`, so log lines
/// reach the console and the real init inherits it, even when the kernel
/// found no `/dev/console` in the initramfs to open for `/init`.
fn attach_console() {
    let console = match OpenOptions::new().read(true).write(true).open(CONSOLE) {
        Ok(console) => console,
        Err(error) => {
            log_line!(
                "initramfs: opening {CONSOLE} failed: {error}; logging to the inherited stderr"
            );
            return;
        }
    };
    for target in 0..=2 {
        // SAFETY: dup2 only duplicates a file descriptor. The console stays
        // open for the whole call, and descriptors 0 to 2 are the standard
        // streams, which std writes to only through their numbers.
        unsafe { libc::dup2(console.as_raw_fd(), target) };
    }
}

fn load_listed_modules() -> Result<(), InitramfsError> {
    let text = match fs::read_to_string(MODULE_LIST_PATH) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            log_line!("initramfs: no module list at {MODULE_LIST_PATH}; loading no modules");
            return Ok(());
        }
        Err(source) => {
            return Err(InitramfsError::ReadModuleList {
                path: MODULE_LIST_PATH,
                source,
            });
        }
    };
    let list =
        modules::parse_module_list(&text).map_err(|source| InitramfsError::ParseModuleList {
            path: MODULE_LIST_PATH,
            source,
        })?;
    for path in list {
        match modules::load_module(&path).map_err(InitramfsError::LoadModule)? {
            LoadOutcome::Loaded => log_line!("initramfs: loaded module {}", path.display()),
            LoadOutcome::AlreadyLoaded => {
                log_line!("initramfs: module {} was already loaded", path.display());
            }
        }
    }
    Ok(())
}

fn mount_and_switch(config: &BootConfig) -> Result<Infallible, InitramfsError> {
    let spec = config.root.as_ref().ok_or(InitramfsError::MissingRoot)?;
    let device = wait_for_root(spec, &DeviceDirs::default(), WaitPolicy::default())
        .map_err(InitramfsError::WaitRoot)?;
    log_line!("initramfs: root device {spec} is {}", device.display());

    switch_root::mount_root(&device, config).map_err(InitramfsError::SwitchRoot)?;
    log_line!(
        "initramfs: mounted {} on {}; starting {}",
        device.display(),
        switch_root::NEW_ROOT,
        config.init
    );

    // The kernel passes boot parameters it does not know to /init as
    // arguments; the real init gets them too.
    let init_args: Vec<OsString> = std::env::args_os().skip(1).collect();
    switch_root::switch_root(&config.init, &init_args).map_err(InitramfsError::SwitchRoot)
}

/// Writes one line to the console in a single write, falling back to
/// `/dev/kmsg` and then standard error.
fn write_console_line(line: &str) {
    let text = format!("{line}\n");
    for path in [CONSOLE, "/dev/kmsg"] {
        if let Ok(mut file) = OpenOptions::new().write(true).open(path)
            && file.write_all(text.as_bytes()).is_ok()
        {
            return;
        }
    }
    eprint!("{text}");
}

/// Powers the machine off; if the kernel rejects that, waits forever, because
/// PID 1 must not exit.
fn power_off() -> ! {
    let error = reboot_now(RebootMode::RB_POWER_OFF);
    write_console_line(&format!(
        "banger-agent: initramfs: {}",
        crate::error_chain(&error)
    ));
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
