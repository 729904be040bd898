//! The tar stream a workspace is sent in: the work tree's files under
//! `tree/` and the bundle of HEAD's history as `head.bundle`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

/// Directory of the archive that contains the work tree.
pub const TREE_DIR: &str = "tree";
/// Name of the bundle in the archive.
pub const BUNDLE_NAME: &str = "head.bundle";

/// ext4 block size; each non-empty file and directory takes whole blocks.
const BLOCK: u64 = 4096;
/// Symlink targets shorter than this are stored in the inode (ext4 "fast
/// symlinks") and take no block.
const FAST_SYMLINK_MAX: u64 = 60;
/// Bytes of the stream's chunks; also the payload of one `Stdin` frame.
pub const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("failed to read {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to add {path} to the archive (did it change during the copy?)")]
    Add {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to finish the archive")]
    Finish {
        #[source]
        source: std::io::Error,
    },
}

/// The files to copy and what they need on the guest's disk.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Regular files and symlinks, relative to the repository root.
    pub files: Vec<PathBuf>,
    /// Sum of the file sizes.
    pub bytes: u64,
    /// Estimated disk use of the extracted tree: whole blocks per file and
    /// directory.
    pub disk_bytes: u64,
}

impl Manifest {
    /// Reads the type and size of each of `candidates`. Paths missing from
    /// the work tree (deleted but still tracked) are left out, so the guest
    /// copy shows them deleted as the host does. Directories and special
    /// files are left out too; git tracks neither.
    pub fn build(root: &Path, candidates: Vec<PathBuf>) -> Result<Self, ArchiveError> {
        let mut manifest = Manifest::default();
        let mut dirs = BTreeSet::new();
        for relative in candidates {
            let path = root.join(&relative);
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ArchiveError::Stat { path, source }),
            };
            let kind = metadata.file_type();
            let size = metadata.len();
            if kind.is_file() {
                manifest.disk_bytes += size.div_ceil(BLOCK) * BLOCK;
            } else if kind.is_symlink() {
                if size >= FAST_SYMLINK_MAX {
                    manifest.disk_bytes += BLOCK;
                }
            } else {
                continue;
            }
            manifest.bytes += size;
            dirs.extend(relative.ancestors().skip(1).map(Path::to_path_buf));
            manifest.files.push(relative);
        }
        manifest.disk_bytes += dirs.len() as u64 * BLOCK;
        Ok(manifest)
    }
}

/// Writes the archive of `manifest` (and `bundle`, when HEAD has a commit)
/// to `out`. Symlinks are stored as symlinks, never followed.
pub fn write_archive(
    root: &Path,
    manifest: &Manifest,
    bundle: Option<&Path>,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    for relative in &manifest.files {
        let path = root.join(relative);
        builder
            .append_path_with_name(&path, Path::new(TREE_DIR).join(relative))
            .map_err(|source| ArchiveError::Add { path, source })?;
    }
    if let Some(bundle) = bundle {
        builder
            .append_path_with_name(bundle, BUNDLE_NAME)
            .map_err(|source| ArchiveError::Add {
                path: bundle.to_path_buf(),
                source,
            })?;
    }
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|source| ArchiveError::Finish { source })
}

/// A writer that sends what it is given as chunks of [`CHUNK`] bytes to an
/// async receiver, waiting while the receiver is behind. Call it from a
/// thread outside the async runtime. Writes fail with `BrokenPipe` once the
/// receiver is gone.
pub struct ChunkWriter {
    sender: mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    pub fn new(sender: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(chunk)
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == CHUNK {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn manifest_skips_missing_and_counts_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/one"), vec![1u8; 5000]).unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        symlink("a/b/one", dir.path().join("link")).unwrap();
        let candidates = ["a/b/one", "empty", "link", "gone"]
            .map(PathBuf::from)
            .to_vec();
        let manifest = Manifest::build(dir.path(), candidates).unwrap();
        assert_eq!(
            manifest.files,
            ["a/b/one", "empty", "link"].map(PathBuf::from).to_vec()
        );
        assert_eq!(manifest.bytes, 5000 + 7);
        // Two blocks for the file, one each for the directories "", a, a/b.
        assert_eq!(manifest.disk_bytes, 2 * BLOCK + 3 * BLOCK);
    }

    #[test]
    fn archive_keeps_symlinks_unicode_and_bundle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("späce ünï.txt"), b"text").unwrap();
        symlink("späce ünï.txt", dir.path().join("link")).unwrap();
        let bundle = dir.path().join("b.bundle");
        std::fs::write(&bundle, b"bundle bytes").unwrap();
        let files = ["späce ünï.txt", "link"].map(PathBuf::from).to_vec();
        let manifest = Manifest::build(dir.path(), files).unwrap();

        let (sender, mut receiver) = mpsc::channel(4);
        let root = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            write_archive(&root, &manifest, Some(&bundle), ChunkWriter::new(sender))
        });
        let mut bytes = Vec::new();
        while let Some(chunk) = receiver.blocking_recv() {
            assert!(chunk.len() <= CHUNK);
            bytes.extend(chunk);
        }
        writer.join().unwrap().unwrap();

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            seen.push((path, kind));
        }
        assert_eq!(
            seen,
            vec![
                ("tree/späce ünï.txt".to_string(), tar::EntryType::Regular),
                ("tree/link".to_string(), tar::EntryType::Symlink),
                ("head.bundle".to_string(), tar::EntryType::Regular),
            ]
        );
    }
}
