//! The check that keeps a prepare from discarding work done in the guest:
//! the guest scripts report what replacing the target directory would lose
//! (see [`super::script::PREPARE`] and [`super::script::CHECK`]), and this
//! module reads that report and turns it into a message.

use std::fmt;

use banger_api::{ErrorKind, VmRecord, VmState};

use super::script::{CHECK, sh_argv};
use crate::client::Client;
use crate::remote::{self, Input, Output, RemoteCommand, cli_error};
use crate::render::CliError;

/// Prefix of the line in which the guest scripts report unexported work.
const REPORT_PREFIX: &str = "banger-workspace-unexported ";

/// Work that replacing a guest directory would discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWork {
    /// A banger workspace with changes made after the last prepare.
    Changes {
        /// Paths whose content differs from the tree as prepared, committed
        /// or not, untracked files included.
        files: u64,
        /// Commits on HEAD or a local branch that the prepared commit does
        /// not contain.
        commits: u64,
    },
    /// Something that is not a banger workspace and is not an empty
    /// directory, with its number of directory entries (1 for a file).
    Foreign { entries: u64 },
}

impl fmt::Display for GuestWork {
    /// Formats the loss as "2 changed files, 1 commit made in the guest".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GuestWork::Changes { files, commits } => {
                let mut parts = Vec::new();
                if files > 0 {
                    parts.push(plural(files, "changed file", "changed files"));
                }
                if commits > 0 {
                    parts.push(format!(
                        "{} made in the guest",
                        plural(commits, "commit", "commits")
                    ));
                }
                f.write_str(&parts.join(", "))
            }
            GuestWork::Foreign { entries } => f.write_str(&plural(entries, "entry", "entries")),
        }
    }
}

fn plural(count: u64, singular: &str, plural: &str) -> String {
    if count == 1 {
        format!("1 {singular}")
    } else {
        format!("{count} {plural}")
    }
}

/// Parses the report line of the guest scripts out of their standard
/// output: `None` without one, and for a malformed or empty report.
pub fn parse_report(stdout: &[u8]) -> Option<GuestWork> {
    let text = String::from_utf8_lossy(stdout);
    let report = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(REPORT_PREFIX))?;
    let fields: Vec<&str> = report.split_whitespace().collect();
    let work = match fields.as_slice() {
        ["work", files, commits] => GuestWork::Changes {
            files: files.parse().ok()?,
            commits: commits.parse().ok()?,
        },
        ["foreign", entries] => GuestWork::Foreign {
            entries: entries.parse().ok()?,
        },
        _ => return None,
    };
    let empty = matches!(
        work,
        GuestWork::Changes {
            files: 0,
            commits: 0
        } | GuestWork::Foreign { entries: 0 }
    );
    (!empty).then_some(work)
}

/// Builds the error for a prepare that would discard `work` in `guest_path`
/// of VM `vm`, with the command that saves the work first.
pub fn unexported_error(vm: &str, guest_path: &str, work: GuestWork) -> CliError {
    match work {
        GuestWork::Changes { .. } => CliError::new(
            ErrorKind::Conflict,
            format!(
                "workspace {guest_path} in VM {vm:?} has work that is not exported: {work}"
            ),
        )
        .hint(format!(
            "save it with `banger vm workspace export {vm} --since-prepare --output FILE` \
             (guest commits arrive as one diff) and then pass --force, \
             or pass --force alone to discard it; the guest was not changed"
        )),
        GuestWork::Foreign { .. } => CliError::new(
            ErrorKind::Conflict,
            format!(
                "{guest_path} in VM {vm:?} exists and is not a banger workspace, and it is not empty ({work})"
            ),
        )
        .hint(
            "pass another --guest-path, or move its contents away in the guest; \
             --force does not replace a directory banger did not make, and the guest was not changed",
        ),
    }
}

/// Result of the check that `workspace prepare --dry-run` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Replacing the directory discards nothing.
    Nothing,
    Work(GuestWork),
    /// The guest was not checked, for the reason given.
    Skipped(String),
}

