//! The one place where this crate starts child processes (`nft`,
//! `resolvectl`). Programs are started directly with an argument vector,
//! never through a shell.
//!
//! Code that runs commands takes a [`CommandRunner`], so tests can record
//! the commands instead of running them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Time a command gets before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum number of stderr bytes quoted in an error message.
const MAX_QUOTED_STDERR: usize = 4096;

/// Failure to run a child process; every variant names the command.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error("program {program} not found; install it or add its directory to PATH")]
    NotFound {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("starting `{command}` failed")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the standard input of `{command}` failed")]
    WriteStdin {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for `{command}` failed")]
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

/// A program, its arguments and optional standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Bytes written to the child's standard input; `/dev/null` when `None`.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl CommandSpec {
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Returns the command line as text for messages, quoting arguments
    /// that contain whitespace or quotes.
    pub fn describe(&self) -> String {
        let mut text = self.program.clone();
        for arg in &self.args {
            text.push(' ');
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
                text.push_str(&format!("{arg:?}"));
            } else {
                text.push_str(arg);
            }
        }
        text
    }
}

/// Output of a command that exited with status 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Future returned by [`CommandRunner::run`].
pub type RunFuture<'a> =
    Pin<Box<dyn Future<Output = Result<CommandOutput, CommandError>> + Send + 'a>>;

/// Runs commands to completion. A non-zero exit status is an error.
pub trait CommandRunner: Send + Sync {
    fn run<'a>(&'a self, spec: &'a CommandSpec) -> RunFuture<'a>;
}

/// Runs commands as child processes of this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run<'a>(&'a self, spec: &'a CommandSpec) -> RunFuture<'a> {
        Box::pin(run_child(spec))
    }
}

async fn run_child(spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        // Messages quoted in errors stay in English whatever the locale.
        .env("LC_ALL", "C")
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            CommandError::NotFound {
                program: spec.program.clone(),
                source,
            }
        } else {
            CommandError::Spawn {
                command: spec.describe(),
                source,
            }
        }
    })?;

    // Standard input is written while the output is read, so a child that
    // fills its output pipe before reading all input cannot block.
    let stdin = child.stdin.take();
    let input = spec.stdin.clone();
    let write_input = async move {
        if let (Some(mut pipe), Some(bytes)) = (stdin, input) {
            pipe.write_all(&bytes).await?;
            pipe.shutdown().await?;
        }
        Ok::<(), io::Error>(())
    };
    // Dropping the child on timeout kills it (`kill_on_drop`).
    let finished = tokio::time::timeout(spec.timeout, async {
        tokio::join!(write_input, child.wait_with_output())
    })
    .await;
    let (written, output) = finished.map_err(|_| CommandError::TimedOut {
        command: spec.describe(),
        timeout: spec.timeout,
    })?;
    let output = output.map_err(|source| CommandError::Wait {
        command: spec.describe(),
        source,
    })?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            command: spec.describe(),
            status: output.status,
            stderr: quote_output(&output.stderr),
        });
    }
    // A child that exits 0 without reading all of its input succeeded, so
    // a broken pipe is no error here.
    if let Err(source) = written
        && source.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(CommandError::WriteStdin {
            command: spec.describe(),
            source,
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
    async fn run_returns_stdout_and_passes_stdin() {
        let spec = CommandSpec::new("cat", Vec::<String>::new()).with_stdin("table inet x {}\n");
        let output = SystemRunner.run(&spec).await.unwrap();
        assert_eq!(output.stdout, b"table inet x {}\n");
    }

    #[tokio::test]
    async fn run_reports_status_and_stderr() {
        let spec = CommandSpec::new("sh", ["-c", "echo bad >&2; exit 3"]);
        let error = SystemRunner.run(&spec).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, CommandError::Failed { .. }), "{message}");
        assert!(
            message.contains("`sh -c \"echo bad >&2; exit 3\"`"),
            "{message}"
        );
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.ends_with(": bad"), "{message}");
    }

    #[tokio::test]
    async fn run_names_missing_program() {
        let spec = CommandSpec::new("/nonexistent/banger-net-test", ["x"]);
        let error = SystemRunner.run(&spec).await.unwrap_err();
        assert!(matches!(error, CommandError::NotFound { .. }));
        assert!(error.to_string().contains("/nonexistent/banger-net-test"));
    }

    #[tokio::test]
    async fn run_kills_on_timeout() {
        let mut spec = CommandSpec::new("sleep", ["30"]);
        spec.timeout = Duration::from_millis(200);
        let error = SystemRunner.run(&spec).await.unwrap_err();
        assert!(matches!(error, CommandError::TimedOut { .. }), "{error}");
    }

    #[test]
    fn describe_quotes_spaces() {
        let spec = CommandSpec::new("resolvectl", ["domain", "banger0", "~vm"]);
        assert_eq!(spec.describe(), "resolvectl domain banger0 ~vm");
        let spec = CommandSpec::new("nft", ["-f", "a b", ""]);
        assert_eq!(spec.describe(), "nft -f \"a b\" \"\"");
    }
}

/// A runner for unit tests: it records every command and returns a
/// closure's result instead of starting a process.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;

    use super::*;

    type Responder = dyn Fn(&CommandSpec) -> Result<CommandOutput, CommandError> + Send + Sync;

    pub(crate) struct FakeRunner {
        pub(crate) calls: Mutex<Vec<CommandSpec>>,
        respond: Box<Responder>,
    }

    impl FakeRunner {
        pub(crate) fn new(
            respond: impl Fn(&CommandSpec) -> Result<CommandOutput, CommandError>
            + Send
            + Sync
            + 'static,
        ) -> Self {
            Self {
                calls: Mutex::new(Vec::new()),
                respond: Box::new(respond),
            }
        }

        /// Returns a runner whose commands all succeed with empty output.
        pub(crate) fn succeeding() -> Self {
            Self::new(|_| Ok(CommandOutput::default()))
        }

        pub(crate) fn calls(&self) -> Vec<CommandSpec> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl CommandRunner for FakeRunner {
        fn run<'a>(&'a self, spec: &'a CommandSpec) -> RunFuture<'a> {
            self.calls.lock().unwrap().push(spec.clone());
            let result = (self.respond)(spec);
            Box::pin(async move { result })
        }
    }

    /// Builds the `Failed` error of a command that exited with `code`.
    pub(crate) fn failed(spec: &CommandSpec, code: i32, stderr: &str) -> CommandError {
        use std::os::unix::process::ExitStatusExt;
        CommandError::Failed {
            command: spec.describe(),
            status: ExitStatus::from_raw(code << 8),
            stderr: stderr.to_owned(),
        }
    }
}
