//! Unpacking the mmdebstrap tar into a staging tree without root: device
//! nodes and FIFOs are recorded instead of created, and every entry's
//! header is kept so ownership the tree cannot store is fixed later in the
//! ext4 image.

use std::fs::{self, File};
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tar::EntryType;

use super::ImageError;

/// File type of a recorded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    /// A second name for an earlier entry's inode; its metadata is that
    /// entry's.
    HardLink,
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

impl EntryKind {
    /// Returns the `S_IF*` file type bits for an ext4 inode mode.
    pub fn type_bits(self) -> u32 {
        match self {
            EntryKind::File | EntryKind::HardLink => 0o100_000,
            EntryKind::Directory => 0o040_000,
            EntryKind::Symlink => 0o120_000,
            EntryKind::CharDevice { .. } => 0o020_000,
            EntryKind::BlockDevice { .. } => 0o060_000,
            EntryKind::Fifo => 0o010_000,
        }
    }

    /// Returns true for device nodes and FIFOs, which the staging tree does
    /// not contain because debugfs creates them in the image.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } | EntryKind::Fifo
        )
    }
}

/// Ownership and permissions an entry must have in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEntry {
    /// Path relative to the root, without a leading `/`; empty for the root.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Unpacks `tar_path` into the existing directory `tree` and returns its
/// entries in archive order. Ownership is applied only when running as
/// root; as another user the returned entries carry it instead.
pub fn unpack_tar(tar_path: &Path, tree: &Path) -> Result<Vec<ExpectedEntry>, ImageError> {
    let file = File::open(tar_path).map_err(super::io_error("open", tar_path))?;
    let is_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(BufReader::new(file));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_preserve_ownerships(is_root);
    // Extended attributes in the security namespace (file capabilities)
    // can only be set by root.
    archive.set_unpack_xattrs(is_root);

    let unpack_error = |entry: &str, source| ImageError::Unpack {
        tar: tar_path.to_path_buf(),
        entry: entry.to_string(),
        source,
    };
    let mut recorded = Vec::new();
    // Directory permissions are applied after their contents exist, deepest
    // first, so a read-only directory does not block its own children.
    let mut directories = Vec::new();
    let entries = archive
        .entries()
        .map_err(|source| unpack_error("the archive header", source))?;
    for entry in entries {
        let mut entry = entry.map_err(|source| unpack_error("the next entry", source))?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize(tar_path, &raw_path)?;
        let header = entry.header();
        let Some(kind) = entry_kind(tar_path, &raw_path, header)? else {
            continue;
        };
        let invalid = |reason: String| ImageError::InvalidTarEntry {
            tar: tar_path.to_path_buf(),
            entry: raw_path.clone(),
            reason,
        };
        let mode = header.mode().map_err(|err| invalid(err.to_string()))? & 0o7777;
        let uid = header.uid().map_err(|err| invalid(err.to_string()))?;
        let gid = header.gid().map_err(|err| invalid(err.to_string()))?;
        let expected = ExpectedEntry {
            path: path.clone(),
            kind,
            mode,
            uid: u32::try_from(uid).map_err(|_| invalid(format!("uid {uid} exceeds 32 bits")))?,
            gid: u32::try_from(gid).map_err(|_| invalid(format!("gid {gid} exceeds 32 bits")))?,
        };

        match kind {
            _ if kind.is_special() => {}
            EntryKind::Directory if path.is_empty() => {
                apply_root_metadata(tree, &expected)?;
            }
            EntryKind::Directory => {
                let target = tree.join(&path);
                fs::create_dir_all(&target).map_err(super::io_error("create", &target))?;
                directories.push((path.clone(), entry));
            }
            _ => {
                entry
                    .unpack_in(tree)
                    .map_err(|source| unpack_error(&raw_path, source))?;
            }
        }
        recorded.push(expected);
    }

    directories.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, mut entry) in directories {
        entry
            .unpack_in(tree)
            .map_err(|source| unpack_error(&path, source))?;
    }
    Ok(recorded)
}

fn apply_root_metadata(tree: &Path, expected: &ExpectedEntry) -> Result<(), ImageError> {
    fs::set_permissions(tree, fs::Permissions::from_mode(expected.mode))
        .map_err(super::io_error("set permissions of", tree))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(tree, Some(expected.uid), Some(expected.gid))
            .map_err(super::io_error("change the owner of", tree))?;
    }
    Ok(())
}

