//! `GET /v1/vms/{name}/logs`: the guest console, optionally followed.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use banger_model::VmState;
use serde::Deserialize;

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};
use crate::vms::CONSOLE_LOG;

/// How often a followed log is checked for new bytes.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

pub async fn logs(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Response> {
    let vm = daemon.vm_record(&name)?;
    let path = daemon.paths.vm_dir(&vm.id).join(CONSOLE_LOG);
    let mut file = std::fs::File::open(&path).map_err(|e| {
        ApiError::not_found(format!("VM {name:?} has no console log yet"))
            .cause(format!("{}: {e}", path.display()))
            .hint(format!("start it with `banger vm start {name}`"))
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let follow = query.follow;
    tokio::spawn(async move {
        let mut offset = 0u64;
        loop {
            // Read what is there now, in chunks, on the blocking pool.
            let read = tokio::task::spawn_blocking(
                move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
                    let mut buf = vec![0u8; CHUNK];
                    file.seek(SeekFrom::Start(offset))?;
                    let n = file.read(&mut buf)?;
                    buf.truncate(n);
                    Ok((file, buf))
                },
            )
            .await;
            let Ok(Ok((returned, bytes))) = read else {
                break;
            };
            file = returned;
            if !bytes.is_empty() {
                offset += bytes.len() as u64;
                if tx.send(Ok(bytes)).await.is_err() {
                    break;
                }
                continue;
            }
            if !follow || tx.is_closed() {
                break;
            }
            // Following ends with the VM: once it no longer runs, the log is complete.
            let running = daemon
                .store()
                .get_vm(&name)
                .ok()
                .flatten()
                .is_some_and(|vm| {
                    matches!(
                        vm.state,
                        VmState::Running | VmState::Starting | VmState::Stopping
                    )
                });
            if !running {
                break;
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}
