//! `vm workspace prepare|export`, `vm exec` in a workspace, and the
//! workspace step of `vm run PATH`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use banger_api::{ErrorKind, VmRecord};
use banger_model::DEFAULT_GUEST_PATH;
use clap::{Args, Subcommand};

use super::{EXIT_BANGER_FAILED, Failure};
use crate::client::Client;
use crate::remote::{self, Input, Output, RemoteCommand};
use crate::render::CliError;
use crate::workspace::prepare::{PrepareRequest, git_error, prepare};
use crate::workspace::script::{EXEC_WRAPPER, sh_argv};
use crate::workspace::{display_path, export, git, short};

/// Working directory of `vm exec` in a VM without a workspace.
const DEFAULT_EXEC_DIR: &str = "/root";

#[derive(Subcommand, Debug)]
pub enum WorkspaceCommand {
    /// Copy a host git repository into a running VM as its workspace.
    Prepare(PrepareArgs),
    /// Print the workspace's changes as a binary diff for `git apply`.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// VM to copy the repository into.
    vm: String,
    /// A directory in the repository [default: the current directory].
    path: Option<PathBuf>,
    /// Directory in the guest that receives the repository [default: the
    /// VM's current workspace, else /root/repo].
    #[arg(long)]
    guest_path: Option<String>,
    /// Also copy untracked files that no ignore rule matches.
    #[arg(long)]
    include_untracked: bool,
    /// Print the files that would be copied, one per line, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace the guest directory even when it contains changes or commits
    /// that are not exported, or is not a banger workspace.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// VM whose workspace to export.
    vm: String,
    /// File to write the diff to [default: standard output].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Commit the diff is taken against [default: the commit the workspace was prepared at].
    #[arg(long, conflicts_with = "since_prepare")]
    base_commit: Option<String>,
    /// Diff against the files as the last prepare copied them, host's
    /// uncommitted and untracked files included, so the diff holds only the
    /// changes made in the guest and applies to the unchanged host checkout.
    #[arg(long)]
    since_prepare: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// VM to run the command in.
    name: String,
    /// Directory to run the command in [default: the workspace, else /root].
    #[arg(long)]
    guest_path: Option<String>,
    /// Copy the host repository again first when its HEAD moved since the
    /// workspace was prepared.
    #[arg(long)]
    auto_prepare: bool,
    /// With --auto-prepare, copy the repository again even when the guest
    /// workspace contains changes or commits that are not exported.
    #[arg(long, requires = "auto_prepare")]
    force: bool,
    /// Run the command on a pseudo-terminal [default: when stdin and stdout are terminals].
    #[arg(short = 't', long = "tty", conflicts_with = "no_tty")]
    tty: bool,
    /// Never allocate a pseudo-terminal.
    #[arg(short = 'T', long = "no-tty")]
    no_tty: bool,
    /// Command and arguments to run, after `--`; they reach the command
    /// unchanged.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(command: WorkspaceCommand) -> Result<u8, Failure> {
    let client = Client::connect().await?;
    match command {
        WorkspaceCommand::Prepare(args) => {
            let path = match args.path {
                Some(path) => path,
                None => current_dir()?,
            };
            let guest_path = match args.guest_path {
                Some(guest_path) => guest_path,
                None => {
                    let vm: VmRecord = client.get(&format!("/vms/{}", args.vm)).await?;
                    vm.workspace
                        .map(|workspace| workspace.guest_path)
                        .unwrap_or_else(|| DEFAULT_GUEST_PATH.to_string())
                }
            };
            let request = PrepareRequest {
                vm: args.vm,
                path,
                guest_path,
                include_untracked: args.include_untracked,
                force: args.force,
            };
            prepare(&client, &request, args.dry_run).await?;
            Ok(0)
        }
        WorkspaceCommand::Export(args) => {
            let base = match (&args.base_commit, args.since_prepare) {
                (Some(commit), _) => export::ExportBase::Commit(commit),
                (None, true) => export::ExportBase::PreparedTree,
                (None, false) => export::ExportBase::PreparedCommit,
            };
            export::export(&client, &args.vm, args.output.as_deref(), base).await?;
            Ok(0)
        }
    }
}

