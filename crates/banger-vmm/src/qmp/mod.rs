//! Async client for the QEMU Machine Protocol (QMP): JSON objects, one per
//! line, over a Unix socket.
//!
//! QEMU sends a greeting, the client negotiates with `qmp_capabilities`, and
//! each command gets a `return` or an `error` reply. Asynchronous events
//! (`SHUTDOWN`, `STOP`, ...) may arrive at any time and are kept aside.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Maximum length of one QMP message line; longer lines are rejected.
pub const MAX_LINE_LEN: usize = 1 << 20;

/// Number of asynchronous events kept for [`QmpClient::take_events`].
const MAX_KEPT_EVENTS: usize = 64;

/// Failure of a QMP exchange; every variant names the socket.
#[derive(Debug, Error)]
pub enum QmpError {
    #[error("failed to connect to QMP socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to read from or write to QMP socket {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("QMP socket {} closed the connection while waiting for {waiting_for}", path.display())]
    Closed { path: PathBuf, waiting_for: String },

    #[error("QMP socket {} sent a line longer than {MAX_LINE_LEN} bytes", path.display())]
    LineTooLong { path: PathBuf },

    #[error("invalid QMP message {line:?}: {reason}")]
    InvalidMessage { line: String, reason: String },

    #[error("QMP socket {} sent {got} while waiting for {waiting_for}", path.display())]
    Unexpected {
        path: PathBuf,
        got: &'static str,
        waiting_for: String,
    },

    #[error("QMP command {command} failed on {}: {class}: {desc}", path.display())]
    Command {
        path: PathBuf,
        command: String,
        class: String,
        desc: String,
    },

    #[error("QMP socket {} did not answer {waiting_for} within {} s", path.display(), timeout.as_secs_f64())]
    TimedOut {
        path: PathBuf,
        waiting_for: String,
        timeout: Duration,
    },
}

/// QEMU version from the QMP greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpVersion {
    pub major: u64,
    pub minor: u64,
    pub micro: u64,
    /// Distribution package string, such as `Debian 1:7.2+dfsg-7+deb12u18`.
    pub package: String,
}

/// Reply to `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpStatus {
    pub running: bool,
    /// QEMU run state: `running`, `paused`, `internal-error`, `shutdown`, ...
    pub status: String,
}

/// One message from the QMP server.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    Greeting(QmpVersion),
    Return {
        id: Option<Value>,
        value: Value,
    },
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    Event {
        name: String,
        data: Value,
    },
}

/// Parses one line of QMP output.
pub fn parse_message(line: &[u8]) -> Result<QmpMessage, QmpError> {
    let invalid = |reason: String| QmpError::InvalidMessage {
        line: String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned(),
        reason,
    };
    let value: Value = serde_json::from_slice(line).map_err(|error| invalid(error.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(invalid("not a JSON object".to_owned()));
    };
    let id = object.remove("id");

    if let Some(greeting) = object.remove("QMP") {
        return parse_greeting(&greeting).map_err(|reason| invalid(reason.to_owned()));
    }
    if let Some(value) = object.remove("return") {
        return Ok(QmpMessage::Return { id, value });
    }
    if let Some(error) = object.remove("error") {
        let class = string_field(&error, "class")
            .unwrap_or("GenericError")
            .to_owned();
        let desc = string_field(&error, "desc")
            .ok_or_else(|| invalid("error without \"desc\"".to_owned()))?
            .to_owned();
        return Ok(QmpMessage::Error { id, class, desc });
    }
    if let Some(Value::String(name)) = object.remove("event") {
        let data = object.remove("data").unwrap_or(Value::Null);
        return Ok(QmpMessage::Event { name, data });
    }
    Err(invalid(
        "no \"QMP\", \"return\", \"error\" or \"event\" member".to_owned(),
    ))
}

fn parse_greeting(greeting: &Value) -> Result<QmpMessage, &'static str> {
    let version = greeting.get("version").ok_or("greeting without version")?;
    let qemu = version.get("qemu").ok_or("greeting without version.qemu")?;
    let number = |key: &str| qemu.get(key).and_then(Value::as_u64);
    Ok(QmpMessage::Greeting(QmpVersion {
        major: number("major").ok_or("greeting without version.qemu.major")?,
        minor: number("minor").ok_or("greeting without version.qemu.minor")?,
        micro: number("micro").ok_or("greeting without version.qemu.micro")?,
        package: string_field(version, "package")
            .unwrap_or("")
            .trim()
            .to_owned(),
    }))
}

fn string_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Connected QMP session in command mode.
#[derive(Debug)]
pub struct QmpClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    version: QmpVersion,
    timeout: Duration,
    next_id: u64,
    events: VecDeque<(String, Value)>,
}

