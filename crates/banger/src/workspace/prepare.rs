//! `banger vm workspace prepare`: copies a host repository into a VM and
//! records it there once the guest reported a complete copy.

use std::io::Write;
use std::path::PathBuf;

use banger_api::{ErrorKind, VmRecord, VmState, Workspace};
use hyper::Method;
use tokio::sync::{mpsc, oneshot};

use super::archive::{ArchiveError, ChunkWriter, Manifest, write_archive};
use super::git::{GitError, HostRepo, path_bytes};
use super::guard::{self, CheckOutcome};
use super::script::{PREPARE, sh_argv};
use super::{display_path, short};
use crate::client::Client;
use crate::remote::{self, Input, Output, RemoteCommand, cli_error};
use crate::render::{CliError, human_bytes, progress};

/// Room left on top of the estimate, in bytes, for git's own files.
const SPACE_MARGIN: u64 = 4 << 20;

/// A repository to copy and the guest directory that receives it.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    pub vm: String,
    /// A directory in the host repository.
    pub path: PathBuf,
    pub guest_path: String,
    pub include_untracked: bool,
    /// Replace the guest directory even when it contains work that is not
    /// exported, or is not a banger workspace.
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("failed to create a temporary directory for the history bundle")]
    TempDir(#[source] std::io::Error),
    #[error("the guest script ended before the archive was complete")]
    ArchiveCut,
    #[error("not enough free space in VM {vm:?} for the workspace")]
    NoSpace { vm: String, detail: String },
    #[error("VM {vm:?} ran out of disk space while the workspace was copied to {guest_path}")]
    DiskFull {
        vm: String,
        guest_path: String,
        detail: String,
    },
    #[error("VM {vm:?} lacks a program the workspace needs")]
    GuestTool { vm: String, detail: String },
    #[error("another workspace prepare is running in VM {vm:?}")]
    Busy { vm: String },
    #[error("copying the workspace to {guest_path} in VM {vm:?} failed (exit code {code})")]
    Guest {
        vm: String,
        guest_path: String,
        code: i32,
        detail: String,
    },
    #[error("the guest script reported success without its completion line")]
    NoCompletion,
    #[error("the guest rebuilt commit {found}, expected {expected}")]
    WrongCommit { found: String, expected: String },
}

impl PrepareError {
    fn into_cli(self) -> CliError {
        let detail = match &self {
            PrepareError::NoSpace { detail, .. }
            | PrepareError::DiskFull { detail, .. }
            | PrepareError::GuestTool { detail, .. }
            | PrepareError::Guest { detail, .. } => Some(detail.clone()),
            _ => None,
        };
        let hint = match &self {
            PrepareError::NoSpace { vm, .. } | PrepareError::DiskFull { vm, .. } => format!(
                "free space under /root in VM {vm}, or create a VM with a larger --disk-size; nothing was recorded"
            ),
            PrepareError::Busy { .. } => "wait for the other prepare to finish".to_string(),
            _ => {
                "nothing was recorded; the VM's earlier workspace, if any, is unchanged".to_string()
            }
        };
        let mut error = cli_error(ErrorKind::Internal, &self);
        if let Some(detail) = detail.filter(|d| !d.is_empty()) {
            error = error.cause(detail);
        }
        error.hint(hint)
    }
}

