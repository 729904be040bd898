//! The host repository: its top-level directory, HEAD, branch, identity and
//! the files a workspace copies, all read with the user's own `git`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use banger_process::{CommandError, CommandOutput, CommandSpec};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{path} not found")]
    NoPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not in a git repository")]
    NotARepository {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error(
        "{path} is a bare repository, which has no files to copy; clone it and prepare the clone"
    )]
    Bare { path: PathBuf },
    #[error(
        "{path} has submodules ({first}), which workspaces do not copy; prepare a repository without submodules"
    )]
    Submodules { path: PathBuf, first: String },
    #[error("reading the repository {path} failed")]
    Git {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
}

/// A host git repository with a work tree.
#[derive(Debug, Clone)]
pub struct HostRepo {
    /// Top-level directory of the work tree, canonical.
    pub root: PathBuf,
    /// Full commit id of HEAD; `None` before the first commit.
    pub head: Option<String>,
    /// Branch HEAD points to, also before the first commit; `None` when
    /// HEAD is detached.
    pub branch: Option<String>,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
}

impl HostRepo {
    /// Finds the repository that contains `path`. Bare repositories and
    /// repositories with submodules are rejected.
    pub fn open(path: &Path) -> Result<Self, GitError> {
        let dir = std::fs::canonicalize(path).map_err(|source| GitError::NoPath {
            path: path.to_path_buf(),
            source,
        })?;
        let bare =
            run_git(&dir, &["rev-parse", "--is-bare-repository"], &[]).map_err(|source| {
                match source {
                    CommandError::Failed { .. } => GitError::NotARepository {
                        path: dir.clone(),
                        source,
                    },
                    other => GitError::Git {
                        path: dir.clone(),
                        source: other,
                    },
                }
            })?;
        if text(&bare.stdout) == "true" {
            return Err(GitError::Bare { path: dir });
        }
        let root = git_text(&dir, &["rev-parse", "--show-toplevel"], &[])?
            .map(PathBuf::from)
            .ok_or_else(|| GitError::Bare { path: dir.clone() })?;
        check_submodules(&root)?;
        let head = git_text(
            &root,
            &["rev-parse", "-q", "--verify", "HEAD^{commit}"],
            &[1],
        )?;
        let branch = git_text(&root, &["symbolic-ref", "-q", "--short", "HEAD"], &[1])?;
        let user_name = git_text(&root, &["config", "--get", "user.name"], &[1])?;
        let user_email = git_text(&root, &["config", "--get", "user.email"], &[1])?;
        Ok(Self {
            root,
            head,
            branch,
            user_name,
            user_email,
        })
    }

    /// Paths, relative to the root, of the tracked files and, with
    /// `include_untracked`, the untracked files that no ignore rule matches.
    /// Sorted and without duplicates (a conflicted file has several index
    /// entries).
    pub fn list_files(&self, include_untracked: bool) -> Result<Vec<PathBuf>, GitError> {
        let mut files = split_nul(self.git(&["ls-files", "-z", "--cached"])?);
        if include_untracked {
            files.extend(split_nul(self.git(&[
                "ls-files",
                "-z",
                "--others",
                "--exclude-standard",
            ])?));
        }
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// Writes a bundle with the history of HEAD to `target`. With `base` it
    /// holds only the commits that `base` does not reach, so the receiver
    /// needs `base` already.
    pub fn create_bundle(&self, target: &Path, base: Option<&str>) -> Result<(), GitError> {
        let exclude = base.map(|base| format!("^{base}"));
        let mut args = vec![
            os("bundle"),
            os("create"),
            os("-q"),
            target.as_os_str(),
            os("HEAD"),
        ];
        if let Some(exclude) = &exclude {
            args.push(os(exclude));
        }
        run_git(&self.root, &args, &[]).map_err(|source| GitError::Git {
            path: self.root.clone(),
            source,
        })?;
        Ok(())
    }

    /// Returns whether `commit` names a commit in this repository.
    pub fn has_commit(&self, commit: &str) -> Result<bool, GitError> {
        let spec = format!("{commit}^{{commit}}");
        let args = [os("rev-parse"), os("-q"), os("--verify"), os(&spec)];
        run_git(&self.root, &args, &[1])
            .map(|output| output.status.success())
            .map_err(|source| GitError::Git {
                path: self.root.clone(),
                source,
            })
    }

    fn git(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        run_git(&self.root, args, &[])
            .map(|output| output.stdout)
            .map_err(|source| GitError::Git {
                path: self.root.clone(),
                source,
            })
    }
}

/// Returns the commit that HEAD of the repository at `path` points to now,
/// for the staleness check of `vm exec`.
pub fn current_head(path: &Path) -> Result<Option<String>, GitError> {
    git_text(
        path,
        &["rev-parse", "-q", "--verify", "HEAD^{commit}"],
        &[1],
    )
}

/// Rejects a repository with a `.gitmodules` file or a gitlink (mode
/// 160000) in its index.
fn check_submodules(root: &Path) -> Result<(), GitError> {
    if root.join(".gitmodules").exists() {
        return Err(GitError::Submodules {
            path: root.to_path_buf(),
            first: ".gitmodules".into(),
        });
    }
    let output =
        run_git(root, &["ls-files", "-z", "--stage"], &[]).map_err(|source| GitError::Git {
            path: root.to_path_buf(),
            source,
        })?;
    for entry in output.stdout.split(|&b| b == 0) {
        if entry.starts_with(b"160000 ") {
            let path = entry
                .splitn(2, |&b| b == b'\t')
                .nth(1)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            return Err(GitError::Submodules {
                path: root.to_path_buf(),
                first: path,
            });
        }
    }
    Ok(())
}

/// Runs git in `dir` and returns its trimmed output, or `None` when it
/// printed nothing or exited with one of the `absent` codes.
fn git_text(dir: &Path, args: &[&str], absent: &[i32]) -> Result<Option<String>, GitError> {
    let output = run_git(dir, args, absent).map_err(|source| GitError::Git {
        path: dir.to_path_buf(),
        source,
    })?;
    if !output.status.success() {
        return Ok(None);
    }
    let value = text(&output.stdout);
    Ok((!value.is_empty()).then_some(value))
}

/// Runs `git args...` in `dir`. Exit codes in `accepted` count as success,
/// besides 0.
fn run_git<S: AsRef<OsStr>>(
    dir: &Path,
    args: &[S],
    accepted: &[i32],
) -> Result<CommandOutput, CommandError> {
    CommandSpec::new("git")
        .args(args)
        .current_dir(dir)
        .accept_exit_codes(accepted)
        .run()
}

fn os(text: &str) -> &OsStr {
    OsStr::new(text)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn split_nul(bytes: Vec<u8>) -> Vec<PathBuf> {
    bytes
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| PathBuf::from(OsString::from_vec(part.to_vec())))
        .collect()
}

/// The path as raw bytes, for output that must keep non-UTF-8 names.
pub fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::testing::{commit_all, git_in, new_repo};

