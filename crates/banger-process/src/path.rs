use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Returns the Debian package that ships `program`, for the hint of
/// [`crate::CommandError::NotFound`].
pub fn debian_package_for(program: &str) -> Option<&'static str> {
    match program {
        "apt-get" => Some("apt"),
        "mmdebstrap" => Some("mmdebstrap"),
        "mkfs.ext4" | "debugfs" | "dumpe2fs" | "mke2fs" | "e2fsck" => Some("e2fsprogs"),
        "cpio" => Some("cpio"),
        "git" => Some("git"),
        "ssh-keygen" => Some("openssh-client"),
        "nft" => Some("nftables"),
        // Debian 12 ships resolvectl in its own package.
        "resolvectl" => Some("systemd-resolved"),
        "qemu-system-x86_64" => Some("qemu-system-x86"),
        _ => None,
    }
}

/// Finds an executable named `program` in the directories of `path_var`
/// (a `PATH`-style list). A `program` containing `/` is checked as given.
pub fn find_in_path(program: impl AsRef<OsStr>, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let program = program.as_ref();
    if program.as_bytes().contains(&b'/') {
        let candidate = PathBuf::from(program);
        return is_executable(&candidate).then_some(candidate);
    }
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) => meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn find_in_path_skips_non_executables() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        fs::write(first.path().join("tool"), "not executable").unwrap();
        let expected = write_script(second.path(), "tool", "exit 0");
        let path_var = std::env::join_paths([first.path(), second.path()]).unwrap();

        assert_eq!(find_in_path("tool", Some(&path_var)), Some(expected));
        assert_eq!(find_in_path("missing", Some(&path_var)), None);
        assert_eq!(find_in_path("tool", None), None);
    }

    #[test]
    fn find_in_path_checks_paths_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "tool", "exit 0");

        assert_eq!(find_in_path(&script, None), Some(script.clone()));
        assert_eq!(find_in_path("/nonexistent/banger-process-test", None), None);
    }

    #[test]
    fn debian_packages_of_known_programs() {
        assert_eq!(debian_package_for("apt-get"), Some("apt"));
        assert_eq!(debian_package_for("mmdebstrap"), Some("mmdebstrap"));
        assert_eq!(debian_package_for("debugfs"), Some("e2fsprogs"));
        assert_eq!(debian_package_for("git"), Some("git"));
        assert_eq!(debian_package_for("nft"), Some("nftables"));
        assert_eq!(debian_package_for("banger-no-such-tool"), None);
    }
}