/// Copies the repository of `request.path` into the VM and records it.
/// With `dry_run`, prints the files that would be copied, one per line on
/// standard output, and changes nothing.
pub async fn prepare(
    client: &Client,
    request: &PrepareRequest,
    dry_run: bool,
) -> Result<Option<Workspace>, CliError> {
    banger_model::validate_guest_path(&request.guest_path).map_err(|e| {
        cli_error(ErrorKind::Invalid, &e).hint("pass an absolute path such as /root/repo")
    })?;
    let vm: VmRecord = client.get(&format!("/vms/{}", request.vm)).await?;
    // A dry run lists the files of a stopped VM too. A copy needs the guest,
    // so it fails before the repository is read and bundled.
    if !dry_run && vm.state != VmState::Running {
        return Err(CliError::new(
            ErrorKind::Conflict,
            format!("VM {:?} is {}, not running", vm.name, vm.state),
        )
        .hint(format!("start it with `banger vm start {}`", vm.name)));
    }
    let (repo, manifest) = inspect(request.path.clone(), request.include_untracked).await?;
    if dry_run {
        print_file_list(&manifest)?;
        eprintln!(
            "dry run: {} would be copied to {}:{}",
            describe_copy(&manifest, &repo),
            request.vm,
            request.guest_path,
        );
        report_guest_work(client, &vm, request).await?;
        return Ok(None);
    }

    // A VM that has this workspace already has most of the history: only
    // the commits after its recorded HEAD travel, unless the guest copy
    // turns out to lack that commit.
    let base = match vm.workspace.as_ref() {
        Some(workspace) if workspace.guest_path == request.guest_path && repo.head.is_some() => {
            match workspace.head.clone() {
                Some(head) => {
                    let (repo, commit) = (repo.clone(), head.clone());
                    let known = tokio::task::spawn_blocking(move || repo.has_commit(&commit))
                        .await
                        .unwrap_or(Ok(false));
                    known.map_err(git_error)?.then_some(head)
                }
                None => None,
            }
        }
        _ => None,
    };
    progress(&format!(
        "copying {} to {}:{}",
        describe_copy(&manifest, &repo),
        request.vm,
        request.guest_path,
    ));
    let mut finished = send(client, request, &repo, &manifest, base.as_deref()).await?;
    if base.is_some() && finished.code == BASE_MISSING {
        progress("the guest copy lacks its recorded commit; sending the whole history");
        finished = send(client, request, &repo, &manifest, None).await?;
    }
    if finished.code == UNEXPORTED_WORK
        && let Some(work) = guard::parse_report(&finished.stdout)
    {
        return Err(guard::unexported_error(
            &request.vm,
            &request.guest_path,
            work,
        ));
    }
    if finished.code != 0 {
        return Err(classify(request, finished.code, finished.stderr).into_cli());
    }
    check_completion(&finished.stdout, repo.head.as_deref()).map_err(PrepareError::into_cli)?;

    let workspace = Workspace {
        guest_path: request.guest_path.clone(),
        host_path: repo.root.display().to_string(),
        head: repo.head.clone(),
        branch: repo.branch.clone(),
        include_untracked: request.include_untracked,
        // The daemon stamps the time when it records the workspace.
        prepared_at: String::new(),
    };
    let recorded = record(client, &request.vm, &workspace).await?;
    let workspace = recorded.workspace.unwrap_or(workspace);
    progress(&format!(
        "workspace ready: {}:{} at {}",
        request.vm,
        request.guest_path,
        describe_head(&repo)
    ));
    Ok(Some(workspace))
}

/// Exit code of [`PREPARE`] when the earlier workspace lacks the base commit.
const BASE_MISSING: i32 = 9;

/// Exit code of [`PREPARE`] when the target contains work that is not
/// exported.
const UNEXPORTED_WORK: i32 = 10;

/// Prints whether the prepare would discard work in the guest, or be
/// rejected because of it, for a dry run.
async fn report_guest_work(
    client: &Client,
    vm: &VmRecord,
    request: &PrepareRequest,
) -> Result<(), CliError> {
    let target = format!("{}:{}", request.vm, request.guest_path);
    match guard::check(client, vm, &request.guest_path).await? {
        CheckOutcome::Nothing => {}
        CheckOutcome::Work(work) if request.force => {
            eprintln!("dry run: --force would discard work in {target}: {work}");
        }
        CheckOutcome::Work(work) => {
            let error = guard::unexported_error(&request.vm, &request.guest_path, work);
            let body = error.body();
            eprintln!("dry run: the prepare would be rejected: {}", body.message);
            if let Some(hint) = &body.hint {
                eprintln!("hint: {hint}");
            }
        }
        CheckOutcome::Skipped(reason) => {
            eprintln!("dry run: {target} was not checked for work that is not exported: {reason}");
        }
    }
    Ok(())
}