fn entry_kind(
    tar_path: &Path,
    raw_path: &str,
    header: &tar::Header,
) -> Result<Option<EntryKind>, ImageError> {
    let device = || -> Result<(u32, u32), ImageError> {
        let invalid = |reason: String| ImageError::InvalidTarEntry {
            tar: tar_path.to_path_buf(),
            entry: raw_path.to_string(),
            reason,
        };
        let major = header.device_major().map_err(|e| invalid(e.to_string()))?;
        let minor = header.device_minor().map_err(|e| invalid(e.to_string()))?;
        Ok((major.unwrap_or(0), minor.unwrap_or(0)))
    };
    let kind = match header.entry_type() {
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Directory,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::HardLink,
        EntryType::Char => {
            let (major, minor) = device()?;
            EntryKind::CharDevice { major, minor }
        }
        EntryType::Block => {
            let (major, minor) = device()?;
            EntryKind::BlockDevice { major, minor }
        }
        EntryType::Fifo => EntryKind::Fifo,
        // Global pax headers and other metadata records are not files.
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// Strips `./` and `/` prefixes and a trailing `/`, and rejects `..`.
pub fn normalize(tar_path: &Path, raw: &str) -> Result<String, ImageError> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => continue,
            ".." => {
                return Err(ImageError::InvalidTarEntry {
                    tar: tar_path.to_path_buf(),
                    entry: raw.to_string(),
                    reason: "path contains `..`".to_string(),
                });
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn append(
        builder: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: EntryType,
        mode: u32,
        data: &[u8],
    ) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, data).unwrap();
        header
    }

    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        append(&mut builder, "./", EntryType::Directory, 0o755, b"");
        append(&mut builder, "./etc/", EntryType::Directory, 0o755, b"");
        append(
            &mut builder,
            "./etc/hostname",
            EntryType::Regular,
            0o644,
            b"x\n",
        );
        append(&mut builder, "./locked/", EntryType::Directory, 0o555, b"");
        append(
            &mut builder,
            "./locked/file",
            EntryType::Regular,
            0o4755,
            b"suid",
        );
        append(&mut builder, "./dev/", EntryType::Directory, 0o755, b"");

        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Char);
        header.set_mode(0o666);
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        builder
            .append_data(&mut header, "./dev/null", &[][..])
            .unwrap();

        let mut link = tar::Header::new_gnu();
        link.set_entry_type(EntryType::Symlink);
        link.set_mode(0o777);
        link.set_uid(0);
        link.set_gid(0);
        link.set_size(0);
        builder
            .append_link(&mut link, "./etc/link", "hostname")
            .unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpack_records_entries_and_skips_devices() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("rootfs.tar");
        fs::write(&tar_path, sample_tar()).unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();

        let entries = unpack_tar(&tar_path, &tree).unwrap();

        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "",
                "etc",
                "etc/hostname",
                "locked",
                "locked/file",
                "dev",
                "dev/null",
                "etc/link"
            ]
        );
        let null = &entries[6];
        assert_eq!(null.kind, EntryKind::CharDevice { major: 1, minor: 3 });
        assert!(
            !tree.join("dev/null").exists(),
            "device nodes are not created"
        );
        assert_eq!(fs::read(tree.join("etc/hostname")).unwrap(), b"x\n");
        assert_eq!(
            fs::read_link(tree.join("etc/link")).unwrap(),
            Path::new("hostname")
        );

        let locked = fs::metadata(tree.join("locked")).unwrap();
        assert_eq!(locked.mode() & 0o7777, 0o555, "directory mode applied last");
        let file = fs::metadata(tree.join("locked/file")).unwrap();
        assert_eq!(file.mode() & 0o7777, 0o4755, "setuid bit kept");
        assert_eq!(file.mtime(), 1_700_000_000);
        let root = fs::metadata(&tree).unwrap();
        assert_eq!(root.mode() & 0o7777, 0o755);

        // The staging directory's cleanup needs write access again.
        fs::set_permissions(tree.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn parent_directory_entries_are_rejected() {
        let err = normalize(Path::new("x.tar"), "./etc/../../outside").unwrap_err();
        assert!(matches!(err, ImageError::InvalidTarEntry { .. }), "{err}");
        assert_eq!(
            normalize(Path::new("x.tar"), "./usr/bin/").unwrap(),
            "usr/bin"
        );
        assert_eq!(normalize(Path::new("x.tar"), "./").unwrap(), "");
    }
}
