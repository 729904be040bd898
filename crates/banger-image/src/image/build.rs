//! `build_image`: mmdebstrap, unpack, banger files, `mkfs.ext4 -d`, one
//! debugfs pass for ownership and device nodes, then atomic publication.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::debugfs::{self, ActualMetadata};
use super::guest_files::write_guest_files;
use super::unpack::{self, ExpectedEntry};
use super::{
    BUILD_FORMAT, BuiltImage, ImageError, ImageMetadata, ImageRecipe, images_dir, io_error,
    recipe_key,
};
use crate::{debian, store};
use banger_process::CommandSpec;

/// Time allowed for mmdebstrap, which downloads and installs every package.
const MMDEBSTRAP_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const MKFS_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const MIB: u64 = 1 << 20;
const MIN_IMAGE_BYTES: u64 = 1 << 30;
/// Bytes per inode that mke2fs uses by default for this size class.
const BYTES_PER_INODE: u64 = 16 * 1024;

/// Builds the root file system image for `recipe` and stores it in the
/// cache. It does not look for a cached image first; see
/// [`find_built`](super::find_built).
pub fn build_image(
    recipe: &ImageRecipe,
    agent_bin: &Path,
    cache_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<BuiltImage, ImageError> {
    validate_recipe(recipe)?;
    let agent = fs::read(agent_bin).map_err(|source| ImageError::ReadAgent {
        path: agent_bin.to_path_buf(),
        source,
    })?;

    let staging = store::staging_dir(cache_root, "image-")
        .map_err(io_error("create a staging directory in", cache_root))?;
    let result = build_in(recipe, &agent, cache_root, staging.path(), progress);
    // Directories unpacked read-only would stop the removal of their
    // contents when not running as root.
    make_tree_writable(staging.path());
    result
}

fn build_in(
    recipe: &ImageRecipe,
    agent: &[u8],
    cache_root: &Path,
    staging: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<BuiltImage, ImageError> {
    let tar_path = staging.join("rootfs.tar");
    progress(&format!(
        "mmdebstrap: {} (this takes a minute)",
        recipe.suite
    ));
    run_mmdebstrap(recipe, &tar_path)?;

    let (image, size_bytes) = ext4_from_tar(&tar_path, agent, staging, progress)?;
    fs::remove_file(&tar_path).map_err(io_error("remove", &tar_path))?;

    progress("hashing the image");
    let sha256 = store::sha256_file(&image).map_err(io_error("read", &image))?;
    publish(recipe, cache_root, &image, &sha256, size_bytes)
}

/// Turns a root file system tar into `<staging>/rootfs.ext4` with the
/// banger files added, and returns its path and size.
fn ext4_from_tar(
    tar_path: &Path,
    agent: &[u8],
    staging: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathBuf, u64), ImageError> {
    progress("unpacking rootfs.tar");
    let tree = staging.join("rootfs");
    fs::create_dir(&tree).map_err(io_error("create", &tree))?;
    let mut entries = unpack::unpack_tar(tar_path, &tree)?;

    progress("writing banger files");
    write_guest_files(&tree, agent, &mut entries)?;

    let (apparent_bytes, entry_count) = measure_tree(&tree)?;
    let size_bytes = image_size(apparent_bytes);
    let inodes = inode_count(size_bytes, entry_count.max(entries.len() as u64));
    let image = staging.join("rootfs.ext4");
    progress(&format!("mkfs.ext4: {} MiB", size_bytes / MIB));
    let file = fs::File::create(&image).map_err(io_error("create", &image))?;
    file.set_len(size_bytes)
        .map_err(io_error("set the size of", &image))?;
    drop(file);
    CommandSpec::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "bangerroot", "-N"])
        .arg(inodes.to_string())
        .arg("-d")
        .arg(&tree)
        .args(["-E", "root_owner=0:0"])
        .arg(&image)
        .arg(format!("{}M", size_bytes / MIB))
        .timeout(MKFS_TIMEOUT)
        .run()?;

    let pairs = pair_with_staged(&tree, entries)?;
    let commands = debugfs::fixup_commands(&pairs)?;
    progress(&format!(
        "debugfs: {} ownership and device commands",
        commands.len()
    ));
    debugfs::run_batch(&image, &commands, staging)?;

    make_tree_writable(&tree);
    fs::remove_dir_all(&tree).map_err(io_error("remove", &tree))?;
    store::fsync_path(&image).map_err(io_error("fsync", &image))?;
    Ok((image, size_bytes))
}

