use std::path::PathBuf;

use banger_api::{ImportKernelRequest, KernelRecord, PullKernelRequest};
use clap::Subcommand;
use hyper::Method;

use crate::client::Client;
use crate::render::{CliError, print_table, progress};

#[derive(Subcommand, Debug)]
pub enum KernelCommand {
    /// Import a kernel from a Debian linux-image package or a kernel file.
    Import {
        /// A Debian linux-image-<release> package (.deb).
        #[arg(long, conflicts_with = "vmlinux")]
        deb: Option<PathBuf>,
        /// A kernel file: an ELF vmlinux or a bzImage (vmlinuz).
        #[arg(long)]
        vmlinux: Option<PathBuf>,
        /// With --vmlinux: the kernel's /lib/modules/<release> directory, for a
        /// kernel whose virtio drivers are modules.
        #[arg(long, requires = "vmlinux", conflicts_with = "deb")]
        modules: Option<PathBuf>,
        /// Catalog name; the kernel release when omitted.
        #[arg(long)]
        name: Option<String>,
    },
    /// Fetch a kernel from the catalog (the default fetches Debian's cloud kernel with apt-get).
    Pull {
        #[arg(default_value = banger_model::DEFAULT_KERNEL)]
        name: String,
    },
    /// List imported kernels.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a kernel from the catalog.
    #[command(alias = "remove")]
    Rm { name: String },
}

pub async fn run(command: KernelCommand) -> Result<u8, CliError> {
    let client = Client::connect().await?;
    match command {
        KernelCommand::Import {
            deb,
            vmlinux,
            modules,
            name,
        } => {
            let absolute = |path: Option<PathBuf>| -> Result<Option<String>, CliError> {
                path.map(|path| {
                    std::path::absolute(&path)
                        .map(|path| path.display().to_string())
                        .map_err(|e| {
                            CliError::invalid(format!("invalid path {}", path.display()))
                                .cause(e.to_string())
                        })
                })
                .transpose()
            };
            let request = ImportKernelRequest {
                deb: absolute(deb)?,
                vmlinux: absolute(vmlinux)?,
                modules: absolute(modules)?,
                name,
            };
            let kernel: KernelRecord = client
                .stream(Method::POST, "/kernels/import", Some(&request), progress)
                .await?;
            println!("{} {}", kernel.name, kernel.release);
        }
        KernelCommand::Pull { name } => {
            let kernel: KernelRecord = client
                .stream(
                    Method::POST,
                    "/kernels/pull",
                    Some(&PullKernelRequest { name }),
                    progress,
                )
                .await?;
            println!("{} {}", kernel.name, kernel.release);
        }
        KernelCommand::List { json } => {
            let kernels: Vec<KernelRecord> = client.get("/kernels").await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&kernels).expect("serialises")
                );
            } else {
                let rows: Vec<Vec<String>> = kernels
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.release.clone(),
                            k.sha256[..12.min(k.sha256.len())].to_string(),
                            k.source.clone(),
                            k.created_at.clone(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "RELEASE", "SHA256", "SOURCE", "CREATED"], &rows);
            }
        }
        KernelCommand::Rm { name } => {
            client.delete(&format!("/kernels/{name}")).await?;
            eprintln!("removed kernel {name}");
        }
    }
    Ok(0)
}