/// `banger vm exec`: runs the command in the workspace (or `--guest-path`,
/// else `/root`) and exits with its code; 125 when banger itself failed.
pub async fn exec(args: ExecArgs) -> Result<u8, Failure> {
    let client = Client::connect().await.map_err(banger_failed)?;
    let vm: VmRecord = client
        .get(&format!("/vms/{}", args.name))
        .await
        .map_err(banger_failed)?;
    let in_workspace = vm.workspace.as_ref().filter(|workspace| {
        args.guest_path
            .as_deref()
            .is_none_or(|path| path.trim_end_matches('/') == workspace.guest_path)
    });
    if args.auto_prepare && in_workspace.is_none() {
        let error = CliError::new(
            ErrorKind::Conflict,
            format!("VM {:?} has no workspace to prepare again", args.name),
        )
        .hint(format!(
            "prepare one with `banger vm workspace prepare {} PATH`",
            args.name
        ));
        return Err(banger_failed(error));
    }
    if let Some(workspace) = in_workspace
        && vm.state == banger_api::VmState::Running
    {
        check_stale(&client, &vm, workspace, args.auto_prepare, args.force)
            .await
            .map_err(banger_failed)?;
    }
    let cwd = args
        .guest_path
        .clone()
        .or_else(|| vm.workspace.as_ref().map(|w| w.guest_path.clone()))
        .unwrap_or_else(|| DEFAULT_EXEC_DIR.to_string());
    let tty = want_tty(args.tty, args.no_tty);
    run_command(&client, &args.name, cwd, args.command, tty).await
}

/// `banger vm run PATH [-- CMD]`, after the VM booted: prepares the
/// workspace from PATH and runs CMD in it. Without CMD it opens a login
/// shell there when `shell` is set, and otherwise only prepares.
pub async fn run_in_new_vm(
    client: &Client,
    vm: &str,
    path: &Path,
    include_untracked: bool,
    command: Vec<String>,
    shell: bool,
) -> Result<u8, Failure> {
    let request = PrepareRequest {
        vm: vm.to_string(),
        path: path.to_path_buf(),
        guest_path: DEFAULT_GUEST_PATH.to_string(),
        include_untracked,
        force: false,
    };
    prepare(client, &request, false)
        .await
        .map_err(banger_failed)?;
    if command.is_empty() {
        if shell {
            return run_command(
                client,
                vm,
                DEFAULT_GUEST_PATH.to_string(),
                login_shell(),
                true,
            )
            .await;
        }
        eprintln!(
            "VM {vm} is running with its workspace in {DEFAULT_GUEST_PATH}; run commands there with `banger vm exec {vm} -- CMD`"
        );
        return Ok(0);
    }
    let tty = want_tty(false, false);
    run_command(client, vm, DEFAULT_GUEST_PATH.to_string(), command, tty).await
}

/// Opens a login shell in the guest's home directory, for `banger vm run`
/// without a command on a terminal.
pub async fn shell_in_new_vm(client: &Client, vm: &str) -> Result<u8, Failure> {
    run_command(
        client,
        vm,
        DEFAULT_EXEC_DIR.to_string(),
        login_shell(),
        true,
    )
    .await
}

/// Returns whether `vm run` without a command opens a shell, which it does
/// only when standard input and standard output are both terminals.
pub fn interactive_session() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Returns the command for the guest's bash as a login shell, or sh where
/// bash is missing.
fn login_shell() -> Vec<String> {
    [
        "sh",
        "-c",
        "if command -v bash >/dev/null; then exec bash -l; fi; exec sh -l",
    ]
    .map(String::from)
    .to_vec()
}

/// Tells the user that the VM runs on after an interactive session ended.
pub fn remind_running(vm: &str) {
    eprintln!(
        "VM {vm} is still running: `banger vm ssh {vm}` or `banger vm exec {vm} -- CMD` to use it, `banger vm stop {vm}` to stop it"
    );
}

