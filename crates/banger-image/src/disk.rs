//! Per-VM disks: a copy of the root image (reflink when the file system
//! supports it, else a sparse copy) and an empty ext4 work disk.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use banger_process::{CommandError, CommandSpec};

const COPY_BUFFER: usize = 1 << 20;
const MKFS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

// FICLONE from <linux/fs.h>: _IOW(0x94, 9, int).
nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Copy method used by [`clone_disk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// The copy shares extents with the source (FICLONE).
    Reflink,
    /// Only the source's data extents were copied; holes stay holes.
    SparseCopy,
}

/// Errors from creating disks.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} already exists; remove it or choose another path")]
    AlreadyExists { path: PathBuf },
    #[error("invalid work disk size {size_bytes} bytes: it must be at least {MIN_WORK_DISK_BYTES}")]
    InvalidSize { size_bytes: u64 },
    #[error("failed to format the work disk {path}")]
    Format {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
}

/// Smallest work disk accepted, because mke2fs needs room for its metadata
/// and a journal.
pub const MIN_WORK_DISK_BYTES: u64 = 16 << 20;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dst` (mode 0600, failing if it exists) with the contents of
/// `src`. On failure `dst` is removed.
pub fn clone_disk(src: &Path, dst: &Path) -> Result<CloneMethod, DiskError> {
    let source = File::open(src).map_err(io_error("open", src))?;
    let target = create_exclusive(dst)?;
    let result = reflink(&source, &target, dst).and_then(|cloned| {
        if cloned {
            Ok(CloneMethod::Reflink)
        } else {
            sparse_copy_into(&source, src, &target, dst).map(|()| CloneMethod::SparseCopy)
        }
    });
    let result = result.and_then(|method| {
        target.sync_all().map_err(io_error("fsync", dst))?;
        Ok(method)
    });
    if result.is_err() {
        let _ = fs::remove_file(dst);
    }
    result
}

fn create_exclusive(path: &Path) -> Result<File, DiskError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => DiskError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => io_error("create", path)(err),
        })
}

/// Returns true when FICLONE shared the extents, false when the file
/// system cannot reflink these files.
fn reflink(source: &File, target: &File, dst: &Path) -> Result<bool, DiskError> {
    let source_fd = source.as_raw_fd();
    // SAFETY: both descriptors are open for the duration of the call, and
    // FICLONE reads only its integer argument (the source descriptor).
    let result = unsafe {
        ficlone(
            target.as_raw_fd(),
            source_fd as nix::sys::ioctl::ioctl_param_type,
        )
    };
    match result {
        Ok(_) => Ok(true),
        // Not supported by the file system, across file systems, or on
        // files the kernel cannot clone.
        Err(Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS) => {
            Ok(false)
        }
        Err(errno) => Err(io_error("reflink into", dst)(io::Error::from(errno))),
    }
}

/// Copies the data extents of `source` into `target` (both open) and sets
/// the target's length, so holes in the source stay holes.
fn sparse_copy_into(source: &File, src: &Path, target: &File, dst: &Path) -> Result<(), DiskError> {
    let length = source.metadata().map_err(io_error("stat", src))?.len();
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut offset: u64 = 0;
    while offset < length {
        let Some((data_start, data_end)) = next_data_extent(source, src, offset, length)? else {
            break;
        };
        copy_range(source, src, target, dst, data_start, data_end, &mut buffer)?;
        offset = data_end;
    }
    target
        .set_len(length)
        .map_err(io_error("set the length of", dst))
}

/// Returns the next data extent at or after `offset`, or `None` when only a
/// hole remains. File systems without SEEK_DATA report the rest as data.
fn next_data_extent(
    source: &File,
    src: &Path,
    offset: u64,
    length: u64,
) -> Result<Option<(u64, u64)>, DiskError> {
    let fd = source.as_raw_fd();
    let as_offset = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let start = match lseek(fd, as_offset(offset), Whence::SeekData) {
        Ok(start) => start as u64,
        Err(Errno::ENXIO) => return Ok(None),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => return Ok(Some((offset, length))),
        Err(errno) => return Err(io_error("seek in", src)(io::Error::from(errno))),
    };
    let end = match lseek(fd, as_offset(start), Whence::SeekHole) {
        Ok(end) => (end as u64).min(length),
        Err(errno) => return Err(io_error("seek in", src)(io::Error::from(errno))),
    };
    Ok(Some((start, end)))
}

fn copy_range(
    source: &File,
    src: &Path,
    target: &File,
    dst: &Path,
    start: u64,
    end: u64,
    buffer: &mut [u8],
) -> Result<(), DiskError> {
    let mut position = start;
    while position < end {
        let want = usize::try_from(end - position)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let count = source
            .read_at(&mut buffer[..want], position)
            .map_err(io_error("read", src))?;
        if count == 0 {
            // The source shrank while being copied; the length is set from
            // the earlier stat.
            break;
        }
        target
            .write_all_at(&buffer[..count], position)
            .map_err(io_error("write", dst))?;
        position += count as u64;
    }
    Ok(())
}

