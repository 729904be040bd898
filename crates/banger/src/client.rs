//! The daemon client: HTTP/1.1 over the daemon's Unix socket, started on
//! first use.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_api::paths::Paths;
use banger_api::{ErrorBody, ErrorKind, Event};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::render::CliError;

/// How long the CLI waits for a daemon it started to listen.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Client {
    pub paths: Paths,
}

impl Client {
    /// Connects to the daemon, starting it when nothing listens on its socket.
    pub async fn connect() -> Result<Self, CliError> {
        let client = Self {
            paths: Paths::from_env(),
        };
        if UnixStream::connect(client.paths.socket()).await.is_err() {
            client.start_daemon().await?;
        }
        Ok(client)
    }

    /// Creates a client that never starts the daemon.
    pub fn existing() -> Self {
        Self {
            paths: Paths::from_env(),
        }
    }

    async fn start_daemon(&self) -> Result<(), CliError> {
        let binary = daemon_binary();
        std::fs::create_dir_all(&self.paths.state_dir).map_err(|e| {
            CliError::local(format!(
                "failed to create {}",
                self.paths.state_dir.display()
            ))
            .cause(e.to_string())
        })?;
        let log_path = self.paths.daemon_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                CliError::local(format!("failed to open {}", log_path.display()))
                    .cause(e.to_string())
            })?;
        let log_err = log
            .try_clone()
            .map_err(|e| CliError::local(e.to_string()))?;
        let mut command = std::process::Command::new(&binary);
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // The daemon gets its own session so that the terminal's signals
        // (Ctrl-C in this shell) do not reach it.
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            CliError::new(
                ErrorKind::Unavailable,
                format!("failed to start the daemon {}", binary.display()),
            )
            .cause(e.to_string())
            .hint("install bangerd next to banger, or put it on PATH")
        })?;
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            if UnixStream::connect(self.paths.socket()).await.is_ok() {
                // The child now runs on its own; it is reaped by init when the
                // CLI exits first.
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let error = CliError::new(
                    ErrorKind::Unavailable,
                    format!("the daemon exited during startup ({status})"),
                )
                .cause(startup_error(&log));
                let config = self.paths.config_file();
                let hint = if log.contains(&format!("config file {}", config.display())) {
                    format!(
                        "correct or remove the setting in {}, then run the command again",
                        config.display()
                    )
                } else {
                    format!("see {}", log_path.display())
                };
                return Err(error.hint(hint));
            }
            if Instant::now() >= deadline {
                return Err(CliError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the daemon did not listen on {} within {} s",
                        self.paths.socket().display(),
                        DAEMON_START_TIMEOUT.as_secs()
                    ),
                )
                .hint(format!("see {}", log_path.display())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        upgrade: Option<&str>,
    ) -> Result<Response<Incoming>, CliError> {
        let socket = self.paths.socket();
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(|e| unreachable(&socket, e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&socket, std::io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://bangerd{}{path}", banger_api::PREFIX))
            .header("host", "bangerd");
        if let Some(protocol) = upgrade {
            builder = builder
                .header("connection", "upgrade")
                .header("upgrade", protocol);
        }
        let request = match body {
            Some(bytes) => builder
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(bytes)).boxed()),
            None => builder.body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            ),
        }
        .expect("valid request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&socket, std::io::Error::other(e)))?;
        Ok(response)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let response = self.send(Method::GET, path, None, None).await?;
        read_json(response).await
    }

    /// Sends `body` as JSON and reads a JSON response.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CliError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request serialises"));
        let response = self.send(method, path, body, None).await?;
        read_json(response).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        let response = self.send(Method::DELETE, path, None, None).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(error_from(response).await)
    }

    pub async fn post_empty(&self, path: &str) -> Result<(), CliError> {
        let response = self.send(Method::POST, path, None, None).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(error_from(response).await)
    }

    /// Sends a request whose response is an event stream; progress lines go to
    /// stderr, and the final result is returned.
    pub async fn stream<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        mut on_progress: impl FnMut(&str),
    ) -> Result<T, CliError> {
        self.stream_events(method, path, body, |event| {
            if let Event::Progress { message } = event {
                on_progress(message);
            }
        })
        .await
    }

    /// Like [`Client::stream`], but hands every event before the result to
    /// `on_event`.
    pub async fn stream_events<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        mut on_event: impl FnMut(&Event),
    ) -> Result<T, CliError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request serialises"));
        let mut response = self.send(method, path, body, None).await?;
        if !response.status().is_success() {
            return Err(error_from(response).await);
        }
        let mut pending = Vec::new();
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|e| {
                CliError::local("the daemon closed the connection mid-operation")
                    .cause(e.to_string())
            })?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: Event = serde_json::from_slice(&line).map_err(|e| {
                    CliError::local("the daemon sent an invalid event").cause(e.to_string())
                })?;
                match event {
                    Event::Progress { .. } | Event::Accepted { .. } => on_event(&event),
                    Event::Done { result } => {
                        return serde_json::from_value(result).map_err(|e| {
                            CliError::local("the daemon sent an invalid result")
                                .cause(e.to_string())
                        });
                    }
                    Event::Error { error } => return Err(CliError::Remote(error)),
                }
            }
        }
        Err(
            CliError::local("the daemon ended the operation without a result")
                .hint(format!("see {}", self.paths.daemon_log().display())),
        )
    }
}

