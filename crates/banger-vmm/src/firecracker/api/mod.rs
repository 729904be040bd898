//! Client of the Firecracker HTTP API on its Unix socket.
//!
//! Each request opens a new connection, so a client keeps no state and a
//! restarted daemon can talk to a running Firecracker at once.

mod models;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use thiserror::Error;
use tokio::net::UnixStream;

pub use models::{
    ActionType, BootSource, CacheType, Drive, Fault, InstanceAction, InstanceInfo, LogLevel,
    Logger, MachineConfig, Metrics, NetworkInterface, VmState, VmStateUpdate, Vsock,
};

/// Maximum number of bytes of an unexpected response body quoted in errors.
const MAX_QUOTED_BODY: usize = 1024;

/// Failure of one API request.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("failed to serialize the body of {method} {path}")]
    Serialize {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid request {method} {path}: {reason}")]
    InvalidRequest {
        method: Method,
        path: String,
        reason: String,
    },

    #[error("failed to connect to the Firecracker API socket {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("HTTP exchange {method} {path} on {} failed", socket.display())]
    Http {
        method: Method,
        path: String,
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },

    #[error(
        "{method} {path} on {} timed out after {} s",
        socket.display(),
        timeout.as_secs_f64()
    )]
    TimedOut {
        method: Method,
        path: String,
        socket: PathBuf,
        timeout: Duration,
    },

    #[error("Firecracker rejected {method} {path} with HTTP {status}: {fault_message}")]
    Fault {
        method: Method,
        path: String,
        status: StatusCode,
        /// Firecracker's `fault_message`, or the raw body when it sent no
        /// JSON error.
        fault_message: String,
    },

    #[error("invalid response to {method} {path} (HTTP {status}): {reason}; body: {body}")]
    InvalidResponse {
        method: Method,
        path: String,
        status: StatusCode,
        reason: String,
        body: String,
    },
}

impl ApiError {
    /// Returns Firecracker's `fault_message` when Firecracker rejected the request.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            ApiError::Fault { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }
}

/// Client of one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// Creates a client for `socket`. `timeout` bounds each request from
    /// connecting to the end of the response body.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        ApiClient {
            socket: socket.into(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /`: the instance id, state and Firecracker version.
    pub async fn instance_info(&self) -> Result<InstanceInfo, ApiError> {
        let path = "/";
        let (status, body) = self.send(Method::GET, path, None).await?;
        serde_json::from_slice(&body).map_err(|error| ApiError::InvalidResponse {
            method: Method::GET,
            path: path.to_owned(),
            status,
            reason: format!("expected instance information as JSON: {error}"),
            body: quote_body(&body),
        })
    }

    pub async fn put_machine_config(&self, config: &MachineConfig) -> Result<(), ApiError> {
        self.put("/machine-config", config).await
    }

    pub async fn put_boot_source(&self, boot_source: &BootSource) -> Result<(), ApiError> {
        self.put("/boot-source", boot_source).await
    }

    /// `PUT /drives/{drive_id}`. Firecracker attaches drives in the order
    /// they are first put, after the root device if there is one.
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), ApiError> {
        self.put(&format!("/drives/{}", drive.drive_id), drive)
            .await
    }

    pub async fn put_network_interface(
        &self,
        interface: &NetworkInterface,
    ) -> Result<(), ApiError> {
        self.put(
            &format!("/network-interfaces/{}", interface.iface_id),
            interface,
        )
        .await
    }

    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), ApiError> {
        self.put("/vsock", vsock).await
    }

    pub async fn put_logger(&self, logger: &Logger) -> Result<(), ApiError> {
        self.put("/logger", logger).await
    }

    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<(), ApiError> {
        self.put("/metrics", metrics).await
    }

    /// `PUT /actions`: starts the instance, sends Ctrl+Alt+Del or flushes
    /// the metrics.
    pub async fn action(&self, action_type: ActionType) -> Result<(), ApiError> {
        self.put("/actions", &InstanceAction { action_type }).await
    }

    /// `PATCH /vm`: pauses or resumes a started instance.
    pub async fn set_vm_state(&self, state: VmState) -> Result<(), ApiError> {
        self.send_json(Method::PATCH, "/vm", &VmStateUpdate { state })
            .await
    }

    async fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ApiError> {
        self.send_json(Method::PUT, path, body).await
    }

    async fn send_json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), ApiError> {
        let json = serde_json::to_vec(body).map_err(|source| ApiError::Serialize {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })?;
        self.send(method, path, Some(json)).await.map(drop)
    }

    /// Sends one request and returns the status and body of a 2xx response.
    /// Any other status becomes [`ApiError::Fault`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let exchange = self.exchange(method.clone(), path, body);
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ApiError::TimedOut {
                    method,
                    path: path.to_owned(),
                    socket: self.socket.clone(),
                    timeout: self.timeout,
                });
            }
        };
        if status.is_success() {
            return Ok((status, body));
        }
        Err(ApiError::Fault {
            method,
            path: path.to_owned(),
            status,
            fault_message: parse_fault(&body),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|error| ApiError::InvalidRequest {
                method: method.clone(),
                path: path.to_owned(),
                reason: error.to_string(),
            })?;

        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let http_error = |source| ApiError::Http {
            method: method.clone(),
            path: path.to_owned(),
            socket: self.socket.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        // The connection task moves the bytes. It ends when the response is
        // complete and the sender is dropped, or when it is aborted.
        let _connection = AbortOnDrop(tokio::spawn(connection));

        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        Ok((status, body))
    }
}

/// Aborts a spawned task when dropped, so a timed-out request leaves no
/// connection task behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns the `fault_message` of an error body, or the body itself when it
/// is not a JSON error object.
pub fn parse_fault(body: &[u8]) -> String {
    match serde_json::from_slice::<Fault>(body) {
        Ok(fault) => fault.fault_message,
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => "(empty body)".to_owned(),
        Err(_) => quote_body(body),
    }
}

fn quote_body(body: &[u8]) -> String {
    let end = body.len().min(MAX_QUOTED_BODY);
    String::from_utf8_lossy(&body[..end]).trim().to_owned()
}