    #[test]
    fn repo_reports_head_branch_and_identity() {
        let dir = new_repo();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        commit_all(dir.path(), "first");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let repo = HostRepo::open(&dir.path().join("sub")).unwrap();
        assert_eq!(repo.root, std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(repo.branch.as_deref(), Some("main"));
        assert_eq!(repo.head.as_ref().map(String::len), Some(40));
        assert_eq!(repo.user_name.as_deref(), Some("Test User"));
        assert_eq!(repo.user_email.as_deref(), Some("test@example.com"));
    }

    #[test]
    fn empty_and_detached_repos() {
        let dir = new_repo();
        let repo = HostRepo::open(dir.path()).unwrap();
        assert_eq!(repo.head, None);
        assert_eq!(repo.branch.as_deref(), Some("main"));
        assert!(repo.list_files(true).unwrap().is_empty());

        std::fs::write(dir.path().join("a"), "a").unwrap();
        commit_all(dir.path(), "first");
        git_in(dir.path(), &["checkout", "-q", "--detach", "HEAD"]);
        let repo = HostRepo::open(dir.path()).unwrap();
        assert_eq!(repo.branch, None);
        assert!(repo.head.is_some());
    }

    #[test]
    fn file_list_respects_untracked_and_ignored() {
        let dir = new_repo();
        std::fs::write(dir.path().join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(dir.path().join("tracked.txt"), "t").unwrap();
        commit_all(dir.path(), "first");
        std::fs::write(dir.path().join("new.txt"), "u").unwrap();
        std::fs::write(dir.path().join("debug.log"), "i").unwrap();
        let repo = HostRepo::open(dir.path()).unwrap();
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files.iter().map(|f| f.display().to_string()).collect()
        };
        assert_eq!(
            names(repo.list_files(false).unwrap()),
            vec![".gitignore", "tracked.txt"]
        );
        assert_eq!(
            names(repo.list_files(true).unwrap()),
            vec![".gitignore", "new.txt", "tracked.txt"]
        );
    }

    #[test]
    fn bare_repo_and_plain_dir_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        git_in(dir.path(), &["init", "-q", "--bare", "b.git"]);
        let err = HostRepo::open(&dir.path().join("b.git")).unwrap_err();
        assert!(matches!(err, GitError::Bare { .. }), "{err}");
        assert!(err.to_string().contains("bare repository"), "{err}");

        let plain = tempfile::tempdir().unwrap();
        let err = HostRepo::open(plain.path()).unwrap_err();
        assert!(matches!(err, GitError::NotARepository { .. }), "{err}");
    }

    #[test]
    fn submodules_are_rejected() {
        let inner = new_repo();
        std::fs::write(inner.path().join("x"), "x").unwrap();
        commit_all(inner.path(), "inner");
        let outer = new_repo();
        git_in(
            outer.path(),
            &[
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                inner.path().to_str().unwrap(),
                "lib",
            ],
        );
        let err = HostRepo::open(outer.path()).unwrap_err();
        assert!(matches!(err, GitError::Submodules { .. }), "{err}");
        assert!(err.to_string().contains("submodules"), "{err}");
    }
}
