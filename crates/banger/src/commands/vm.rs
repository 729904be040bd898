use banger_api::{CreateVmRequest, Defaults, VmRecord};
use banger_model::{format_size, parse_size};
use clap::{Args, Subcommand};
use hyper::Method;

use super::{EXIT_BANGER_FAILED, Failure};
use crate::client::Client;
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
    /// Delete VMs and their disks, stopping them first.
    #[command(alias = "rm")]
    Delete { names: Vec<String> },
    /// Run a command in a running VM.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List VMs.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one VM as JSON.
    Show { name: String },
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
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: VmCommand) -> Result<u8, Failure> {
    match command {
        VmCommand::Run(args) => run_vm(args).await,
        VmCommand::Exec { name, command } => exec(&name, command).await,
        VmCommand::Create(args) => {
            let client = Client::connect().await?;
            let vm = create(&client, &args.spec, args.no_start).await?;
            println!("{}", vm.name);
            Ok(0)
        }
        VmCommand::Start { names } => {
            each(names, "start", |c, n| async move {
                c.stream::<VmRecord>(
                    Method::POST,
                    &format!("/vms/{n}/start"),
                    None::<&()>,
                    progress,
                )
                .await
            })
            .await
        }
        VmCommand::Stop { names } => {
            each(names, "stop", |c, n| async move {
                c.stream::<VmRecord>(
                    Method::POST,
                    &format!("/vms/{n}/stop"),
                    None::<&()>,
                    progress,
                )
                .await
            })
            .await
        }
        VmCommand::Delete { names } => {
            each(names, "delete", |c, n| async move {
                c.stream::<VmRecord>(Method::DELETE, &format!("/vms/{n}"), None::<&()>, progress)
                    .await
            })
            .await
        }
        VmCommand::List(args) => list(args).await.map_err(Failure::from),
        VmCommand::Show { name } => {
            let client = Client::connect().await?;
            let vm: VmRecord = client.get(&format!("/vms/{name}")).await?;
            println!("{}", serde_json::to_string_pretty(&vm).expect("serialises"));
            Ok(0)
        }
    }
}

/// Applies one operation to several VMs concurrently; reports every failure.
async fn each<F, Fut>(names: Vec<String>, verb: &str, operation: F) -> Result<u8, Failure>
where
    F: Fn(std::sync::Arc<Client>, String) -> Fut,
    Fut: std::future::Future<Output = Result<VmRecord, CliError>> + Send + 'static,
{
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
        .map(|name| tokio::spawn(operation(client.clone(), name.clone())))
        .collect();
    let mut failed = 0;
    for (name, task) in names.iter().zip(tasks) {
        match task.await.expect("task not cancelled") {
            Ok(vm) => eprintln!("{}: {}", vm.name, vm.state),
            Err(error) => {
                crate::render::print_error(&error);
                failed += 1;
                let _ = name;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

async fn create(client: &Client, spec: &SpecArgs, no_start: bool) -> Result<VmRecord, CliError> {
    let defaults: Defaults = client.get("/defaults").await?;
    eprintln!(
        "spec: {} vcpu · {} MiB · {} disk · {}",
        spec.vcpu.unwrap_or(defaults.vcpus),
        spec.memory.unwrap_or(defaults.memory_mib),
        format_size(spec.disk_size.unwrap_or(defaults.disk_size_bytes)),
        spec.image.as_deref().unwrap_or(&defaults.image),
    );
    let request = CreateVmRequest {
        name: spec.name.clone(),
        image: spec.image.clone(),
        kernel: spec.kernel.clone(),
        vcpus: spec.vcpu,
        memory_mib: spec.memory,
        disk_size_bytes: spec.disk_size,
        no_start,
    };
    client
        .stream(Method::POST, "/vms", Some(&request), progress)
        .await
}

async fn run_vm(args: RunArgs) -> Result<u8, Failure> {
    let fail = |error: CliError| Failure {
        error,
        exit_code: EXIT_BANGER_FAILED,
    };
    let client = Client::connect().await.map_err(fail)?;
    let vm = create(&client, &args.spec, false).await.map_err(fail)?;
    let outcome = if args.command.is_empty() {
        eprintln!(
            "VM {} is running; run commands with `banger vm exec {} -- CMD`",
            vm.name, vm.name
        );
        Ok(0)
    } else {
        crate::exec::run(&client, &vm.name, args.command)
            .await
            .map(|status| exit_code(&status))
    };
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

async fn exec(name: &str, command: Vec<String>) -> Result<u8, Failure> {
    let fail = |error: CliError| Failure {
        error,
        exit_code: EXIT_BANGER_FAILED,
    };
    let client = Client::connect().await.map_err(fail)?;
    let status = crate::exec::run(&client, name, command)
        .await
        .map_err(fail)?;
    Ok(exit_code(&status))
}

/// The guest command's exit code, or 128 + signal like a shell.
fn exit_code(status: &banger_agent_proto::ExitStatus) -> u8 {
    (status.shell_code() & 0xff) as u8
}

pub async fn list(args: ListArgs) -> Result<u8, CliError> {
    let client = Client::connect().await?;
    let vms: Vec<VmRecord> = client.get("/vms").await?;
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
                vm.image.clone(),
                vm.spec.vcpus.to_string(),
                format!("{}M", vm.spec.memory_mib),
                format_size(vm.spec.disk_size_bytes),
                vm.created_at.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "NAME", "STATE", "IMAGE", "VCPU", "MEM", "DISK", "CREATED",
        ],
        &rows,
    );
    Ok(0)
}
