//! The socket: one JSON request per connection, accepted from root and the
//! owner uid only.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_net::helper::{
    ErrorInfo, Executor, MAX_REQUEST_BYTES, Request, Response, parse_request,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Time a client gets to send its whole request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("creating the socket directory {path} failed")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the socket directory {path} is owned by uid {uid} or writable by group or others (mode {mode:o}); \
         make it root-owned and mode 0755"
    )]
    InsecureDir { path: PathBuf, uid: u32, mode: u32 },
    #[error(
        "the socket directory {path} (mode {mode:o}) is not searchable by others, so the owner uid cannot reach the socket; make it mode 0755"
    )]
    ClosedDir { path: PathBuf, mode: u32 },
    #[error("socket path {path} has no parent directory")]
    NoParent { path: PathBuf },
    #[error("{path} exists and is not a socket; remove it or configure another socket path")]
    NotASocket { path: PathBuf },
    #[error("removing the stale socket {path} failed")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listening on {path} failed")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("giving the socket {path} to uid {uid} with mode 0600 failed")]
    SetOwner {
        path: PathBuf,
        uid: u32,
        #[source]
        source: io::Error,
    },
}

/// Creates the socket's directory (root-owned, 0755) when missing, checks
/// it, replaces a stale socket and listens. The socket is owned by
/// `owner_uid` with mode 0600, so only that user and root can connect.
pub fn bind(path: &Path, owner_uid: u32) -> Result<UnixListener, ServerError> {
    let dir = path.parent().ok_or_else(|| ServerError::NoParent {
        path: path.to_owned(),
    })?;
    prepare_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ServerError::RemoveStale {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(ServerError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let set_owner_error = |source| ServerError::SetOwner {
        path: path.to_owned(),
        uid: owner_uid,
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(set_owner_error)?;
    std::os::unix::fs::chown(path, Some(owner_uid), None).map_err(set_owner_error)?;
    Ok(listener)
}

fn prepare_dir(dir: &Path) -> Result<(), ServerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| ServerError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    let metadata = std::fs::metadata(dir).map_err(|source| ServerError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let mode = metadata.mode() & 0o7777;
    // A sticky world-writable directory such as /tmp is no safe home either:
    // another user could create the socket path first.
    if metadata.uid() != 0 || mode & 0o022 != 0 {
        return Err(ServerError::InsecureDir {
            path: dir.to_owned(),
            uid: metadata.uid(),
            mode,
        });
    }
    if mode & 0o001 == 0 {
        return Err(ServerError::ClosedDir {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Accepts connections until the future is dropped. Each connection is
/// served on its own task; the executor runs one operation at a time.
pub async fn serve(listener: UnixListener, executor: Arc<Executor>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let executor = Arc::clone(&executor);
                tokio::spawn(async move { handle(stream, &executor).await });
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                // Out of file descriptors or similar: retrying at once
                // would only repeat the error.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection and logs one line for it.
async fn handle(mut stream: UnixStream, executor: &Executor) {
    let (peer_uid, peer_pid) = match stream.peer_cred() {
        Ok(cred) => (cred.uid(), cred.pid().unwrap_or(0)),
        Err(error) => {
            tracing::warn!(%error, "reading the peer credentials failed; closing the connection");
            return;
        }
    };
    let owner_uid = executor.config().owner_uid;
    if peer_uid != 0 && peer_uid != owner_uid {
        tracing::warn!(
            peer_uid,
            peer_pid,
            owner_uid,
            "request rejected: the peer is neither root nor the owner uid"
        );
        let error = ErrorInfo {
            message: format!(
                "banger-root serves only root and uid {owner_uid}; this connection is from uid {peer_uid}"
            ),
            hint: Some(
                "run bangerd as the user named by owner_uid in banger-root's configuration"
                    .to_owned(),
            ),
        };
        // The request is read but never parsed: answering before the client
        // has written it would fail its write with a broken pipe.
        let _ = read_line(&mut stream).await;
        send(&mut stream, &Response::failure(error), peer_uid).await;
        return;
    }

    let request = read_line(&mut stream).await.and_then(|line| {
        parse_request(&line).map_err(|error| ErrorInfo {
            message: banger_net::error_chain(&error),
            hint: error.hint(),
        })
    });
    let (request, response) = match request {
        Ok(request) => {
            let response = match executor.execute(&request).await {
                Ok(result) => Response::success(result),
                Err(error) => Response::failure(error.to_error_info()),
            };
            (Some(request), response)
        }
        Err(error) => (None, Response::failure(error)),
    };
    log_outcome(request.as_ref(), &response, peer_uid, peer_pid);
    send(&mut stream, &response, peer_uid).await;
}

fn log_outcome(request: Option<&Request>, response: &Response, peer_uid: u32, peer_pid: i32) {
    let op_id = request.map_or("-", |request| request.op_id.as_str());
    let op = request.map_or("-", |request| request.operation.name());
    match &response.error {
        None => tracing::info!(op_id, op, peer_uid, peer_pid, "request succeeded"),
        Some(error) => {
            tracing::warn!(op_id, op, peer_uid, peer_pid, error = %error.message, "request failed")
        }
    }
}

/// Reads up to the first newline or the end of input, whichever comes
/// first, and returns the bytes before the newline. Stops early past
/// [`MAX_REQUEST_BYTES`], which parsing then rejects.
async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, ErrorInfo> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let len = stream.read(&mut chunk).await?;
            if len == 0 {
                break;
            }
            buffer.extend_from_slice(&chunk[..len]);
            if buffer.contains(&b'\n') || buffer.len() > MAX_REQUEST_BYTES {
                break;
            }
        }
        Ok::<(), io::Error>(())
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            return Err(ErrorInfo {
                message: format!("reading the request failed: {error}"),
                hint: None,
            });
        }
        Err(_) => {
            return Err(ErrorInfo {
                message: format!("no complete request within {} s", READ_TIMEOUT.as_secs()),
                hint: Some(
                    "send the JSON request followed by a newline or end of input".to_owned(),
                ),
            });
        }
    }
    if let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
        buffer.truncate(end);
    }
    Ok(buffer)
}

async fn send(stream: &mut UnixStream, response: &Response, peer_uid: u32) {
    // Serializing a Response (strings, bools and JSON values) cannot fail.
    let mut bytes = serde_json::to_vec(response).unwrap_or_default();
    bytes.push(b'\n');
    if let Err(error) = stream.write_all(&bytes).await {
        tracing::warn!(peer_uid, %error, "sending the response failed");
    }
    let _ = stream.shutdown().await;
}