/// Runs `command` in `cwd` through [`EXEC_WRAPPER`] with this process's
/// standard streams, and returns its exit code (128 + signal when a signal
/// ended it).
async fn run_command(
    client: &Client,
    vm: &str,
    cwd: String,
    command: Vec<String>,
    tty: bool,
) -> Result<u8, Failure> {
    // The wrapper changes to `cwd` itself, after the work disk is mounted.
    let mut args = vec![cwd];
    args.extend(command);
    let mut remote_command = RemoteCommand {
        argv: sh_argv(EXEC_WRAPPER, "banger-exec", args),
        cwd: Some("/".into()),
        ..Default::default()
    };
    let input = if tty {
        remote_command.tty =
            Some(crate::terminal::window_size().unwrap_or(crate::terminal::FALLBACK_SIZE));
        if let Ok(term) = std::env::var("TERM") {
            remote_command.env.push(("TERM".into(), term));
        }
        Input::Inherit
    } else if std::io::stdin().is_terminal() {
        // Without a pty, a terminal's input would reach the command only
        // line by line and without job control, so it gets none.
        Input::Null
    } else {
        Input::Inherit
    };
    let finished = remote::run(client, vm, remote_command, input, Output::Inherit)
        .await
        .map_err(banger_failed)?;
    Ok((finished.status.shell_code() & 0xff) as u8)
}

/// Warns when the host repository's HEAD moved since the workspace was
/// prepared, and with `auto_prepare` copies it again. With `force` that
/// copy discards work in the guest that is not exported.
async fn check_stale(
    client: &Client,
    vm: &VmRecord,
    workspace: &banger_api::Workspace,
    auto_prepare: bool,
    force: bool,
) -> Result<(), CliError> {
    let host_path = PathBuf::from(&workspace.host_path);
    let lookup = host_path.clone();
    let current = tokio::task::spawn_blocking(move || git::current_head(&lookup))
        .await
        .map_err(|e| CliError::local("reading the host repository failed").cause(e.to_string()))?;
    let current = match current {
        Ok(current) => current,
        Err(error) => {
            eprintln!(
                "warning: cannot compare workspace {}:{} with its host repository: {}",
                vm.name,
                workspace.guest_path,
                git_error(error).body()
            );
            return Ok(());
        }
    };
    if current == workspace.head {
        return Ok(());
    }
    let describe = |commit: &Option<String>| {
        commit
            .as_deref()
            .map_or("no commit".to_string(), |c| short(c).to_string())
    };
    eprintln!(
        "warning: workspace {}:{} is at {}, but the host repository {} is at {}{}",
        vm.name,
        workspace.guest_path,
        describe(&workspace.head),
        display_path(&host_path),
        describe(&current),
        if auto_prepare {
            "; copying it again"
        } else {
            "; pass --auto-prepare to copy it again"
        }
    );
    if auto_prepare {
        let request = PrepareRequest {
            vm: vm.name.clone(),
            path: host_path,
            guest_path: workspace.guest_path.clone(),
            include_untracked: workspace.include_untracked,
            force,
        };
        prepare(client, &request, false).await?;
    }
    Ok(())
}

/// Decides on a pty: always with `-t`, never with `-T`, else when both
/// standard input and standard output are terminals.
fn want_tty(force: bool, never: bool) -> bool {
    if never {
        return false;
    }
    force || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal())
}

fn current_dir() -> Result<PathBuf, CliError> {
    std::env::current_dir().map_err(|e| {
        CliError::local("failed to read the current directory")
            .cause(e.to_string())
            .hint("pass the repository path: `banger vm workspace prepare VM PATH`")
    })
}

fn banger_failed(error: CliError) -> Failure {
    Failure {
        error,
        exit_code: EXIT_BANGER_FAILED,
    }
}

/// Checks that `path` is in a repository a workspace can copy, before a VM
/// is created for it.
pub fn check_repository(path: &Path) -> Result<(), CliError> {
    git::HostRepo::open(path).map(drop).map_err(git_error)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Exec {
        #[command(flatten)]
        args: ExecArgs,
    }

    #[test]
    fn exec_force_needs_auto_prepare() {
        let error = Exec::try_parse_from(["exec", "dev", "--force", "--", "true"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(error.to_string().contains("--auto-prepare"), "{error}");

        let parsed =
            Exec::try_parse_from(["exec", "dev", "--auto-prepare", "--force", "--", "true"])
                .unwrap();
        assert!(parsed.args.auto_prepare);
        assert!(parsed.args.force);
    }
}
