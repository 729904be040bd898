//! Cache layout helpers: staging directories inside the cache root, sha256
//! digests, fsync and atomic publication by rename.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directory under the cache root that contains staging directories. Staging
/// there keeps each final rename on the same file system as its target.
const STAGING_DIR: &str = "tmp";

/// Creates a fresh staging directory under `<cache_root>/tmp/`, removed when
/// the returned guard is dropped.
pub fn staging_dir(cache_root: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    let parent = cache_root.join(STAGING_DIR);
    fs::create_dir_all(&parent)?;
    tempfile::Builder::new().prefix(prefix).tempdir_in(parent)
}

/// Returns the lowercase hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = file.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        hasher.update(&buffer[..count]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Returns true when `value` is a lowercase hex sha256 digest, which makes it
/// safe to use as a file name.
pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn fsync_path(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Fsyncs every regular file and directory under `root`, children first.
pub fn fsync_tree(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            fsync_tree(&entry.path())?;
        } else if file_type.is_file() {
            fsync_path(&entry.path())?;
        }
    }
    fsync_path(root)
}

/// Renames `source` to `target` and fsyncs the target's parent directory so
/// the new name survives a crash.
pub fn publish(source: &Path, target: &Path) -> io::Result<()> {
    fs::rename(source, target)?;
    fsync_path(parent_of(target))
}

/// Writes `data` to `target` (mode 0644) through a temporary file in the
/// same directory, fsynced before the rename.
pub fn write_atomic(target: &Path, data: &[u8]) -> io::Result<()> {
    let parent = parent_of(target);
    fs::create_dir_all(parent)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(parent)?;
    temp.write_all(data)?;
    // Temporary files are created with mode 0600. Cache metadata is made
    // readable like the artifacts it describes.
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|err| err.error)?;
    fsync_path(parent)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Joins a cache-relative path stored in metadata onto `dir`, rejecting
/// absolute paths and `..` so metadata cannot point outside `dir`.
pub fn join_relative(dir: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    let safe = relative
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    (safe && !relative.as_os_str().is_empty()).then(|| dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

        assert_eq!(sha256_file(&path).unwrap(), expected);
        assert_eq!(sha256_bytes(b"abc"), expected);
        assert!(is_sha256_hex(expected));
        assert!(!is_sha256_hex("../etc"));
        assert!(!is_sha256_hex(&expected.to_uppercase()));
    }

    #[test]
    fn write_atomic_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/file.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();

        assert_eq!(fs::read(&target).unwrap(), b"two");
        let leftovers = fs::read_dir(dir.path().join("sub")).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn join_relative_rejects_escapes() {
        let dir = Path::new("/cache/kernels/x");
        assert_eq!(
            join_relative(dir, "modules/a.ko"),
            Some(dir.join("modules/a.ko"))
        );
        assert_eq!(join_relative(dir, "../y"), None);
        assert_eq!(join_relative(dir, "/etc/passwd"), None);
        assert_eq!(join_relative(dir, ""), None);
    }
}
