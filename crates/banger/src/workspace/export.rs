//! `banger vm workspace export`: the guest workspace's changes as a binary
//! diff that `git apply` accepts on the host.

use std::io::Write;
use std::path::{Path, PathBuf};

use banger_api::{ErrorKind, VmRecord};

use super::script::{EMPTY_TREE, EXPORT, PREPARED_REF, sh_argv};
use super::short;
use crate::client::Client;
use crate::remote::{self, Input, Output, RemoteCommand, cli_error};
use crate::render::CliError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("VM {vm:?} has no workspace")]
    NoWorkspace { vm: String },
    #[error("invalid base commit {0:?}: a commit or ref must not start with '-'")]
    BaseCommit(String),
    #[error("exporting the workspace {guest_path} of VM {vm:?} failed (exit code {code})")]
    Guest {
        vm: String,
        guest_path: String,
        code: i32,
    },
    #[error("failed to write the diff to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Base an export diffs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportBase<'a> {
    /// The commit the workspace was prepared at.
    PreparedCommit,
    /// A commit or ref in the guest repository.
    Commit(&'a str),
    /// The tree as the last prepare copied it, so the diff holds only the
    /// changes made in the guest.
    PreparedTree,
}

/// Writes the diff of the VM's workspace against `base` to `output`, or to
/// standard output.
pub async fn export(
    client: &Client,
    vm_name: &str,
    output: Option<&Path>,
    base: ExportBase<'_>,
) -> Result<(), CliError> {
    let vm: VmRecord = client.get(&format!("/vms/{vm_name}")).await?;
    let workspace = vm.workspace.ok_or_else(|| {
        let error = ExportError::NoWorkspace {
            vm: vm_name.to_string(),
        };
        cli_error(ErrorKind::Conflict, &error).hint(format!(
            "copy a repository into it first with `banger vm workspace prepare {vm_name} PATH`"
        ))
    })?;
    let base = match base {
        ExportBase::Commit(base) if base.starts_with('-') || base.is_empty() => {
            return Err(cli_error(
                ErrorKind::Invalid,
                &ExportError::BaseCommit(base.to_string()),
            ));
        }
        ExportBase::Commit(base) => base.to_string(),
        ExportBase::PreparedCommit => workspace
            .head
            .clone()
            .unwrap_or_else(|| EMPTY_TREE.to_string()),
        ExportBase::PreparedTree => PREPARED_REF.to_string(),
    };
    let command = RemoteCommand {
        argv: sh_argv(
            EXPORT,
            "banger-export",
            [workspace.guest_path.clone(), base.clone()],
        ),
        cwd: Some("/".into()),
        ..Default::default()
    };
    let finished = remote::run(client, vm_name, command, Input::Null, Output::Capture).await?;
    let code = finished.status.shell_code();
    if code != 0 {
        let error = ExportError::Guest {
            vm: vm_name.to_string(),
            guest_path: workspace.guest_path.clone(),
            code,
        };
        let stderr = String::from_utf8_lossy(&finished.stderr).trim().to_string();
        let mut failure = cli_error(ErrorKind::Internal, &error).cause(stderr.clone());
        if stderr.contains("bad revision") || stderr.contains("unknown revision") {
            failure = if base == PREPARED_REF {
                failure.hint(format!(
                    "the workspace was prepared by an older banger; prepare it again with `banger vm workspace prepare {vm_name}`"
                ))
            } else {
                failure.hint(format!(
                    "pass a commit that exists in the guest workspace, e.g. one from `banger vm exec {vm_name} -- git log --oneline`"
                ))
            };
        }
        return Err(failure);
    }

    let diff = finished.stdout;
    match output {
        Some(path) => {
            write_atomically(path, &diff).map_err(|e| cli_error(ErrorKind::Internal, &e))?
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&diff)
                .and_then(|()| stdout.flush())
                .map_err(|source| {
                    let error = ExportError::Write {
                        path: PathBuf::from("standard output"),
                        source,
                    };
                    cli_error(ErrorKind::Internal, &error)
                })?;
        }
    }
    eprintln!(
        "exported {} bytes of diff: {}:{} against {}",
        diff.len(),
        vm_name,
        workspace.guest_path,
        if base == PREPARED_REF {
            "the tree as prepared"
        } else {
            short(&base)
        }
    );
    Ok(())
}

/// Writes `bytes` to a temporary file next to `path` and renames it over
/// `path`, so a failed export never leaves half a diff.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let wrap = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)?;
    file.persist(path).map_err(|e| wrap(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.diff");
        std::fs::write(&target, b"old").unwrap();
        write_atomically(&target, b"new diff").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new diff");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_named() {
        let err = write_atomically(Path::new("/nonexistent/dir/out.diff"), b"x").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/out.diff"),
            "{err}"
        );
    }
}
