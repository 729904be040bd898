use std::io::IsTerminal;

use banger_api::{CreateVmRequest, Event, SetVmRequest, VmRecord, VmState};
use banger_model::{format_size, parse_size};
use clap::{Args, Subcommand};
use hyper::Method;

use super::{EXIT_BANGER_FAILED, Failure};
use crate::client::Client;
use crate::remote;
use crate::render::{CliError, print_table, progress};

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create and boot a VM, run a command in it and exit with the command's code.
    Run(RunArgs),
    /// Create a VM and boot it (unless --no-start).
    Create(CreateArgs),
    /// Boot stopped VMs.
    Start { names: Vec<String> },
    /// Stop running VMs; their disks stay.
    Stop { names: Vec<String> },
    /// Stop VMs that run and boot them again.
    Restart { names: Vec<String> },
    /// Change the vCPU count or memory of a stopped VM, for its next boot.
    Set(SetArgs),
    /// Delete every VM that is stopped or failed.
    Prune {
        /// Delete without asking.
        #[arg(short, long)]
        force: bool,
    },
    /// Delete VMs and their disks; running VMs are killed first.
    #[command(alias = "rm")]
    Delete { names: Vec<String> },
    /// Run a command in a running VM, in its workspace when it has one.
    Exec(super::workspace::ExecArgs),
    /// Copy a host git repository into a VM, or export the changes made there.
    #[command(subcommand)]
    Workspace(super::workspace::WorkspaceCommand),
    /// End hung VMs at once (SIGKILL to the VMM); their disks stay.
    Kill { names: Vec<String> },
    /// Print a VM's console log.
    Logs {
        name: String,
        /// Keep printing new output until the VM stops.
        #[arg(short, long)]
        follow: bool,
    },
    /// List VMs.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one VM as JSON.
    Show { name: String },
    /// Open an SSH session to a VM, or run a command over SSH.
    Ssh(super::ssh::SshArgs),
    /// List a VM's listening TCP and UDP ports.
    Ports { name: String },
    /// Show what a VM uses: VMM CPU and memory, guest load, memory and disks.
    Stats {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Default)]
pub struct SpecArgs {
    /// VM name (hostname-safe); generated when omitted.
    #[arg(long)]
    name: Option<String>,
    /// Root file system image.
    #[arg(long)]
    image: Option<String>,
    /// Guest kernel from `banger kernel list`.
    #[arg(long)]
    kernel: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    vcpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// Work disk size (mounted at /root), e.g. 8G.
    #[arg(long, value_parser = parse_disk_size)]
    disk_size: Option<u64>,
    /// VMM backend: auto, firecracker or qemu (default: the config's `vmm`).
    #[arg(long)]
    vmm: Option<String>,
    /// Masquerade the guest's traffic out of the host's uplink.
    #[arg(long)]
    nat: bool,
}

