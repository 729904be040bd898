//! Writing host files into an ext4 image without mounting it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ImageError;
use super::debugfs::{self, DirEntry, quote};

/// A host file to place in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectFile {
    pub host_path: PathBuf,
    /// Absolute path inside the image.
    pub guest_path: PathBuf,
    /// Permission bits, for example `0o755`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Writes `files` into the ext4 `image` with one debugfs batch, replacing
/// existing files. Missing parent directories are created with mode 0755 and
/// the owner of the file that needs them.
pub fn inject_files(image: &Path, files: &[InjectFile]) -> Result<(), ImageError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut listings = Listings::new(image);
    let mut commands = Vec::new();
    for file in files {
        let guest = validate_guest_path(&file.guest_path)?;
        let host = file
            .host_path
            .to_str()
            .ok_or_else(|| ImageError::UnquotablePath {
                path: file.host_path.display().to_string(),
                reason: "is not valid UTF-8",
            })?;
        if !file.host_path.is_file() {
            return Err(ImageError::InjectSourceMissing {
                path: file.host_path.clone(),
            });
        }

        let (parent, name) = debugfs::split_parent(&guest);
        ensure_directories(&mut listings, parent, file, &mut commands)?;
        match listings.get(parent)?.and_then(|entries| entries.get(name)) {
            Some(existing) if existing.is_dir() => {
                return Err(ImageError::GuestPathConflict {
                    image: image.to_path_buf(),
                    path: guest.clone(),
                    reason: "is a directory",
                });
            }
            Some(_) => commands.push(format!("rm {}", quote(&guest)?)),
            None => {}
        }

        let quoted = quote(&guest)?;
        commands.push(format!("cd {}", quote(parent)?));
        commands.push(format!("write {} {}", quote(host)?, quote(name)?));
        commands.push("cd \"/\"".to_string());
        commands.push(format!(
            "sif {quoted} mode 0{:o}",
            0o100_000 | (file.mode & 0o7777)
        ));
        commands.push(format!("sif {quoted} uid {}", file.uid));
        commands.push(format!("sif {quoted} gid {}", file.gid));
        listings.insert(parent, name, 0o100_000 | (file.mode & 0o7777));
    }

    let scratch = match image.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    debugfs::run_batch(image, &commands, &scratch)
}

/// Queues `mkdir` for each missing directory on the way to `dir`.
fn ensure_directories(
    listings: &mut Listings<'_>,
    dir: &str,
    file: &InjectFile,
    commands: &mut Vec<String>,
) -> Result<(), ImageError> {
    let mut current = String::new();
    for component in dir.split('/').filter(|part| !part.is_empty()) {
        let parent = if current.is_empty() {
            "/".to_string()
        } else {
            current.clone()
        };
        current = format!("{current}/{component}");
        match listings
            .get(&parent)?
            .and_then(|entries| entries.get(component))
        {
            Some(existing) if existing.is_dir() => {}
            Some(_) => {
                return Err(ImageError::GuestPathConflict {
                    image: listings.image.to_path_buf(),
                    path: current,
                    reason: "exists and is not a directory",
                });
            }
            None => {
                let quoted = quote(&current)?;
                commands.push(format!("mkdir {quoted}"));
                commands.push(format!("sif {quoted} mode 040755"));
                commands.push(format!("sif {quoted} uid {}", file.uid));
                commands.push(format!("sif {quoted} gid {}", file.gid));
                listings.insert(&parent, component, 0o040_755);
                listings.created(&current);
            }
        }
    }
    Ok(())
}

