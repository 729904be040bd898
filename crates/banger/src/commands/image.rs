use banger_api::{BuildImageRequest, ImageRecord};
use banger_model::format_size;
use clap::Subcommand;
use hyper::Method;

use crate::client::Client;
use crate::render::{CliError, print_table, progress};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an image from its recipe with mmdebstrap.
    Build {
        #[arg(default_value = banger_model::DEFAULT_IMAGE)]
        name: String,
    },
    /// List images.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image from the catalog (rejected while a VM uses it).
    #[command(alias = "remove")]
    Rm { name: String },
}

pub async fn run(command: ImageCommand) -> Result<u8, CliError> {
    let client = Client::connect().await?;
    match command {
        ImageCommand::Build { name } => {
            let image: ImageRecord = client
                .stream(
                    Method::POST,
                    "/images/build",
                    Some(&BuildImageRequest { name }),
                    progress,
                )
                .await?;
            println!(
                "{} {}",
                image.name,
                &image.sha256[..12.min(image.sha256.len())]
            );
        }
        ImageCommand::List { json } => {
            let images: Vec<ImageRecord> = client.get("/images").await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&images).expect("serialises")
                );
            } else {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            format_size(i.size_bytes.div_ceil(1 << 20) << 20),
                            i.sha256[..12.min(i.sha256.len())].to_string(),
                            i.source.clone(),
                            i.created_at.clone(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "SIZE", "SHA256", "SOURCE", "CREATED"], &rows);
            }
        }
        ImageCommand::Rm { name } => {
            client.delete(&format!("/images/{name}")).await?;
            eprintln!("removed image {name}");
        }
    }
    Ok(0)
}