/// Creates a sparse file of `size_bytes` at `path` (mode 0600, failing if it
/// exists) holding an empty ext4 file system labelled `bangerwork` whose
/// root directory is owned by root with mode 0700. Inode tables and the
/// journal are initialized lazily so creation takes well under a second.
pub fn create_work_disk(path: &Path, size_bytes: u64) -> Result<(), DiskError> {
    if size_bytes < MIN_WORK_DISK_BYTES {
        return Err(DiskError::InvalidSize { size_bytes });
    }
    let file = create_exclusive(path)?;
    let result = format_work_disk(&file, path, size_bytes);
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

fn format_work_disk(file: &File, path: &Path, size_bytes: u64) -> Result<(), DiskError> {
    file.set_len(size_bytes)
        .map_err(io_error("set the size of", path))?;
    let format_error = |source| DiskError::Format {
        path: path.to_path_buf(),
        source,
    };
    CommandSpec::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "bangerwork"])
        .args([
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .args(["-m", "0"])
        .arg(path)
        .timeout(MKFS_TIMEOUT)
        .run()
        .map_err(format_error)?;
    let output = CommandSpec::new("debugfs")
        .args(["-w", "-R", "sif / mode 040700"])
        .arg(path)
        .timeout(MKFS_TIMEOUT)
        .run()
        .map_err(format_error)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Some(error) = stderr.lines().find(|line| !line.starts_with("debugfs ")) {
        return Err(DiskError::Io {
            action: "set the root directory mode of",
            path: path.to_path_buf(),
            source: io::Error::other(error.to_string()),
        });
    }
    file.sync_all().map_err(io_error("fsync", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const MIB: u64 = 1 << 20;

    /// Creates a 64 MiB file with data at 0, at 20 MiB and in its last byte.
    /// The rest are holes.
    fn sparse_source(path: &Path) {
        let file = File::create(path).unwrap();
        file.set_len(64 * MIB).unwrap();
        file.write_all_at(b"start of disk", 0).unwrap();
        file.write_all_at(&vec![0xab; 1 << 16], 20 * MIB).unwrap();
        file.write_all_at(b"!", 64 * MIB - 1).unwrap();
        file.sync_all().unwrap();
    }

    #[test]
    fn sparse_copy_keeps_holes_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        sparse_source(&src);

        let source = File::open(&src).unwrap();
        let target = create_exclusive(&dst).unwrap();
        sparse_copy_into(&source, &src, &target, &dst).unwrap();
        drop(target);

        let meta = fs::metadata(&dst).unwrap();
        assert_eq!(meta.len(), 64 * MIB);
        assert!(
            meta.blocks() * 512 < 4 * MIB,
            "only data extents are allocated ({} blocks)",
            meta.blocks()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(
            fs::read(&src).unwrap() == fs::read(&dst).unwrap(),
            "contents equal"
        );
    }

    #[test]
    fn clone_disk_copies_and_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        sparse_source(&src);

        let method = clone_disk(&src, &dst).unwrap();
        assert!(matches!(
            method,
            CloneMethod::Reflink | CloneMethod::SparseCopy
        ));
        assert!(fs::read(&src).unwrap() == fs::read(&dst).unwrap());
        assert_eq!(
            fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let err = clone_disk(&src, &dst).unwrap_err();
        assert!(matches!(err, DiskError::AlreadyExists { .. }), "{err}");
        let err = clone_disk(&dir.path().join("missing"), &dir.path().join("x")).unwrap_err();
        assert!(matches!(err, DiskError::Io { .. }), "{err}");
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn work_disk_is_sparse_ext4() {
        let path = std::env::var_os("PATH");
        if banger_process::find_in_path("mkfs.ext4", path.as_deref()).is_none() {
            banger_test_support::skip("e2fsprogs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("work.ext4");
        create_work_disk(&disk, 512 * MIB).unwrap();

        let meta = fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 512 * MIB);
        assert!(meta.blocks() * 512 < 64 * MIB, "file stays sparse");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let stats = CommandSpec::new("dumpe2fs")
            .arg("-h")
            .arg(&disk)
            .run()
            .unwrap();
        let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
        assert!(
            stats.contains("Filesystem volume name:   bangerwork"),
            "{stats}"
        );
        assert!(stats.contains("Reserved block count:     0"), "{stats}");
        let root = CommandSpec::new("debugfs")
            .args(["-R", "stat /"])
            .arg(&disk)
            .run()
            .unwrap();
        let root = String::from_utf8_lossy(&root.stdout).into_owned();
        assert!(root.contains("Mode:  0700"), "{root}");
        assert!(root.contains("User:     0   Group:     0"), "{root}");

        let err = create_work_disk(&disk, 512 * MIB).unwrap_err();
        assert!(matches!(err, DiskError::AlreadyExists { .. }), "{err}");
        let err = create_work_disk(&dir.path().join("tiny"), 4096).unwrap_err();
        assert!(matches!(err, DiskError::InvalidSize { .. }), "{err}");
    }
}
