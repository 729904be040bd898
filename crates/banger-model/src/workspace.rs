use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Directory in the guest that `vm workspace prepare` fills when no
/// `--guest-path` is given. `/root` is the VM's work disk.
pub const DEFAULT_GUEST_PATH: &str = "/root/repo";

/// A host git repository copied into a VM by `banger vm workspace prepare`.
///
/// It is recorded only after the guest reported a complete copy, so a VM
/// whose record has a workspace contains a git repository at `guest_path`
/// whose HEAD is `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Absolute path of the repository in the guest.
    pub guest_path: String,
    /// Absolute path of the repository's top-level directory on the host.
    pub host_path: String,
    /// Full hex id of the commit HEAD pointed to; `None` for a repository
    /// without commits.
    pub head: Option<String>,
    /// Branch HEAD pointed to; `None` when HEAD was detached.
    pub branch: Option<String>,
    /// Whether untracked (not ignored) files were copied too.
    #[serde(default)]
    pub include_untracked: bool,
    /// RFC 3339 time in UTC at which the copy completed.
    pub prepared_at: String,
}

impl Workspace {
    /// Returns the first seven hex digits of `head`, as `git log --oneline` shows them.
    pub fn short_head(&self) -> Option<&str> {
        self.head.as_deref().map(|head| &head[..head.len().min(7)])
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WorkspaceError {
    #[error(
        "invalid guest path {0:?}: expected an absolute path below / without `.` or `..` parts"
    )]
    GuestPath(String),
    #[error("invalid host path {0:?}: expected an absolute path")]
    HostPath(String),
    #[error("invalid commit id {0:?}: expected 40 or 64 lowercase hex digits")]
    Head(String),
    #[error(
        "invalid branch name {0:?}: expected a git branch name without spaces or control characters"
    )]
    Branch(String),
}

/// Checks the fields a client sends when it records a workspace.
pub fn validate_workspace(workspace: &Workspace) -> Result<(), WorkspaceError> {
    validate_guest_path(&workspace.guest_path)?;
    let host = &workspace.host_path;
    if !host.starts_with('/') || host.contains('\0') {
        return Err(WorkspaceError::HostPath(host.clone()));
    }
    if let Some(head) = &workspace.head {
        let hex = head
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || !(head.len() == 40 || head.len() == 64) {
            return Err(WorkspaceError::Head(head.clone()));
        }
    }
    if let Some(branch) = &workspace.branch {
        let bad = branch.is_empty()
            || branch.starts_with('-')
            || branch.contains("..")
            || branch
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
        if bad {
            return Err(WorkspaceError::Branch(branch.clone()));
        }
    }
    Ok(())
}

/// Checks that `path` is an absolute, normalised guest directory other than `/`.
pub fn validate_guest_path(path: &str) -> Result<(), WorkspaceError> {
    let invalid = || WorkspaceError::GuestPath(path.to_string());
    if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') || path.contains('\0') {
        return Err(invalid());
    }
    if path[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> Workspace {
        Workspace {
            guest_path: DEFAULT_GUEST_PATH.into(),
            host_path: "/home/me/src/proj".into(),
            head: Some("1a2b3c4d5e6f708192a3b4c5d6e7f80912345678".into()),
            branch: Some("feature/x".into()),
            include_untracked: false,
            prepared_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn valid_workspace_passes() {
        assert_eq!(validate_workspace(&workspace()), Ok(()));
        let mut detached = workspace();
        detached.branch = None;
        detached.head = None;
        assert_eq!(validate_workspace(&detached), Ok(()));
    }

    #[test]
    fn guest_paths_are_checked() {
        for bad in [
            "",
            "/",
            "root/repo",
            "/root/",
            "/root//repo",
            "/root/../etc",
            "/a/./b",
        ] {
            assert!(validate_guest_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["/root/repo", "/srv/my repo", "/root/ünï"] {
            assert_eq!(validate_guest_path(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn head_and_branch_are_checked() {
        let mut bad_head = workspace();
        bad_head.head = Some("HEAD".into());
        assert!(matches!(
            validate_workspace(&bad_head),
            Err(WorkspaceError::Head(_))
        ));
        let mut bad_branch = workspace();
        bad_branch.branch = Some("a b".into());
        assert!(matches!(
            validate_workspace(&bad_branch),
            Err(WorkspaceError::Branch(_))
        ));
    }

    #[test]
    fn short_head_is_seven_digits() {
        assert_eq!(workspace().short_head(), Some("1a2b3c4"));
    }
}