/// Exit code and output of the guest script.
struct ScriptOutcome {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// Streams the archive (the files and a bundle of the history after `base`,
/// or all of it) into the guest's prepare script.
async fn send(
    client: &Client,
    request: &PrepareRequest,
    repo: &HostRepo,
    manifest: &Manifest,
    base: Option<&str>,
) -> Result<ScriptOutcome, CliError> {
    let bundle_dir = tempfile::Builder::new()
        .prefix("banger-bundle")
        .tempdir()
        .map_err(|e| cli_error(ErrorKind::Internal, &PrepareError::TempDir(e)))?;
    // With HEAD at the base, the guest has every object already.
    let bundle = match (&repo.head, base) {
        (Some(head), Some(base)) if head == base => None,
        (Some(_), _) => {
            let path = bundle_dir.path().join("head.bundle");
            let (repo, target, base) = (repo.clone(), path.clone(), base.map(str::to_owned));
            blocking(move || repo.create_bundle(&target, base.as_deref())).await?;
            Some(path)
        }
        (None, _) => None,
    };
    let bundle_bytes = match &bundle {
        Some(path) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        None => 0,
    };
    match base {
        Some(base) => progress(&format!(
            "history: {} of commits after {}",
            human_bytes(bundle_bytes),
            short(base)
        )),
        None if bundle.is_some() => progress(&format!("history: {}", human_bytes(bundle_bytes))),
        None => {}
    }
    // The extracted tree, the bundle, and the pack fetched from it.
    let need_kib = (manifest.disk_bytes + 2 * bundle_bytes + SPACE_MARGIN).div_ceil(1024);

    // The daemon's relay keeps at most the agent's stdin window in flight,
    // so a guest that extracts slowly slows this writer down.
    let (chunks_tx, chunks_rx) = mpsc::channel(4);
    let (archived_tx, archived_rx) = oneshot::channel();
    let root = repo.root.clone();
    let files = manifest.clone();
    let archive_bundle = bundle.clone();
    std::thread::spawn(move || {
        let result = write_archive(
            &root,
            &files,
            archive_bundle.as_deref(),
            ChunkWriter::new(chunks_tx),
        );
        let _ = archived_tx.send(result);
    });

    let argv = sh_argv(
        PREPARE,
        "banger-prepare",
        [
            request.guest_path.clone(),
            need_kib.to_string(),
            repo.head.clone().unwrap_or_default(),
            repo.branch.clone().unwrap_or_default(),
            repo.user_name.clone().unwrap_or_default(),
            repo.user_email.clone().unwrap_or_default(),
            base.unwrap_or_default().to_owned(),
            if request.force { "1" } else { "" }.to_owned(),
        ],
    );
    let command = RemoteCommand {
        argv,
        cwd: Some("/".into()),
        ..Default::default()
    };
    let finished = remote::run(
        client,
        &request.vm,
        command,
        Input::Chunks(chunks_rx),
        Output::Capture,
    )
    .await?;
    let archived = archived_rx.await.unwrap_or(Ok(()));
    let code = finished.status.shell_code();
    if code != 0 {
        // A host-side failure that cut the archive short is the cause.
        if let Err(error) = archived
            && !is_broken_pipe(&error)
        {
            return Err(cli_error(ErrorKind::Internal, &error)
                .hint("nothing was recorded; run the prepare again"));
        }
    } else {
        archived.map_err(|e| cli_error(ErrorKind::Internal, &e))?;
    }
    Ok(ScriptOutcome {
        code,
        stdout: finished.stdout,
        stderr: String::from_utf8_lossy(&finished.stderr).trim().to_string(),
    })
}

/// Reads the host repository and the files to copy, off the async runtime.
async fn inspect(path: PathBuf, include_untracked: bool) -> Result<(HostRepo, Manifest), CliError> {
    let result = tokio::task::spawn_blocking(move || -> Result<_, CliError> {
        let repo = HostRepo::open(&path).map_err(git_error)?;
        let files = repo.list_files(include_untracked).map_err(git_error)?;
        let manifest = Manifest::build(&repo.root, files)
            .map_err(|e: ArchiveError| cli_error(ErrorKind::Internal, &e))?;
        Ok((repo, manifest))
    })
    .await;
    result.unwrap_or_else(|e| {
        Err(CliError::local("reading the repository failed").cause(e.to_string()))
    })
}

async fn blocking(
    work: impl FnOnce() -> Result<(), GitError> + Send + 'static,
) -> Result<(), CliError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(git_error),
        Err(e) => Err(CliError::local("reading the repository failed").cause(e.to_string())),
    }
}

/// Host repository problems are the user's input; git failures are not.
pub fn git_error(error: GitError) -> CliError {
    let kind = match error {
        GitError::Git { .. } => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    };
    cli_error(kind, &error)
}