fn validate_recipe(recipe: &ImageRecipe) -> Result<(), ImageError> {
    let invalid = |reason: String| ImageError::InvalidRecipe {
        name: recipe.name.clone(),
        reason,
    };
    if recipe.name.trim().is_empty() {
        return Err(invalid("the name is empty".to_string()));
    }
    if !debian::is_valid_suite_name(&recipe.suite) {
        return Err(invalid(format!("invalid suite {:?}", recipe.suite)));
    }
    if let Some(bad) = recipe
        .packages
        .iter()
        .find(|package| !debian::is_valid_package_name(package))
    {
        return Err(invalid(format!("invalid package name {bad:?}")));
    }
    Ok(())
}

fn run_mmdebstrap(recipe: &ImageRecipe, tar_path: &Path) -> Result<(), ImageError> {
    let mut command = CommandSpec::new("mmdebstrap").arg("--variant=minbase");
    if !recipe.packages.is_empty() {
        command = command.arg(format!("--include={}", recipe.packages.join(",")));
    }
    if !nix::unistd::geteuid().is_root() {
        // Without root, mmdebstrap builds inside a user namespace.
        command = command.arg("--mode=unshare");
    }
    command
        .arg(&recipe.suite)
        .arg(tar_path)
        .timeout(MMDEBSTRAP_TIMEOUT)
        .run()?;
    Ok(())
}

/// Returns the image size: 1.5 times the tree's apparent size, at least
/// 1 GiB, rounded up to a whole MiB.
pub(super) fn image_size(apparent_bytes: u64) -> u64 {
    let target_bytes = apparent_bytes.saturating_add(apparent_bytes / 2);
    target_bytes.max(MIN_IMAGE_BYTES).div_ceil(MIB) * MIB
}

/// Returns mke2fs' default inode count for `size_bytes`, raised to twice
/// the number of entries when the tree contains many small files.
pub(super) fn inode_count(size_bytes: u64, entries: u64) -> u64 {
    (size_bytes / BYTES_PER_INODE).max(entries.saturating_mul(2))
}

/// Returns the apparent size (sum of `st_size`, hard links counted once)
/// and the number of entries under `root`.
fn measure_tree(root: &Path) -> Result<(u64, u64), ImageError> {
    let mut bytes = 0u64;
    let mut count = 0u64;
    let mut seen = HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(io_error("read", &dir))? {
            let entry = entry.map_err(io_error("read", &dir))?;
            let meta = entry.metadata().map_err(io_error("stat", &entry.path()))?;
            count += 1;
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            bytes = bytes.saturating_add(meta.len());
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok((bytes, count))
}

/// Pairs each archive entry with the metadata of what landed in the tree.
fn pair_with_staged(
    tree: &Path,
    entries: Vec<ExpectedEntry>,
) -> Result<Vec<(ExpectedEntry, Option<ActualMetadata>)>, ImageError> {
    let mut pairs = Vec::with_capacity(entries.len());
    for entry in entries {
        let actual = if entry.kind.is_special() {
            None
        } else {
            let path = tree.join(&entry.path);
            match fs::symlink_metadata(&path) {
                Ok(meta) => Some(ActualMetadata::from_metadata(&meta)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(io_error("stat", &path)(source)),
            }
        };
        pairs.push((entry, actual));
    }
    Ok(pairs)
}

/// Gives the owner write and search permission on every directory under
/// `root` so it can be removed. Failures are ignored: removal reports them.
fn make_tree_writable(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            let path = entry.path();
            if let Ok(meta) = fs::metadata(&path) {
                let mode = meta.permissions().mode() | 0o700;
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode));
            }
            make_tree_writable(&path);
        }
    }
}