fn parse_disk_size(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Delete the VM when the command ends.
    #[arg(long)]
    rm: bool,
    /// Create the VM (and prepare PATH as its workspace), then exit.
    #[arg(short = 'd', long, conflicts_with_all = ["rm", "command"])]
    detach: bool,
    /// Host git repository to copy into the VM as its workspace; the
    /// command then runs there.
    path: Option<std::path::PathBuf>,
    /// With PATH: copy untracked files that are not ignored too.
    #[arg(long, requires = "path")]
    include_untracked: bool,
    /// Command to run in the guest, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Create the disks and the record without booting.
    #[arg(long)]
    no_start: bool,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    name: String,
    /// Number of vCPUs.
    #[arg(long)]
    vcpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// VMM backend: auto, firecracker or qemu.
    #[arg(long)]
    vmm: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: VmCommand) -> Result<u8, Failure> {
    match command {
        VmCommand::Run(args) => run_vm(args).await,
        VmCommand::Exec(args) => super::workspace::exec(args).await,
        VmCommand::Workspace(command) => super::workspace::run(command).await,
        VmCommand::Create(args) => {
            let client = Client::connect().await?;
            let vm = create(&client, &args.spec, args.no_start, false).await?;
            println!("{}", vm.name);
            Ok(0)
        }
        VmCommand::Start { names } => each(names, "start").await,
        VmCommand::Stop { names } => each(names, "stop").await,
        VmCommand::Restart { names } => each(names, "restart").await,
        VmCommand::Set(args) => {
            let client = Client::connect().await?;
            let request = SetVmRequest {
                vcpus: args.vcpu,
                memory_mib: args.memory,
                vmm: args.vmm,
            };
            let vm: VmRecord = client
                .request(
                    Method::PATCH,
                    &format!("/vms/{}", args.name),
                    Some(&request),
                )
                .await?;
            eprintln!(
                "{}: {} vcpu · {} MiB · {} from its next boot",
                vm.name, vm.spec.vcpus, vm.spec.memory_mib, vm.backend
            );
            Ok(0)
        }
        VmCommand::Prune { force } => prune(force).await,
        VmCommand::Delete { names } => each(names, "delete").await,
        VmCommand::Kill { names } => each(names, "kill").await,
        VmCommand::Logs { name, follow } => {
            let client = Client::connect().await?;
            client
                .copy_to_stdout(&format!("/vms/{name}/logs?follow={follow}"))
                .await?;
            Ok(0)
        }
        VmCommand::List(args) => list(args).await.map_err(Failure::from),
        VmCommand::Ssh(args) => super::ssh::ssh(args).await,
        VmCommand::Ports { name } => super::ssh::ports(name).await,
        VmCommand::Stats { name, json } => super::stats::stats(name, json).await,
        VmCommand::Show { name } => {
            let client = Client::connect().await?;
            let vm: VmRecord = client.get(&format!("/vms/{name}")).await?;
            // The record plus the leased address, which lives in its own table.
            let mut record = serde_json::to_value(&vm).expect("serialises");
            let ip = super::ssh::addresses(&client).await.remove(&vm.id);
            record["ip"] = ip.map_or(serde_json::Value::Null, serde_json::Value::String);
            println!(
                "{}",
                serde_json::to_string_pretty(&record).expect("serialises")
            );
            Ok(0)
        }
    }
}

/// `banger vm prune`: deletes the VMs that are stopped or failed, after
/// asking on a terminal unless `force`.
async fn prune(force: bool) -> Result<u8, Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    let client = Client::connect().await?;
    let vms: Vec<VmRecord> = client.get("/vms").await?;
    let names: Vec<String> = vms
        .into_iter()
        .filter(|vm| matches!(vm.state, VmState::Stopped | VmState::Error))
        .map(|vm| vm.name)
        .collect();
    if names.is_empty() {
        eprintln!("no stopped or failed VMs to delete");
        return Ok(0);
    }
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::invalid(format!(
                "refusing to delete {} VM(s) without confirmation: {}",
                names.len(),
                names.join(", ")
            ))
            .hint("pass --force to delete them without asking")
            .into());
        }
        eprint!(
            "delete {} VM(s) and their disks: {}? [y/N] ",
            names.len(),
            names.join(", ")
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::local("failed to read the answer").cause(e.to_string()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing deleted");
            return Ok(0);
        }
    }
    each(names, "delete").await
}

