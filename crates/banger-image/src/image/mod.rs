//! Debian root file system images: built with mmdebstrap, turned into ext4
//! with `mkfs.ext4 -d` and debugfs, and stored as
//! `<cache>/images/<sha256>.ext4` with a `<sha256>.json` record and a
//! per-recipe index under `<cache>/images/recipes/`.

mod build;
mod debugfs;
pub mod guest_files;
mod inject;
mod unpack;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use build::build_image;
pub use inject::{InjectFile, inject_files};

use crate::store;
use banger_process::CommandError;

/// Version of the build procedure. It is part of the recipe key, so a
/// change to what the build produces must change this number.
const BUILD_FORMAT: u32 = 1;

/// A build recipe: a Debian suite and the packages to include.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecipe {
    pub name: String,
    pub suite: String,
    pub packages: Vec<String>,
}

/// Returns the built-in recipe called `name`, if any.
pub fn default_recipe(name: &str) -> Option<ImageRecipe> {
    match name {
        "debian-bookworm" => Some(ImageRecipe {
            name: name.to_string(),
            suite: "bookworm".to_string(),
            packages: [
                "systemd-sysv",
                "udev",
                "iproute2",
                "ca-certificates",
                "git",
                "openssh-server",
                "sudo",
            ]
            .map(str::to_string)
            .to_vec(),
        }),
        _ => None,
    }
}

/// An image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Sha256 of the ext4 file.
    pub sha256: String,
    /// `<cache>/images/<sha256>.ext4`
    pub path: PathBuf,
    /// Length of the (sparse) ext4 file.
    pub size_bytes: u64,
}

/// Contents of `<cache>/images/<sha256>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ImageMetadata {
    format: u32,
    sha256: String,
    recipe: ImageRecipe,
    size_bytes: u64,
    /// RFC 3339 time of the build.
    created: String,
}

/// Errors from building and editing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image recipe {name:?}: {reason}")]
    InvalidRecipe { name: String, reason: String },
    #[error("failed to read the agent binary {path}")]
    ReadAgent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("failed to unpack {entry} from {tar}")]
    Unpack {
        tar: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid entry {entry:?} in {tar}: {reason}")]
    InvalidTarEntry {
        tar: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is in the root file system archive but missing from the staging tree")]
    MissingStagedEntry { path: String },
    #[error("path {path:?} cannot be passed to debugfs: it {reason}")]
    UnquotablePath { path: String, reason: &'static str },
    #[error("debugfs reported errors while editing {image}:\n{errors}")]
    Debugfs { image: PathBuf, errors: String },
    #[error("invalid guest path {path}: it {reason}")]
    InvalidGuestPath { path: PathBuf, reason: &'static str },
    #[error("cannot write {path} in {image}: it {reason}")]
    GuestPathConflict {
        image: PathBuf,
        path: String,
        reason: &'static str,
    },
    #[error("file to inject {path} does not exist or is not a regular file")]
    InjectSourceMissing { path: PathBuf },
    #[error("failed to encode image metadata for {path}")]
    EncodeMetadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

fn images_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("images")
}

/// Path of the cached image file with content hash `sha256`.
pub fn image_path(cache_root: &Path, sha256: &str) -> PathBuf {
    images_dir(cache_root).join(format!("{sha256}.ext4"))
}

/// Returns the index file name for `recipe`: the sha256 of a canonical JSON
/// form holding the build format, the name, the suite and the sorted,
/// deduplicated package list. The agent binary is not part of the key
/// because the daemon rewrites the agent in every VM's disk.
fn recipe_key(recipe: &ImageRecipe) -> String {
    let mut packages = recipe.packages.clone();
    packages.sort();
    packages.dedup();
    let canonical = serde_json::json!({
        "build_format": BUILD_FORMAT,
        "name": recipe.name,
        "suite": recipe.suite,
        "packages": packages,
    });
    store::sha256_bytes(canonical.to_string().as_bytes())
}

/// Returns the cached image built from `recipe`, if its index entry, image
/// file and metadata are all present.
pub fn find_built(recipe: &ImageRecipe, cache_root: &Path) -> Option<BuiltImage> {
    let images = images_dir(cache_root);
    let index = images.join("recipes").join(recipe_key(recipe));
    let sha256 = std::fs::read_to_string(index).ok()?.trim().to_string();
    if !store::is_sha256_hex(&sha256) {
        return None;
    }
    let path = image_path(cache_root, &sha256);
    let metadata: ImageMetadata =
        serde_json::from_slice(&std::fs::read(images.join(format!("{sha256}.json"))).ok()?).ok()?;
    let size_bytes = std::fs::metadata(&path).ok()?.len();
    (metadata.sha256 == sha256 && metadata.size_bytes == size_bytes).then_some(BuiltImage {
        sha256,
        path,
        size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_recipe_for_bookworm() {
        let recipe = default_recipe("debian-bookworm").unwrap();
        assert_eq!(recipe.suite, "bookworm");
        assert!(recipe.packages.iter().any(|p| p == "openssh-server"));
        assert_eq!(recipe.packages.len(), 7);
        assert!(default_recipe("debian-sid").is_none());
    }

    #[test]
    fn recipe_key_ignores_package_order() {
        let recipe = default_recipe("debian-bookworm").unwrap();
        let mut reordered = recipe.clone();
        reordered.packages.reverse();
        reordered.packages.push("git".to_string());
        assert_eq!(recipe_key(&recipe), recipe_key(&reordered));

        let mut other = recipe.clone();
        other.suite = "trixie".to_string();
        assert_ne!(recipe_key(&recipe), recipe_key(&other));
    }

    #[test]
    fn find_built_reads_index() {
        let cache = tempfile::tempdir().unwrap();
        let recipe = default_recipe("debian-bookworm").unwrap();
        assert!(find_built(&recipe, cache.path()).is_none());

        let sha256 = "b".repeat(64);
        let images = images_dir(cache.path());
        std::fs::create_dir_all(images.join("recipes")).unwrap();
        let path = images.join(format!("{sha256}.ext4"));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let metadata = ImageMetadata {
            format: BUILD_FORMAT,
            sha256: sha256.clone(),
            recipe: recipe.clone(),
            size_bytes: 4096,
            created: "2026-01-01T00:00:00Z".to_string(),
        };
        std::fs::write(
            images.join(format!("{sha256}.json")),
            serde_json::to_vec(&metadata).unwrap(),
        )
        .unwrap();
        let index = images.join("recipes").join(recipe_key(&recipe));
        std::fs::write(&index, format!("{sha256}\n")).unwrap();

        let found = find_built(&recipe, cache.path()).unwrap();
        assert_eq!(found.sha256, sha256);
        assert_eq!(found.path, path);
        assert_eq!(found.size_bytes, 4096);

        std::fs::write(&index, "../../etc/passwd\n").unwrap();
        assert!(
            find_built(&recipe, cache.path()).is_none(),
            "index must hold a digest"
        );
    }
}
