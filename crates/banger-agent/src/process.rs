//! Runs helper programs (such as `systemctl`) to completion.
//!
//! Commands requested by the host are not run here: they stream their output
//! and are handled by `serve::exec`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::serve::reaper;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("starting `{command}` failed")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for `{command}` failed")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    TimedOut { command: String, timeout: Duration },
    #[error("`{command}` failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs a command with standard input from `/dev/null`, waits up to
/// `timeout` for it and returns its standard output. A non-zero exit status
/// is an error that carries the command line and its standard error.
pub fn run_checked(command: &mut Command, timeout: Duration) -> Result<Vec<u8>, ProcessError> {
    let display = describe(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = reaper::spawn_tracked(command).map_err(|source| ProcessError::Spawn {
        command: display.clone(),
        source,
    })?;
    let pid = child.id();

    // Both pipes are drained on their own threads so a child that fills one
    // of them cannot block while this thread waits for it.
    let stdout = child.stdout.take().map(read_to_end_in_thread);
    let stderr = child.stderr.take().map(read_to_end_in_thread);

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(ProcessError::TimedOut {
                    command: display.clone(),
                    timeout,
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                break Err(ProcessError::Wait {
                    command: display.clone(),
                    source,
                });
            }
        }
    };
    reaper::untrack(pid);
    let status = status?;

    let stdout = stdout.map(join_output).unwrap_or_default();
    let stderr = stderr.map(join_output).unwrap_or_default();
    if !status.success() {
        return Err(ProcessError::Failed {
            command: display,
            status,
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        });
    }
    Ok(stdout)
}

fn read_to_end_in_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the capture; what was read so far is kept.
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn join_output(handle: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// Returns the command line as `program arg1 arg2`.
fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn run_checked_returns_stdout() {
        let stdout = run_checked(Command::new("sh").args(["-c", "echo hi"]), TIMEOUT).unwrap();
        assert_eq!(stdout, b"hi\n");
    }

    #[test]
    fn run_checked_reports_status_and_stderr() {
        let error = run_checked(
            Command::new("sh").args(["-c", "echo bad >&2; exit 3"]),
            TIMEOUT,
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("`sh -c echo bad >&2; exit 3`"),
            "{message}"
        );
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.ends_with(": bad"), "{message}");
    }

    #[test]
    fn run_checked_names_missing_program() {
        let error =
            run_checked(&mut Command::new("/nonexistent/banger-test"), TIMEOUT).unwrap_err();
        assert!(
            matches!(error, ProcessError::Spawn { ref command, .. } if command == "/nonexistent/banger-test")
        );
    }

    #[test]
    fn run_checked_kills_on_timeout() {
        let started = Instant::now();
        let error =
            run_checked(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error, ProcessError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
