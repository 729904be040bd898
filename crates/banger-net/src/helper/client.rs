//! Client of `banger-root`: one request per connection.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::protocol::{DEFAULT_SOCKET_PATH, ErrorInfo, MAX_RESPONSE_BYTES, Request, Response};

/// Time a request gets from connecting to the end of the response. Creating
/// the nftables table and the bridge takes well under a second; the margin
/// is for a loaded host.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "connecting to banger-root at {path} failed; is banger-root running, and is this user the owner_uid of its configuration?"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sending the request to banger-root at {path} failed")]
    Send {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the response of banger-root at {path} failed")]
    Receive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("banger-root at {path} did not respond within {} s", timeout.as_secs_f64())]
    TimedOut { path: PathBuf, timeout: Duration },
    #[error("banger-root at {path} sent a response longer than {MAX_RESPONSE_BYTES} bytes")]
    ResponseTooLarge { path: PathBuf },
    #[error("banger-root at {path} sent an invalid response")]
    InvalidResponse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} failed in banger-root: {error}")]
    Failed { op: &'static str, error: ErrorInfo },
}

/// Sends requests to `banger-root` on its Unix socket.
#[derive(Debug, Clone)]
pub struct HelperClient {
    socket: PathBuf,
    timeout: Duration,
}

impl Default for HelperClient {
    fn default() -> Self {
        Self::new(DEFAULT_SOCKET_PATH)
    }
}

impl HelperClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` on a new connection and returns the `result` of a
    /// successful response (`null` when it has none). A response with
    /// `ok: false` becomes [`ClientError::Failed`].
    pub async fn call(&self, request: &Request) -> Result<Value, ClientError> {
        let response = tokio::time::timeout(self.timeout, self.exchange(request))
            .await
            .map_err(|_| ClientError::TimedOut {
                path: self.socket.clone(),
                timeout: self.timeout,
            })??;
        if response.ok {
            return Ok(response.result.unwrap_or(Value::Null));
        }
        let error = response.error.unwrap_or_else(|| ErrorInfo {
            message: "the response has ok: false but no error".to_owned(),
            hint: None,
        });
        Err(ClientError::Failed {
            op: request.operation.name(),
            error,
        })
    }

    async fn exchange(&self, request: &Request) -> Result<Response, ClientError> {
        let path = &self.socket;
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: path.clone(),
                    source,
                })?;

        // Serializing these plain types cannot fail.
        let mut bytes = serde_json::to_vec(request).unwrap_or_default();
        bytes.push(b'\n');
        let sent = async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        }
        .await;

        let mut response = Vec::new();
        let limit = u64::try_from(MAX_RESPONSE_BYTES + 1).unwrap_or(u64::MAX);
        (&mut stream)
            .take(limit)
            .read_to_end(&mut response)
            .await
            .map_err(|source| ClientError::Receive {
                path: path.clone(),
                source,
            })?;
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::ResponseTooLarge { path: path.clone() });
        }
        let parsed = serde_json::from_slice(&response);
        match (sent, parsed) {
            (_, Ok(response)) => Ok(response),
            // A helper that rejects a request early may close the socket
            // before reading it all; its response still explains why.
            (Err(source), Err(_)) => Err(ClientError::Send {
                path: path.clone(),
                source,
            }),
            (Ok(()), Err(source)) => Err(ClientError::InvalidResponse {
                path: path.clone(),
                source,
            }),
        }
    }
}
