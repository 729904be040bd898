//! Files banger adds to every built root file system: fstab, hostname, the
//! agent and the systemd unit that starts it early in boot.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::unpack::{EntryKind, ExpectedEntry};
use super::{ImageError, io_error};

pub const FSTAB: &str = "\
LABEL=bangerroot / ext4 defaults 0 1
LABEL=bangerwork /root ext4 defaults,nofail,x-systemd.device-timeout=10s 0 2
";

pub const HOSTNAME: &str = "banger\n";

pub const AGENT_PATH: &str = "usr/local/bin/banger-agent";
pub const UNIT_PATH: &str = "etc/systemd/system/banger-agent.service";
pub const UNIT_LINK_PATH: &str = "etc/systemd/system/sysinit.target.wants/banger-agent.service";

/// The agent's unit. It starts right after the local file systems, and after
/// the work disk's mount on `/root`: that mount is `nofail`, so
/// `local-fs.target` does not wait for it, and commands must not run before
/// `/root` is in place. When the work disk is missing, the mount fails after
/// its device timeout and the agent starts anyway.
pub const AGENT_UNIT: &str = "\
[Unit]
Description=banger guest agent
DefaultDependencies=no
After=local-fs.target root.mount
Wants=local-fs.target root.mount
[Service]
ExecStart=/usr/local/bin/banger-agent serve
Restart=always
RestartSec=1
[Install]
WantedBy=sysinit.target
";

/// Writes the banger files into the staging `tree` and records them in
/// `entries` as owned by root, replacing the archive's record of a path
/// that already existed.
pub fn write_guest_files(
    tree: &Path,
    agent: &[u8],
    entries: &mut Vec<ExpectedEntry>,
) -> Result<(), ImageError> {
    let files: [(&str, &[u8], u32); 4] = [
        ("etc/fstab", FSTAB.as_bytes(), 0o644),
        ("etc/hostname", HOSTNAME.as_bytes(), 0o644),
        (AGENT_PATH, agent, 0o755),
        (UNIT_PATH, AGENT_UNIT.as_bytes(), 0o644),
    ];
    for (path, data, mode) in files {
        ensure_parents(tree, path, entries)?;
        let target = tree.join(path);
        remove_existing(&target)?;
        fs::write(&target, data).map_err(io_error("write", &target))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .map_err(io_error("set permissions of", &target))?;
        upsert(entries, root_entry(path, EntryKind::File, mode));
    }

    ensure_parents(tree, UNIT_LINK_PATH, entries)?;
    let link = tree.join(UNIT_LINK_PATH);
    remove_existing(&link)?;
    let link_target = format!("/{UNIT_PATH}");
    std::os::unix::fs::symlink(&link_target, &link).map_err(io_error("create symlink", &link))?;
    upsert(
        entries,
        root_entry(UNIT_LINK_PATH, EntryKind::Symlink, 0o777),
    );
    Ok(())
}

fn root_entry(path: &str, kind: EntryKind, mode: u32) -> ExpectedEntry {
    ExpectedEntry {
        path: path.to_string(),
        kind,
        mode,
        uid: 0,
        gid: 0,
    }
}

/// Creates the missing parent directories of `path` with mode 0755 and
/// records them as owned by root.
fn ensure_parents(
    tree: &Path,
    path: &str,
    entries: &mut Vec<ExpectedEntry>,
) -> Result<(), ImageError> {
    let mut current = String::new();
    let components: Vec<&str> = path.split('/').collect();
    for component in &components[..components.len() - 1] {
        if !current.is_empty() {
            current.push('/');
        }
        current.push_str(component);
        let dir = tree.join(&current);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::GuestPathConflict {
                    image: tree.to_path_buf(),
                    path: format!("/{current}"),
                    reason: "exists in the root file system and is not a directory",
                });
            }
            Err(_) => {
                fs::create_dir(&dir).map_err(io_error("create", &dir))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_error("set permissions of", &dir))?;
                upsert(entries, root_entry(&current, EntryKind::Directory, 0o755));
            }
        }
    }
    Ok(())
}

fn remove_existing(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(ImageError::GuestPathConflict {
            image: path.to_path_buf(),
            path: path.display().to_string(),
            reason: "is a directory in the root file system",
        }),
        Ok(_) => fs::remove_file(path).map_err(io_error("remove", path)),
        Err(_) => Ok(()),
    }
}

fn upsert(entries: &mut Vec<ExpectedEntry>, entry: ExpectedEntry) {
    entries.retain(|existing| existing.path != entry.path);
    entries.push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn guest_files_are_written_and_recorded() {
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("etc")).unwrap();
        fs::write(tree.path().join("etc/hostname"), "debian\n").unwrap();
        let mut entries = vec![ExpectedEntry {
            path: "etc/hostname".to_string(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 5,
            gid: 5,
        }];

        write_guest_files(tree.path(), b"agent", &mut entries).unwrap();

        let read = |path: &str| fs::read_to_string(tree.path().join(path)).unwrap();
        assert_eq!(read("etc/hostname"), "banger\n");
        assert!(read("etc/fstab").contains("LABEL=bangerroot / ext4 defaults 0 1"));
        assert!(read(UNIT_PATH).contains("ExecStart=/usr/local/bin/banger-agent serve"));
        assert_eq!(
            fs::read_link(tree.path().join(UNIT_LINK_PATH)).unwrap(),
            Path::new("/etc/systemd/system/banger-agent.service")
        );
        let agent_mode = fs::metadata(tree.path().join(AGENT_PATH)).unwrap().mode();
        assert_eq!(agent_mode & 0o7777, 0o755);

        let hostname: Vec<&ExpectedEntry> = entries
            .iter()
            .filter(|e| e.path == "etc/hostname")
            .collect();
        assert_eq!(hostname.len(), 1, "the archive record is replaced");
        assert_eq!(
            (hostname[0].mode, hostname[0].uid, hostname[0].gid),
            (0o644, 0, 0)
        );
        for dir in [
            "usr",
            "usr/local",
            "usr/local/bin",
            "etc/systemd/system/sysinit.target.wants",
        ] {
            let entry = entries.iter().find(|e| e.path == dir).unwrap();
            assert_eq!(entry.kind, EntryKind::Directory, "{dir}");
            assert_eq!((entry.mode, entry.uid), (0o755, 0), "{dir}");
        }
    }
}
