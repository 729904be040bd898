//! The one place where this crate starts child processes.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use thiserror::Error;
use tokio::process::{Child, Command};

/// Maximum number of stderr bytes quoted in an error message.
const MAX_QUOTED_STDERR: usize = 4096;

/// Failure to run a child process; every variant names the command.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error("program {program} not found")]
    NotFound {
        program: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("`{command}` failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("`{command}` timed out after {} s and was killed", timeout.as_secs_f64())]
    TimedOut { command: String, timeout: Duration },
}

/// Output of a child process that exited with status 0.
#[derive(Debug)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Returns the command as a shell-like string for messages.
pub fn describe(command: &Command) -> String {
    let std_command = command.as_std();
    let mut text = std_command.get_program().to_string_lossy().into_owned();
    for arg in std_command.get_args() {
        text.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
            text.push_str(&format!("{arg:?}"));
        } else {
            text.push_str(&arg);
        }
    }
    text
}

/// Starts `command` with stdin from `/dev/null` and stdout and stderr piped.
/// The child is killed when the returned handle is dropped.
pub fn spawn(command: &mut Command) -> Result<Child, CommandError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            CommandError::NotFound {
                program: command
                    .as_std()
                    .get_program()
                    .to_string_lossy()
                    .into_owned(),
                source,
            }
        } else {
            CommandError::Spawn {
                command: describe(command),
                source,
            }
        }
    })
}

/// Runs `command` to completion, capturing stdout and stderr, and fails unless
/// it exits with status 0 within `timeout`. On timeout the child is killed.
pub async fn run(mut command: Command, timeout: Duration) -> Result<CommandOutput, CommandError> {
    let child = spawn(&mut command)?;
    // Dropping the wait future on timeout drops the child, which kills it.
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(result) => result.map_err(|source| CommandError::Wait {
            command: describe(&command),
            source,
        })?,
        Err(_) => {
            return Err(CommandError::TimedOut {
                command: describe(&command),
                timeout,
            });
        }
    };

    if !output.status.success() {
        return Err(CommandError::Failed {
            command: describe(&command),
            status: output.status,
            stderr: quote_output(&output.stderr),
        });
    }
    Ok(CommandOutput {
        stdout: output.stdout,
        stderr: output.stderr,
    })
}

/// Returns the trimmed tail of a process's output as text, at most
/// [`MAX_QUOTED_STDERR`] bytes, or "(no output)".
pub fn quote_output(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_QUOTED_STDERR);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let text = text.trim();
    if text.is_empty() {
        "(no output)".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_reports_failure_with_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo boom >&2; exit 3"]);
        let error = run(command, Duration::from_secs(10)).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, CommandError::Failed { .. }), "{error:?}");
        assert!(message.contains("sh -c"), "{message}");
        assert!(message.contains("boom"), "{message}");
        assert!(message.contains("exit status: 3"), "{message}");
    }

    #[tokio::test]
    async fn run_captures_stdout() {
        let mut command = Command::new("sh");
        command.args(["-c", "printf hello"]);
        let output = run(command, Duration::from_secs(10)).await.unwrap();
        assert_eq!(output.stdout, b"hello");
        assert!(output.stderr.is_empty());
    }

    #[tokio::test]
    async fn run_kills_on_timeout() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let error = run(command, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(error, CommandError::TimedOut { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn run_missing_program() {
        let command = Command::new("/nonexistent/banger-test-program");
        let error = run(command, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(error, CommandError::NotFound { .. }), "{error:?}");
    }

    #[test]
    fn quote_output_keeps_tail() {
        assert_eq!(quote_output(b"  \n"), "(no output)");
        let long = vec![b'x'; MAX_QUOTED_STDERR + 10];
        assert_eq!(quote_output(&long).len(), MAX_QUOTED_STDERR);
    }
}