/// Formats what a copy sends: `N files (SIZE) from ROOT at HEAD`.
fn describe_copy(manifest: &Manifest, repo: &HostRepo) -> String {
    format!(
        "{} files ({}) from {} at {}",
        manifest.files.len(),
        human_bytes(manifest.bytes),
        display_path(&repo.root),
        describe_head(repo)
    )
}

fn describe_head(repo: &HostRepo) -> String {
    match (&repo.head, &repo.branch) {
        (Some(head), Some(branch)) => format!("{} ({branch})", short(head)),
        (Some(head), None) => format!("{} (detached HEAD)", short(head)),
        (None, Some(branch)) => format!("no commit yet ({branch})"),
        (None, None) => "no commit yet".to_string(),
    }
}

fn print_file_list(manifest: &Manifest) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    for file in &manifest.files {
        stdout
            .write_all(path_bytes(file))
            .and_then(|()| stdout.write_all(b"\n"))
            .map_err(|e| CliError::local("failed to write to stdout").cause(e.to_string()))?;
    }
    stdout
        .flush()
        .map_err(|e| CliError::local("failed to write to stdout").cause(e.to_string()))
}

fn is_broken_pipe(error: &ArchiveError) -> bool {
    let source = match error {
        ArchiveError::Add { source, .. } | ArchiveError::Finish { source } => source,
        ArchiveError::Stat { .. } => return false,
    };
    source.kind() == std::io::ErrorKind::BrokenPipe
}

/// Maps the prepare script's exit code (see [`PREPARE`]) to an error.
fn classify(request: &PrepareRequest, code: i32, detail: String) -> PrepareError {
    let vm = request.vm.clone();
    let guest_path = request.guest_path.clone();
    match code {
        4 => PrepareError::NoSpace { vm, detail },
        5 => PrepareError::GuestTool { vm, detail },
        7 => PrepareError::Busy { vm },
        _ if detail.contains("No space left on device") => PrepareError::DiskFull {
            vm,
            guest_path,
            detail,
        },
        _ if detail.contains("Unexpected EOF in archive") => PrepareError::ArchiveCut,
        _ => PrepareError::Guest {
            vm,
            guest_path,
            code,
            detail,
        },
    }
}

/// Checks the script's last line, `banger-workspace-prepared COMMIT`.
fn check_completion(stdout: &[u8], head: Option<&str>) -> Result<(), PrepareError> {
    let text = String::from_utf8_lossy(stdout);
    let found = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("banger-workspace-prepared "))
        .ok_or(PrepareError::NoCompletion)?;
    let expected = head.unwrap_or("none");
    if found != expected {
        return Err(PrepareError::WrongCommit {
            found: found.to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}

/// Records the workspace on the VM (`PUT /v1/vms/{name}/workspace`).
async fn record(client: &Client, vm: &str, workspace: &Workspace) -> Result<VmRecord, CliError> {
    client
        .request(
            Method::PUT,
            &format!("/vms/{vm}/workspace"),
            Some(workspace),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PrepareRequest {
        PrepareRequest {
            vm: "dev".into(),
            path: PathBuf::from("."),
            guest_path: "/root/repo".into(),
            include_untracked: false,
            force: false,
        }
    }

    #[test]
    fn exit_codes_map_to_errors() {
        assert!(matches!(
            classify(&request(), 4, "need".into()),
            PrepareError::NoSpace { .. }
        ));
        let full = classify(
            &request(),
            2,
            "tar: tree/x: Cannot open: No space left on device".into(),
        );
        assert!(matches!(full, PrepareError::DiskFull { .. }), "{full}");
        assert!(matches!(
            classify(&request(), 128, "fatal: other".into()),
            PrepareError::Guest { code: 128, .. }
        ));
    }

    #[test]
    fn completion_line_must_name_the_commit() {
        let head = "a".repeat(40);
        let ok = format!("noise\nbanger-workspace-prepared {head}\n");
        assert!(check_completion(ok.as_bytes(), Some(&head)).is_ok());
        assert!(check_completion(b"banger-workspace-prepared none\n", None).is_ok());
        assert!(matches!(
            check_completion(b"", Some(&head)),
            Err(PrepareError::NoCompletion)
        ));
        assert!(matches!(
            check_completion(b"banger-workspace-prepared none\n", Some(&head)),
            Err(PrepareError::WrongCommit { .. })
        ));
    }
}
