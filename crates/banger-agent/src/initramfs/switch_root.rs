//! Mounting the root file system and switching to it, as util-linux and
//! busybox `switch_root` do.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
use nix::unistd::{chdir, chroot, execv};
use thiserror::Error;

use super::cmdline::BootConfig;

/// Mount point of the root file system before the switch.
pub const NEW_ROOT: &str = "/newroot";

/// Mounts moved from the initramfs into the root file system.
const MOVED_MOUNTS: [&str; 3] = ["/dev", "/proc", "/sys"];

/// `RAMFS_MAGIC` from `<linux/magic.h>`: the initramfs is a ramfs unless the
/// kernel made it a tmpfs.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

#[derive(Debug, Error)]
pub enum SwitchRootError {
    #[error("creating directory {path} failed")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {device} ({fstype}, {mode}) on {target} failed")]
    MountRoot {
        device: PathBuf,
        fstype: String,
        mode: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
    #[error(
        "init program {init} not found in the root file system on {root}; \
         set init= on the kernel command line to a program that exists there"
    )]
    InitMissing { init: String, root: &'static str },
    #[error("init program path {0:?} contains a NUL byte")]
    InitPath(String),
    #[error("moving mount {from} to {to} failed")]
    MoveMount {
        from: &'static str,
        to: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("statfs on / failed")]
    Statfs(#[source] Errno),
    #[error("/ is not a ramfs or tmpfs (file system magic {0:#x}); refusing to delete its files")]
    NotInitramfs(i64),
    #[error("{step} failed")]
    Switch {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("executing {init} failed")]
    Exec {
        init: String,
        #[source]
        source: Errno,
    },
}

/// Mounts the root device on [`NEW_ROOT`] with the file system type, `ro`
/// flag and `rootflags=` options from `config`.
pub fn mount_root(device: &Path, config: &BootConfig) -> Result<(), SwitchRootError> {
    fs::create_dir_all(NEW_ROOT).map_err(|source| SwitchRootError::CreateDir {
        path: PathBuf::from(NEW_ROOT),
        source,
    })?;
    let mut flags = MsFlags::empty();
    if config.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(
        Some(device),
        NEW_ROOT,
        Some(config.root_fstype.as_str()),
        flags,
        config.root_flags.as_deref(),
    )
    .map_err(|source| SwitchRootError::MountRoot {
        device: device.to_owned(),
        fstype: config.root_fstype.clone(),
        mode: if config.read_only { "ro" } else { "rw" },
        target: NEW_ROOT,
        source,
    })
}

/// Moves `/dev`, `/proc` and `/sys` into [`NEW_ROOT`], deletes the files of
/// the initramfs, makes [`NEW_ROOT`] the root directory and executes `init`
/// with `init_args` (without `argv[0]`). Returns only on failure.
pub fn switch_root(init: &str, init_args: &[OsString]) -> Result<Infallible, SwitchRootError> {
    // A missing init is found before anything is torn down, so the error
    // message is the only change.
    let init_in_new_root = Path::new(NEW_ROOT).join(init.trim_start_matches('/'));
    if fs::symlink_metadata(&init_in_new_root).is_err() {
        return Err(SwitchRootError::InitMissing {
            init: init.to_owned(),
            root: NEW_ROOT,
        });
    }
    let argv = init_argv(init, init_args)?;

    for mount_point in MOVED_MOUNTS {
        move_mount(mount_point)?;
    }

    delete_initramfs_files()?;

    chdir(NEW_ROOT).map_err(|source| SwitchRootError::Switch {
        step: "chdir to /newroot",
        source,
    })?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        SwitchRootError::Switch {
            step: "moving /newroot to /",
            source,
        }
    })?;
    chroot(".").map_err(|source| SwitchRootError::Switch {
        step: "chroot to the new root",
        source,
    })?;
    chdir("/").map_err(|source| SwitchRootError::Switch {
        step: "chdir to / in the new root",
        source,
    })?;

    let error = match execv(&argv[0], &argv) {
        Ok(never) => match never {},
        Err(source) => source,
    };
    Err(SwitchRootError::Exec {
        init: init.to_owned(),
        source: error,
    })
}