impl Client {
    /// Streams a route's raw body to stdout (console logs).
    pub async fn copy_to_stdout(&self, path: &str) -> Result<(), CliError> {
        use std::io::Write;
        let mut response = self.send(Method::GET, path, None, None).await?;
        if !response.status().is_success() {
            return Err(error_from(response).await);
        }
        let mut stdout = std::io::stdout();
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|e| {
                CliError::local("the daemon closed the connection").cause(e.to_string())
            })?;
            if let Some(data) = frame.data_ref()
                && let Err(e) = stdout.write_all(data).and_then(|()| stdout.flush())
            {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(CliError::local("failed to write to stdout").cause(e.to_string()));
            }
        }
        Ok(())
    }
}

async fn read_json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T, CliError> {
    if !response.status().is_success() {
        return Err(error_from(response).await);
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::local("failed to read the daemon's response").cause(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::local("the daemon sent an invalid response").cause(e.to_string()))
}

/// Turns an error response into a CLI error, keeping the daemon's body.
pub async fn error_from(response: Response<Incoming>) -> CliError {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => CliError::Remote(body),
        Err(_) => CliError::local(format!(
            "the daemon responded with {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )),
    }
}

fn unreachable(socket: &Path, error: std::io::Error) -> CliError {
    CliError::new(
        ErrorKind::Unavailable,
        format!("cannot reach the daemon at {}", socket.display()),
    )
    .cause(error.to_string())
    .hint("check that bangerd runs (`banger daemon status`); it logs to ~/.local/state/banger/bangerd.log")
}

/// `bangerd` next to this executable, else from `PATH`.
fn daemon_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BANGER_DAEMON_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bangerd")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

/// Extracts the daemon's fatal error from its log: the last `bangerd: ` line and the
/// lines after it (a TOML error spans several), at most 12, else the last 5
/// lines of the log.
fn startup_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|line| line.starts_with("bangerd: "))
        .unwrap_or(lines.len().saturating_sub(5));
    let end = lines.len().min(start + 12);
    lines[start..end].join("\n")
}

#[cfg(test)]
mod tests {
    use super::startup_error;

    #[test]
    fn startup_error_starts_at_the_fatal_line() {
        let log = "2026-12-04T20:00:00Z  INFO starting\n\
                   2026-12-04T20:00:00Z ERROR bangerd failed: invalid config file /c/config.toml\n\
                   bangerd: invalid config file /c/config.toml: TOML parse error at line 2\n\
                   \x20 |\n\
                   2 | memory_mb = 1024\n\
                   unknown field `memory_mb`\n";
        let error = startup_error(log);
        assert!(
            error.starts_with("bangerd: invalid config file /c/config.toml"),
            "{error}"
        );
        assert!(error.ends_with("unknown field `memory_mb`"), "{error}");
    }

    #[test]
    fn startup_error_falls_back_to_the_tail() {
        let log: String = (1..=8).map(|n| format!("line {n}\n")).collect();
        assert_eq!(
            startup_error(&log),
            "line 4\nline 5\nline 6\nline 7\nline 8"
        );
        assert_eq!(startup_error(""), "");
    }
}