/// Asks the guest what replacing `guest_path` would discard, without
/// changing anything there. A VM that is not running is not checked.
pub async fn check(
    client: &Client,
    vm: &VmRecord,
    guest_path: &str,
) -> Result<CheckOutcome, CliError> {
    if vm.state != VmState::Running {
        return Ok(CheckOutcome::Skipped(format!(
            "VM {} is not running",
            vm.name
        )));
    }
    let command = RemoteCommand {
        argv: sh_argv(CHECK, "banger-check", [guest_path.to_string()]),
        cwd: Some("/".into()),
        ..Default::default()
    };
    let finished = remote::run(client, &vm.name, command, Input::Null, Output::Capture).await?;
    let code = finished.status.shell_code();
    if code == 7 {
        return Ok(CheckOutcome::Skipped(
            "another workspace prepare is running in the guest".to_string(),
        ));
    }
    if code != 0 {
        let stderr = String::from_utf8_lossy(&finished.stderr).trim().to_string();
        let error = CheckError {
            vm: vm.name.clone(),
            guest_path: guest_path.to_string(),
            code,
        };
        return Err(cli_error(ErrorKind::Internal, &error).cause(stderr));
    }
    Ok(match parse_report(&finished.stdout) {
        Some(work) => CheckOutcome::Work(work),
        None => CheckOutcome::Nothing,
    })
}

#[derive(Debug, thiserror::Error)]
#[error(
    "checking {guest_path} in VM {vm:?} for work that is not exported failed (exit code {code})"
)]
struct CheckError {
    vm: String,
    guest_path: String,
    code: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_parse() {
        let changes = parse_report(b"noise\nbanger-workspace-unexported work 2 1\n");
        assert_eq!(
            changes,
            Some(GuestWork::Changes {
                files: 2,
                commits: 1
            })
        );
        let foreign = parse_report(b"banger-workspace-unexported foreign 5\n");
        assert_eq!(foreign, Some(GuestWork::Foreign { entries: 5 }));
    }

    #[test]
    fn empty_or_malformed_report_is_none() {
        for stdout in [
            &b""[..],
            b"banger-workspace-prepared abc\n",
            b"banger-workspace-unexported work 0 0\n",
            b"banger-workspace-unexported foreign 0\n",
            b"banger-workspace-unexported work 2\n",
            b"banger-workspace-unexported work two 1\n",
            b"banger-workspace-unexported other 1\n",
        ] {
            assert_eq!(
                parse_report(stdout),
                None,
                "{}",
                String::from_utf8_lossy(stdout)
            );
        }
    }

    #[test]
    fn work_names_counts_in_words() {
        let both = GuestWork::Changes {
            files: 2,
            commits: 1,
        };
        assert_eq!(
            both.to_string(),
            "2 changed files, 1 commit made in the guest"
        );
        let files = GuestWork::Changes {
            files: 1,
            commits: 0,
        };
        assert_eq!(files.to_string(), "1 changed file");
        let commits = GuestWork::Changes {
            files: 0,
            commits: 3,
        };
        assert_eq!(commits.to_string(), "3 commits made in the guest");
        assert_eq!(GuestWork::Foreign { entries: 1 }.to_string(), "1 entry");
    }

    #[test]
    fn error_names_vm_path_loss_and_fix() {
        let work = GuestWork::Changes {
            files: 2,
            commits: 1,
        };
        let error = unexported_error("dev", "/root/repo", work);
        let body = error.body();
        assert_eq!(body.kind, ErrorKind::Conflict);
        assert!(
            body.message.contains("/root/repo in VM \"dev\""),
            "{}",
            body.message
        );
        assert!(
            body.message
                .contains("2 changed files, 1 commit made in the guest"),
            "{}",
            body.message
        );
        let hint = body.hint.as_deref().unwrap_or_default();
        assert!(
            hint.contains("banger vm workspace export dev --since-prepare --output FILE"),
            "{hint}"
        );
        assert!(hint.contains("--force"), "{hint}");

        let foreign = unexported_error("dev", "/root/mine", GuestWork::Foreign { entries: 3 });
        let body = foreign.body();
        assert!(
            body.message
                .contains("/root/mine in VM \"dev\" exists and is not a banger workspace"),
            "{}",
            body.message
        );
        assert!(body.message.contains("3 entries"), "{}", body.message);
        let hint = body.hint.as_deref().unwrap_or_default();
        assert!(hint.contains("--force"), "{hint}");
    }
}