/// Moves the image to `<cache>/images/<sha256>.ext4`, then writes its
/// metadata, then the recipe index; a crash in between leaves an image
/// that [`find_built`](super::find_built) does not return.
fn publish(
    recipe: &ImageRecipe,
    cache_root: &Path,
    image: &Path,
    sha256: &str,
    size_bytes: u64,
) -> Result<BuiltImage, ImageError> {
    let images = images_dir(cache_root);
    let recipes = images.join("recipes");
    fs::create_dir_all(&recipes).map_err(io_error("create", &recipes))?;

    let target = images.join(format!("{sha256}.ext4"));
    store::publish(image, &target).map_err(io_error("publish", &target))?;

    let metadata_path = images.join(format!("{sha256}.json"));
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let metadata = ImageMetadata {
        format: BUILD_FORMAT,
        sha256: sha256.to_string(),
        recipe: recipe.clone(),
        size_bytes,
        created,
    };
    let json =
        serde_json::to_vec_pretty(&metadata).map_err(|source| ImageError::EncodeMetadata {
            path: metadata_path.clone(),
            source,
        })?;
    store::write_atomic(&metadata_path, &json).map_err(io_error("write", &metadata_path))?;

    let index = recipes.join(recipe_key(recipe));
    store::write_atomic(&index, format!("{sha256}\n").as_bytes())
        .map_err(io_error("write", &index))?;
    Ok(BuiltImage {
        sha256: sha256.to_string(),
        path: target,
        size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{default_recipe, find_built};

    #[test]
    fn size_rules() {
        assert_eq!(image_size(0), MIN_IMAGE_BYTES);
        assert_eq!(image_size(600 * MIB), MIN_IMAGE_BYTES);
        assert_eq!(image_size(800 * MIB), 1200 * MIB);
        assert_eq!(image_size(1000 * MIB + 1), 1501 * MIB, "rounded up to MiB");
        assert_eq!(inode_count(1 << 30, 10_000), 65_536);
        assert_eq!(inode_count(1 << 30, 100_000), 200_000);
    }

    #[test]
    fn invalid_recipes_are_rejected() {
        let mut recipe = default_recipe("debian-bookworm").unwrap();
        recipe.packages.push("--hook=evil".to_string());
        let dir = tempfile::tempdir().unwrap();
        let err =
            build_image(&recipe, Path::new("/nonexistent"), dir.path(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, ImageError::InvalidRecipe { .. }), "{err}");

        let mut recipe = default_recipe("debian-bookworm").unwrap();
        recipe.suite = "../x".to_string();
        let err =
            build_image(&recipe, Path::new("/nonexistent"), dir.path(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, ImageError::InvalidRecipe { .. }), "{err}");
    }

    #[test]
    fn missing_agent_is_reported() {
        let recipe = default_recipe("debian-bookworm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("no-agent");
        let err = build_image(&recipe, &agent, dir.path(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, ImageError::ReadAgent { .. }), "{err}");
    }

    fn tar_header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(1_700_000_000);
        header.set_size(0);
        header
    }

    /// Returns a small root file system archive with the cases the fixup
    /// pass handles: foreign owners, setuid, a read-only directory, a device
    /// node, a FIFO, a symlink and a hard link.
    fn synthetic_rootfs_tar() -> Vec<u8> {
        use tar::EntryType;
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, mut header: tar::Header, data: &[u8]| {
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, data).unwrap();
        };

        add("./", tar_header(EntryType::Directory, 0o755, 0, 0), b"");
        for dir in [
            "./etc/",
            "./dev/",
            "./run/",
            "./usr/",
            "./usr/bin/",
            "./home/",
        ] {
            add(dir, tar_header(EntryType::Directory, 0o755, 0, 0), b"");
        }
        add(
            "./etc/hostname",
            tar_header(EntryType::Regular, 0o644, 0, 0),
            b"debian\n",
        );
        add(
            "./usr/bin/sudo",
            tar_header(EntryType::Regular, 0o4755, 0, 0),
            b"sudo",
        );
        add(
            "./home/dev/",
            tar_header(EntryType::Directory, 0o700, 1000, 1000),
            b"",
        );
        add(
            "./home/dev/notes",
            tar_header(EntryType::Regular, 0o640, 1000, 1000),
            b"x",
        );
        add(
            "./proc/",
            tar_header(EntryType::Directory, 0o555, 0, 0),
            b"",
        );

        let mut null = tar_header(EntryType::Char, 0o666, 0, 0);
        null.set_device_major(1).unwrap();
        null.set_device_minor(3).unwrap();
        add("./dev/null", null, b"");
        add(
            "./run/initctl",
            tar_header(EntryType::Fifo, 0o600, 0, 0),
            b"",
        );

        let mut symlink = tar_header(EntryType::Symlink, 0o777, 0, 0);
        builder
            .append_link(&mut symlink, "./bin", "usr/bin")
            .unwrap();
        let mut hard = tar_header(EntryType::Link, 0o4755, 0, 0);
        builder
            .append_link(&mut hard, "./usr/bin/sudoedit", "./usr/bin/sudo")
            .unwrap();
        builder.into_inner().unwrap()
    }

    /// Returns the first lines of `debugfs stat`: type, mode, owner, links.
    fn inode_fields(image: &Path, path: &str) -> String {
        let stat = debugfs::request(image, &format!("stat {path}")).unwrap();
        let first_lines: Vec<&str> = stat.lines().take(6).collect();
        first_lines.join(" | ")
    }

    #[test]
    fn ext4_from_synthetic_tar() {
        let path = std::env::var_os("PATH");
        if banger_process::find_in_path("mkfs.ext4", path.as_deref()).is_none() {
            banger_test_support::skip("e2fsprogs is not installed");
            return;
        }
        let staging = tempfile::tempdir().unwrap();
        let tar_path = staging.path().join("rootfs.tar");
        fs::write(&tar_path, synthetic_rootfs_tar()).unwrap();

        let (image, size) =
            ext4_from_tar(&tar_path, b"agent", staging.path(), &mut |_| {}).unwrap();

        assert_eq!(size, MIN_IMAGE_BYTES);
        assert!(
            !staging.path().join("rootfs").exists(),
            "staging tree removed"
        );
        let sudo = inode_fields(&image, "/usr/bin/sudo");
        assert!(sudo.contains("Mode:  04755"), "{sudo}");
        assert!(sudo.contains("User:     0   Group:     0"), "{sudo}");
        assert!(sudo.contains("Links: 2"), "hard link kept: {sudo}");
        let notes = inode_fields(&image, "/home/dev/notes");
        assert!(notes.contains("User:  1000   Group:  1000"), "{notes}");
        assert!(notes.contains("Mode:  0640"), "{notes}");
        let home = inode_fields(&image, "/home/dev");
        assert!(
            home.contains("Mode:  0700") && home.contains("User:  1000"),
            "{home}"
        );
        let proc_dir = inode_fields(&image, "/proc");
        assert!(proc_dir.contains("Mode:  0555"), "{proc_dir}");
        let null = debugfs::request(&image, "stat /dev/null").unwrap();
        assert!(null.contains("Type: character special"), "{null}");
        assert!(null.contains("Mode:  0666"), "{null}");
        assert!(null.contains("Device major/minor number: 01:03"), "{null}");
        let fifo = inode_fields(&image, "/run/initctl");
        assert!(
            fifo.contains("Type: FIFO") && fifo.contains("Mode:  0600"),
            "{fifo}"
        );
        let agent = inode_fields(&image, "/usr/local/bin/banger-agent");
        assert!(
            agent.contains("Mode:  0755") && agent.contains("User:     0"),
            "{agent}"
        );
        let unit_link = inode_fields(
            &image,
            "/etc/systemd/system/sysinit.target.wants/banger-agent.service",
        );
        assert!(
            unit_link.contains("Type: symlink") && unit_link.contains("User:     0"),
            "{unit_link}"
        );
        let root = inode_fields(&image, "/");
        assert!(
            root.contains("Mode:  0755") && root.contains("User:     0"),
            "{root}"
        );
        assert_eq!(
            debugfs::request(&image, "cat /etc/hostname").unwrap(),
            "banger\n"
        );
        let fsck = CommandSpec::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&image)
            .run();
        assert!(fsck.is_ok(), "{fsck:?}");
    }

    /// Builds the default image with the real mmdebstrap. Set
    /// `BANGER_IMAGE_TEST_CACHE` to keep the cache directory.
    #[test]
    #[ignore = "runs mmdebstrap against the Debian mirror configured in apt (about 1 minute here)"]
    fn build_default_image_with_mmdebstrap() {
        let temp = tempfile::tempdir().unwrap();
        let cache = std::env::var_os("BANGER_IMAGE_TEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| temp.path().to_path_buf());
        fs::create_dir_all(&cache).unwrap();
        let agent = cache.join("test-agent");
        fs::write(&agent, "#!/bin/sh\necho test agent\n").unwrap();
        let recipe = default_recipe("debian-bookworm").unwrap();

        let built = build_image(&recipe, &agent, &cache, &mut |line| eprintln!("{line}")).unwrap();

        assert_eq!(built.sha256, store::sha256_file(&built.path).unwrap());
        assert_eq!(find_built(&recipe, &cache), Some(built.clone()));
        assert!(built.size_bytes >= MIN_IMAGE_BYTES);
        let read = |path: &str| debugfs::request(&built.path, &format!("cat {path}")).unwrap();
        assert_eq!(read("/etc/hostname"), "banger\n");
        assert!(read("/etc/fstab").contains("LABEL=bangerwork /root ext4"));
        assert_eq!(
            read("/usr/local/bin/banger-agent"),
            "#!/bin/sh\necho test agent\n"
        );
        let stat = debugfs::request(&built.path, "stat /usr/bin/sudo").unwrap();
        assert!(
            stat.contains("Mode:  04755"),
            "sudo keeps its setuid bit: {stat}"
        );
        assert!(stat.contains("User:     0"), "{stat}");
        let devices = debugfs::request(&built.path, "ls -p /dev").unwrap();
        assert!(devices.contains("/020666/0/0/null/"), "{devices}");
        let fsck = CommandSpec::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&built.path)
            .run();
        assert!(fsck.is_ok(), "{fsck:?}");
        let leftovers = fs::read_dir(cache.join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "the staging directory is removed");
    }
}
