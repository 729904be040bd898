//! Probe results cached as JSON files, one per key.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::ProbeResult;

/// Failure to compute a cache key or to store a result.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("failed to read {} to hash it", path.display())]
    Hash {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to create probe cache directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to write probe cache file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Everything a probe outcome depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInputs {
    pub qemu_version: String,
    pub host_release: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    pub accel: String,
}

impl KeyInputs {
    /// Returns the key: a SHA-256 over all inputs, in hex.
    pub fn key(&self) -> String {
        let text = format!(
            "qemu={}\nhost={}\nkernel={}\ninitrd={}\naccel={}\n",
            self.qemu_version,
            self.host_release,
            self.kernel_sha256,
            self.initrd_sha256,
            self.accel
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// Returns the SHA-256 of a file's contents, in hex.
pub fn sha256_file(path: &Path) -> Result<String, CacheError> {
    let hash = || -> io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(hex::encode(hasher.finalize()))
    };
    hash().map_err(|source| CacheError::Hash {
        path: path.to_owned(),
        source,
    })
}

pub fn cache_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("kvm-probe-{key}.json"))
}

/// Returns the cached result for `key`; a missing, unreadable or invalid
/// file counts as no result.
pub fn load(cache_dir: &Path, key: &str) -> Option<ProbeResult> {
    let path = cache_path(cache_dir, key);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring unreadable probe cache file");
            return None;
        }
    };
    match serde_json::from_slice::<ProbeResult>(&bytes) {
        Ok(result) if result.key == key => Some(result),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "ignoring probe cache file with another key");
            None
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring invalid probe cache file");
            None
        }
    }
}

/// Writes `result` under its key: to a temporary file, synced, then renamed,
/// so readers never see a partial file.
pub fn store(cache_dir: &Path, result: &ProbeResult) -> Result<(), CacheError> {
    std::fs::create_dir_all(cache_dir).map_err(|source| CacheError::CreateDir {
        path: cache_dir.to_owned(),
        source,
    })?;
    let path = cache_path(cache_dir, &result.key);
    let temporary = cache_dir.join(format!(
        ".kvm-probe-{}.{}.tmp",
        result.key,
        std::process::id()
    ));
    let write = || -> io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        let json = serde_json::to_vec_pretty(result).map_err(io::Error::other)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        CacheError::Write { path, source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            qemu_version: "QEMU emulator version 7.2.22".to_owned(),
            host_release: "6.1.0".to_owned(),
            kernel_sha256: "aa".to_owned(),
            initrd_sha256: "bb".to_owned(),
            accel: "kvm".to_owned(),
        }
    }

    #[test]
    fn key_changes_with_each_input() {
        let base = inputs().key();
        assert_eq!(base.len(), 64);
        assert_eq!(base, inputs().key(), "key is deterministic");
        let changes: [fn(&mut KeyInputs); 5] = [
            |inputs| inputs.qemu_version.push('x'),
            |inputs| inputs.host_release.push('x'),
            |inputs| inputs.kernel_sha256.push('x'),
            |inputs| inputs.initrd_sha256.push('x'),
            |inputs| inputs.accel = "tcg".to_owned(),
        ];
        for change in changes {
            let mut changed = inputs();
            change(&mut changed);
            assert_ne!(changed.key(), base, "{changed:?}");
        }
    }

    #[test]
    fn store_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let result = ProbeResult {
            kvm_boots: false,
            detail: "stalled".to_owned(),
            key: inputs().key(),
        };
        assert_eq!(load(&cache_dir, &result.key), None);
        store(&cache_dir, &result).unwrap();
        assert_eq!(load(&cache_dir, &result.key), Some(result.clone()));
        assert_eq!(load(&cache_dir, "other"), None);

        std::fs::write(cache_path(&cache_dir, &result.key), b"{not json").unwrap();
        assert_eq!(load(&cache_dir, &result.key), None, "invalid file");
    }

    #[test]
    fn sha256_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
}