fn init_argv(init: &str, init_args: &[OsString]) -> Result<Vec<CString>, SwitchRootError> {
    let invalid = || SwitchRootError::InitPath(init.to_owned());
    let mut argv = vec![CString::new(init).map_err(|_| invalid())?];
    for arg in init_args {
        // The kernel never passes NUL bytes in arguments; skip any that would.
        if let Ok(arg) = CString::new(arg.as_bytes()) {
            argv.push(arg);
        }
    }
    Ok(argv)
}

/// Moves a mount into the new root. When the new root has no directory for
/// it, the mount is detached instead, as util-linux `switch_root` does.
fn move_mount(mount_point: &'static str) -> Result<(), SwitchRootError> {
    let target = Path::new(NEW_ROOT).join(mount_point.trim_start_matches('/'));
    if !target.is_dir() {
        log_line!(
            "initramfs: {} does not exist in the root file system; detaching {mount_point}",
            target.display()
        );
        if let Err(error) = umount2(mount_point, MntFlags::MNT_DETACH) {
            log_line!("initramfs: detaching {mount_point} failed: {error}");
        }
        return Ok(());
    }
    mount(
        Some(mount_point),
        &target,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|source| SwitchRootError::MoveMount {
        from: mount_point,
        to: target,
        source,
    })
}

/// Deletes the initramfs contents to free their memory. Only files on the
/// same device as `/` are removed, so the new root mounted below it is left
/// alone, and only when `/` is a ramfs or tmpfs.
fn delete_initramfs_files() -> Result<(), SwitchRootError> {
    let stat = statfs("/").map_err(SwitchRootError::Statfs)?;
    let fs_type = stat.filesystem_type();
    if fs_type != RAMFS_MAGIC && fs_type != TMPFS_MAGIC {
        return Err(SwitchRootError::NotInitramfs(fs_type.0 as i64));
    }
    let root_device = match fs::symlink_metadata("/") {
        Ok(metadata) => metadata.dev(),
        Err(error) => {
            log_line!("initramfs: lstat / failed: {error}; leaving the initramfs files in memory");
            return Ok(());
        }
    };
    let failures = remove_tree_on_device(Path::new("/"), root_device);
    if failures > 0 {
        log_line!("initramfs: {failures} initramfs files could not be deleted and stay in memory");
    }
    Ok(())
}

/// Removes the contents of `dir` that are on `device`, without following
/// symbolic links or crossing into other mounts. Returns the number of
/// entries that could not be removed.
fn remove_tree_on_device(dir: &Path, device: u64) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 1;
    };
    let mut failures = 0;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            failures += 1;
            continue;
        };
        if metadata.dev() != device {
            continue;
        }
        let removed = if metadata.is_dir() {
            failures += remove_tree_on_device(&path, device);
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        if removed.is_err() {
            failures += 1;
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_deletes_nested_files_and_keeps_root() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path();
        fs::create_dir_all(base.join("lib/modules")).unwrap();
        fs::write(base.join("lib/modules/a.ko"), b"x").unwrap();
        fs::write(base.join("init"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", base.join("link")).unwrap();
        let device = fs::metadata(base).unwrap().dev();

        assert_eq!(remove_tree_on_device(base, device), 0);
        assert!(base.exists());
        assert_eq!(fs::read_dir(base).unwrap().count(), 0);
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn remove_tree_skips_other_devices() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("file"), b"x").unwrap();
        let other_device = fs::metadata(root.path()).unwrap().dev() + 1;

        assert_eq!(remove_tree_on_device(root.path(), other_device), 0);
        assert!(root.path().join("file").exists());
    }

    #[test]
    fn init_argv_starts_with_init() {
        let argv = init_argv("/sbin/init", &[OsString::from("single")]).unwrap();
        assert_eq!(argv, vec![c"/sbin/init".to_owned(), c"single".to_owned()]);
        assert!(matches!(
            init_argv("/sbin/\0init", &[]),
            Err(SwitchRootError::InitPath(_))
        ));
    }
}