impl QmpClient {
    /// Connects to the QMP socket at `path`, reads the greeting and enters
    /// command mode. `timeout` bounds the connection and each later command.
    ///
    /// QEMU serves one QMP client per socket at a time, so this waits while
    /// another client is connected, up to `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::TimedOut {
                path: path.to_owned(),
                waiting_for: "the connection".to_owned(),
                timeout,
            })?
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (read_half, writer) = stream.into_split();
        let mut client = QmpClient {
            path: path.to_owned(),
            reader: BufReader::new(read_half),
            writer,
            version: QmpVersion {
                major: 0,
                minor: 0,
                micro: 0,
                package: String::new(),
            },
            timeout,
            next_id: 1,
            events: VecDeque::new(),
        };

        client.version = client.read_greeting().await?;
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// QEMU version from the greeting.
    pub fn version(&self) -> &QmpVersion {
        &self.version
    }

    /// Removes and returns the events received so far, oldest first, as
    /// (name, data) pairs. Only the last 64 are kept.
    pub fn take_events(&mut self) -> Vec<(String, Value)> {
        self.events.drain(..).collect()
    }

    /// Sends a command and returns the value of its `return` reply. An
    /// `error` reply becomes [`QmpError::Command`] with QEMU's `desc`.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;

        let mut request = Map::new();
        request.insert("execute".to_owned(), Value::String(command.to_owned()));
        if let Some(arguments) = arguments {
            request.insert("arguments".to_owned(), arguments);
        }
        request.insert("id".to_owned(), json!(id));
        let mut line = Value::Object(request).to_string();
        line.push('\n');

        let waiting_for = format!("the reply to {command}");
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(command, id, &line, &waiting_for))
            .await
            .map_err(|_| self.timed_out(&waiting_for))?
    }

    /// Returns the run state from `query-status`.
    pub async fn query_status(&mut self) -> Result<QmpStatus, QmpError> {
        let value = self.execute("query-status", None).await?;
        let status = value.get("status").and_then(Value::as_str).ok_or_else(|| {
            QmpError::InvalidMessage {
                line: value.to_string(),
                reason: "query-status reply without \"status\"".to_owned(),
            }
        })?;
        Ok(QmpStatus {
            running: value
                .get("running")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            status: status.to_owned(),
        })
    }

    /// Sends `quit`. QEMU replies and then closes the socket as it exits, so
    /// a closed connection also counts as success.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn read_greeting(&mut self) -> Result<QmpVersion, QmpError> {
        let waiting_for = "the greeting";
        let timeout = self.timeout;
        let message = tokio::time::timeout(timeout, self.read_message(waiting_for))
            .await
            .map_err(|_| self.timed_out(waiting_for))??;
        match message {
            QmpMessage::Greeting(version) => Ok(version),
            other => Err(self.unexpected(&other, waiting_for)),
        }
    }

    async fn exchange(
        &mut self,
        command: &str,
        id: u64,
        line: &str,
        waiting_for: &str,
    ) -> Result<Value, QmpError> {
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| self.io_error(source))?;
        loop {
            match self.read_message(waiting_for).await? {
                QmpMessage::Event { name, data } => self.keep_event(name, data),
                QmpMessage::Return {
                    id: reply_id,
                    value,
                } if id_matches(&reply_id, id) => {
                    return Ok(value);
                }
                QmpMessage::Error {
                    id: reply_id,
                    class,
                    desc,
                } if id_matches(&reply_id, id) => {
                    return Err(QmpError::Command {
                        path: self.path.clone(),
                        command: command.to_owned(),
                        class,
                        desc,
                    });
                }
                other => return Err(self.unexpected(&other, waiting_for)),
            }
        }
    }

    async fn read_message(&mut self, waiting_for: &str) -> Result<QmpMessage, QmpError> {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE_LEN).unwrap_or(u64::MAX) + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| self.io_error(source))?;
        if read == 0 || (line.last() != Some(&b'\n') && line.len() <= MAX_LINE_LEN) {
            return Err(QmpError::Closed {
                path: self.path.clone(),
                waiting_for: waiting_for.to_owned(),
            });
        }
        if line.last() != Some(&b'\n') {
            return Err(QmpError::LineTooLong {
                path: self.path.clone(),
            });
        }
        let message = parse_message(&line)?;
        tracing::trace!(socket = %self.path.display(), ?message, "QMP message");
        Ok(message)
    }

    fn keep_event(&mut self, name: String, data: Value) {
        tracing::debug!(socket = %self.path.display(), event = %name, "QMP event");
        if self.events.len() == MAX_KEPT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((name, data));
    }

    fn unexpected(&self, message: &QmpMessage, waiting_for: &str) -> QmpError {
        let got = match message {
            QmpMessage::Greeting(_) => "a greeting",
            QmpMessage::Return { .. } => "a return with another id",
            QmpMessage::Error { .. } => "an error with another id",
            QmpMessage::Event { .. } => "an event",
        };
        QmpError::Unexpected {
            path: self.path.clone(),
            got,
            waiting_for: waiting_for.to_owned(),
        }
    }

    fn io_error(&self, source: io::Error) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn timed_out(&self, waiting_for: &str) -> QmpError {
        QmpError::TimedOut {
            path: self.path.clone(),
            waiting_for: waiting_for.to_owned(),
            timeout: self.timeout,
        }
    }
}

/// QEMU echoes the request id; a reply without one is accepted because
/// requests are sent one at a time.
fn id_matches(reply_id: &Option<Value>, id: u64) -> bool {
    match reply_id {
        None => true,
        Some(value) => value.as_u64() == Some(id),
    }
}

#[cfg(test)]
mod tests;