fn validate_guest_path(path: &Path) -> Result<String, ImageError> {
    let invalid = |reason| ImageError::InvalidGuestPath {
        path: path.to_path_buf(),
        reason,
    };
    let text = path.to_str().ok_or_else(|| invalid("is not valid UTF-8"))?;
    if !text.starts_with('/') {
        return Err(invalid("is not absolute"));
    }
    let parts: Vec<&str> = text.split('/').filter(|part| !part.is_empty()).collect();
    if parts.is_empty() {
        return Err(invalid("names the root directory"));
    }
    if parts.iter().any(|part| *part == "." || *part == "..") {
        return Err(invalid("contains `.` or `..`"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Directory listings of the image, read on first use and updated with the
/// changes the batch will make.
struct Listings<'a> {
    image: &'a Path,
    dirs: HashMap<String, Option<HashMap<String, DirEntry>>>,
}

impl<'a> Listings<'a> {
    fn new(image: &'a Path) -> Self {
        Listings {
            image,
            dirs: HashMap::new(),
        }
    }

    fn get(&mut self, dir: &str) -> Result<Option<&HashMap<String, DirEntry>>, ImageError> {
        if !self.dirs.contains_key(dir) {
            let listing = debugfs::list_dir(self.image, dir)?;
            self.dirs.insert(dir.to_string(), listing);
        }
        Ok(self.dirs.get(dir).and_then(Option::as_ref))
    }

    fn insert(&mut self, dir: &str, name: &str, mode: u32) {
        if let Some(Some(entries)) = self.dirs.get_mut(dir) {
            entries.insert(name.to_string(), DirEntry { mode });
        }
    }

    fn created(&mut self, dir: &str) {
        self.dirs.insert(dir.to_string(), Some(HashMap::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_process::CommandSpec;
    use std::fs;

    fn have_e2fsprogs() -> bool {
        let path = std::env::var_os("PATH");
        ["mkfs.ext4", "debugfs"]
            .iter()
            .all(|tool| banger_process::find_in_path(tool, path.as_deref()).is_some())
    }

    fn make_image(dir: &Path) -> PathBuf {
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/hostname"), "old\n").unwrap();
        let image = dir.join("test.ext4");
        CommandSpec::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
            .arg(&tree)
            .arg(&image)
            .arg("16M")
            .run()
            .unwrap();
        image
    }

    fn cat(image: &Path, path: &str) -> String {
        debugfs::request(image, &format!("cat {}", quote(path).unwrap())).unwrap()
    }

    /// Returns (type, permission bits, uid, gid) from `debugfs stat`.
    fn stat(image: &Path, path: &str) -> (String, u32, u32, u32) {
        let output = debugfs::request(image, &format!("stat {}", quote(path).unwrap())).unwrap();
        let tokens: Vec<&str> = output.split_whitespace().collect();
        let after = |label: &str| {
            let index = tokens
                .iter()
                .position(|token| *token == label)
                .unwrap_or_else(|| panic!("no {label} in stat output for {path}:\n{output}"));
            tokens[index + 1]
        };
        (
            after("Type:").to_string(),
            u32::from_str_radix(after("Mode:"), 8).unwrap(),
            after("User:").parse().unwrap(),
            after("Group:").parse().unwrap(),
        )
    }

    #[test]
    fn inject_writes_and_replaces_files() {
        if !have_e2fsprogs() {
            banger_test_support::skip("e2fsprogs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = make_image(dir.path());
        let agent = dir.path().join("agent");
        fs::write(&agent, "agent binary\n").unwrap();
        let hostname = dir.path().join("hostname");
        fs::write(&hostname, "new\n").unwrap();
        let key = dir.path().join("key \"quoted\"");
        fs::write(&key, "ssh-ed25519 AAAA\n").unwrap();

        let files = [
            InjectFile {
                host_path: agent.clone(),
                guest_path: "/usr/local/bin/banger-agent".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            InjectFile {
                host_path: hostname,
                guest_path: "/etc/hostname".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            InjectFile {
                host_path: key,
                guest_path: "/home/dev user/.ssh/authorized keys".into(),
                mode: 0o600,
                uid: 1000,
                gid: 1001,
            },
        ];
        inject_files(&image, &files).unwrap();

        assert_eq!(cat(&image, "/usr/local/bin/banger-agent"), "agent binary\n");
        assert_eq!(
            stat(&image, "/usr/local/bin/banger-agent"),
            ("regular".to_string(), 0o755, 0, 0)
        );
        assert_eq!(
            stat(&image, "/usr/local/bin"),
            ("directory".to_string(), 0o755, 0, 0)
        );
        assert_eq!(cat(&image, "/etc/hostname"), "new\n");
        assert_eq!(
            stat(&image, "/etc/hostname"),
            ("regular".to_string(), 0o644, 0, 0)
        );
        assert_eq!(
            cat(&image, "/home/dev user/.ssh/authorized keys"),
            "ssh-ed25519 AAAA\n"
        );
        assert_eq!(
            stat(&image, "/home/dev user/.ssh/authorized keys"),
            ("regular".to_string(), 0o600, 1000, 1001)
        );
        assert_eq!(
            stat(&image, "/home/dev user"),
            ("directory".to_string(), 0o755, 1000, 1001)
        );

        // Injecting again replaces the file.
        fs::write(&agent, "agent v2\n").unwrap();
        inject_files(&image, &files[..1]).unwrap();
        assert_eq!(cat(&image, "/usr/local/bin/banger-agent"), "agent v2\n");

        let fsck = CommandSpec::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&image)
            .run();
        assert!(fsck.is_ok(), "e2fsck finds the image clean: {fsck:?}");
    }

    #[test]
    fn inject_rejects_bad_targets() {
        if !have_e2fsprogs() {
            banger_test_support::skip("e2fsprogs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = make_image(dir.path());
        let source = dir.path().join("source");
        fs::write(&source, "x").unwrap();
        let file = |guest: &str| InjectFile {
            host_path: source.clone(),
            guest_path: guest.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };

        let err = inject_files(&image, &[file("/etc")]).unwrap_err();
        assert!(matches!(err, ImageError::GuestPathConflict { .. }), "{err}");
        let err = inject_files(&image, &[file("/etc/hostname/x")]).unwrap_err();
        assert!(matches!(err, ImageError::GuestPathConflict { .. }), "{err}");
        let err = inject_files(&image, &[file("relative/path")]).unwrap_err();
        assert!(matches!(err, ImageError::InvalidGuestPath { .. }), "{err}");
        let err = inject_files(&image, &[file("/etc/../x")]).unwrap_err();
        assert!(matches!(err, ImageError::InvalidGuestPath { .. }), "{err}");
        let missing = InjectFile {
            host_path: dir.path().join("missing"),
            ..file("/etc/x")
        };
        let err = inject_files(&image, &[missing]).unwrap_err();
        assert!(
            matches!(err, ImageError::InjectSourceMissing { .. }),
            "{err}"
        );
        assert_eq!(cat(&image, "/etc/hostname"), "old\n", "image unchanged");
    }
}