/// Applies one lifecycle operation (`POST /vms/NAME/VERB`, or `DELETE /vms/NAME`
/// for delete) to several VMs concurrently; reports every failure.
async fn each(names: Vec<String>, verb: &'static str) -> Result<u8, Failure> {
    if names.is_empty() {
        return Err(CliError::invalid(format!("no VM named to {verb}"))
            .hint(format!(
                "pass one or more names: `banger vm {verb} NAME...`"
            ))
            .into());
    }
    let client = std::sync::Arc::new(Client::connect().await?);
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let client = client.clone();
            let (method, path) = match verb {
                "delete" => (Method::DELETE, format!("/vms/{name}")),
                _ => (Method::POST, format!("/vms/{name}/{verb}")),
            };
            tokio::spawn(async move {
                client
                    .stream::<VmRecord>(method, &path, None::<&()>, progress)
                    .await
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        match task.await.expect("task not cancelled") {
            Ok(vm) if verb == "delete" => eprintln!("{}: deleted", vm.name),
            Ok(vm) => eprintln!("{}: {}", vm.name, vm.state),
            Err(error) => {
                crate::render::print_error(&error);
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

async fn create(
    client: &Client,
    spec: &SpecArgs,
    no_start: bool,
    ephemeral: bool,
) -> Result<VmRecord, CliError> {
    let request = CreateVmRequest {
        name: spec.name.clone(),
        image: spec.image.clone(),
        kernel: spec.kernel.clone(),
        vcpus: spec.vcpu,
        memory_mib: spec.memory,
        disk_size_bytes: spec.disk_size,
        no_start,
        vmm: spec.vmm.clone(),
        nat: spec.nat,
        ephemeral,
    };
    client
        .stream_events(Method::POST, "/vms", Some(&request), |event| match event {
            Event::Accepted { vm } => eprintln!(
                "spec: {} · {} vcpu · {} MiB · {} disk · {}",
                vm.name,
                vm.vcpus,
                vm.memory_mib,
                format_size(vm.disk_size_bytes),
                vm.image
            ),
            Event::Progress { message } => progress(message),
            _ => {}
        })
        .await
}

async fn run_vm(args: RunArgs) -> Result<u8, Failure> {
    let fail = |error: CliError| Failure {
        error,
        exit_code: EXIT_BANGER_FAILED,
    };
    if let Some(path) = &args.path {
        // A bad PATH fails before a VM boots for it.
        super::workspace::check_repository(path).map_err(|error| {
            // `vm run uname` is more often a command without its `--` than
            // a repository path.
            let word = path.to_string_lossy();
            if !path.exists() && !word.contains('/') {
                fail(error.hint(format!(
                    "to run a command, put it after `--`: banger vm run -- {word}"
                )))
            } else {
                fail(error)
            }
        })?;
    }
    if args.rm && args.command.is_empty() && !super::workspace::interactive_session() {
        // The VM would be deleted as soon as it booted.
        return Err(fail(
            CliError::invalid("`vm run --rm` without a command has nothing to run here")
                .hint("pass a command after `--`, or run it on a terminal for a shell"),
        ));
    }
    let client = Client::connect().await.map_err(fail)?;
    let vm = create(&client, &args.spec, false, args.rm)
        .await
        .map_err(fail)?;
    let shell = args.command.is_empty() && !args.detach && super::workspace::interactive_session();
    let outcome = if let Some(path) = &args.path {
        let result = super::workspace::run_in_new_vm(
            &client,
            &vm.name,
            path,
            args.include_untracked,
            args.command,
            shell,
        )
        .await;
        result.map_err(|failure| failure.error)
    } else if shell {
        let shell = super::workspace::shell_in_new_vm(&client, &vm.name).await;
        shell.map_err(|failure| failure.error)
    } else if args.command.is_empty() {
        eprintln!(
            "VM {} is running; run commands with `banger vm exec {} -- CMD`",
            vm.name, vm.name
        );
        Ok(0)
    } else {
        // A terminal's input would reach a command without a pty only line
        // by line, so it gets none; piped input is forwarded.
        let input = if std::io::stdin().is_terminal() {
            remote::Input::Null
        } else {
            remote::Input::Inherit
        };
        let command = remote::RemoteCommand {
            argv: args.command,
            ..Default::default()
        };
        remote::run(&client, &vm.name, command, input, remote::Output::Inherit)
            .await
            .map(|finished| exit_code(&finished.status))
    };
    if shell && !args.rm {
        super::workspace::remind_running(&vm.name);
    }
    if args.rm {
        let deleted: Result<VmRecord, CliError> = client
            .stream(
                Method::DELETE,
                &format!("/vms/{}", vm.name),
                None::<&()>,
                |_| {},
            )
            .await;
        if let Err(error) = deleted {
            crate::render::print_error(&error);
            return Err(fail(CliError::local(format!(
                "failed to delete VM {}",
                vm.name
            ))));
        }
    }
    outcome.map_err(fail)
}

/// Returns the guest command's exit code, or 128 + signal like a shell.
fn exit_code(status: &banger_agent_proto::ExitStatus) -> u8 {
    (status.shell_code() & 0xff) as u8
}

pub async fn list(args: ListArgs) -> Result<u8, CliError> {
    let client = Client::connect().await?;
    let vms: Vec<VmRecord> = client.get("/vms").await?;
    let addresses = super::ssh::addresses(&client).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&vms).expect("serialises")
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|vm| {
            vec![
                vm.id.clone(),
                vm.name.clone(),
                vm.state.to_string(),
                addresses
                    .get(&vm.id)
                    .cloned()
                    .unwrap_or_else(|| "-".to_owned()),
                vm.image.clone(),
                vm.spec.vcpus.to_string(),
                format!("{}M", vm.spec.memory_mib),
                format_size(vm.spec.disk_size_bytes),
                crate::workspace::column(vm),
                vm.backend.clone(),
                vm.created_at.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "STATE",
            "IP",
            "IMAGE",
            "VCPU",
            "MEM",
            "DISK",
            "WORKSPACE",
            "VMM",
            "CREATED",
        ],
        &rows,
    );
    Ok(0)
}
