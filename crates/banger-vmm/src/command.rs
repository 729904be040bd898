//! The one place where this crate starts child processes.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
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

    #[error("failed to create a pipe to receive the process id of `{command}`")]
    Pipe {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to receive the process id of `{command}` from its parent: {reason}")]
    DaemonPid { command: String, reason: String },
}

/// Output of a child process that exited with status 0.
#[derive(Debug)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Returns the command as a shell-like string for messages.
pub fn describe(command: &Command) -> String {
    describe_std(command.as_std())
}

/// Returns a `std` command as a shell-like string for messages.
pub fn describe_std(std_command: &std::process::Command) -> String {
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

/// Starts `command` as a daemon that no process of this program has to reap,
/// and returns the daemon's pid once it has executed the program.
///
/// The child forks again at once and exits: the grandchild calls `setsid`,
/// so it leads its own session and process group, sets umask 077 and
/// executes the program. The intermediate child writes the grandchild's pid
/// into a pipe before it exits. This function reaps the intermediate child,
/// and the grandchild is re-parented to init (or the nearest subreaper).
///
/// Blocks for as long as fork and exec take, so call it from a blocking
/// thread. The caller sets stdin, stdout and stderr of `command`.
pub fn spawn_detached(mut command: std::process::Command) -> Result<u32, CommandError> {
    let (pid_reader, pid_writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| CommandError::Pipe {
            command: describe_std(&command),
            source: io::Error::from(errno),
        })?;
    let pid_writer_fd = pid_writer.as_raw_fd();

    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called. It calls fork, setsid,
    // umask, write and _exit, which all are, and it allocates nothing:
    // io::Error::last_os_error only stores the errno value. The pipe's write
    // end is open in the child, because fork copied it, and it is closed on
    // exec (O_CLOEXEC) or by _exit.
    unsafe {
        command.pre_exec(move || match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                libc::umask(0o077);
                Ok(())
            }
            grandchild => {
                let bytes = grandchild.to_le_bytes();
                let written = libc::write(pid_writer_fd, bytes.as_ptr().cast(), bytes.len());
                let status = if written == bytes.len() as isize {
                    0
                } else {
                    1
                };
                libc::_exit(status)
            }
        });
    }

    // std's spawn returns once the grandchild executed the program or
    // reported why it could not: its error pipe stays open until the exec.
    let mut intermediate = command.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            CommandError::NotFound {
                program: command.get_program().to_string_lossy().into_owned(),
                source,
            }
        } else {
            CommandError::Spawn {
                command: describe_std(&command),
                source,
            }
        }
    })?;
    drop(pid_writer);
    let status = intermediate.wait().map_err(|source| CommandError::Wait {
        command: describe_std(&command),
        source,
    })?;
    if !status.success() {
        return Err(CommandError::DaemonPid {
            command: describe_std(&command),
            reason: format!("the intermediate child exited with {status}"),
        });
    }

    let mut bytes = Vec::with_capacity(4);
    std::fs::File::from(pid_reader)
        .read_to_end(&mut bytes)
        .map_err(|error| CommandError::DaemonPid {
            command: describe_std(&command),
            reason: format!("reading the pipe failed: {error}"),
        })?;
    let pid = <[u8; 4]>::try_from(bytes.as_slice())
        .map(i32::from_le_bytes)
        .ok()
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
        .ok_or_else(|| CommandError::DaemonPid {
            command: describe_std(&command),
            reason: format!(
                "expected a 4-byte process id, received {} bytes",
                bytes.len()
            ),
        })?;
    Ok(pid)
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

    /// Returns fields 4 (ppid) and 6 (session id) of `/proc/<pid>/stat`.
    fn parent_and_session(pid: u32) -> (u32, u32) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_comm = &text[text.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        (fields[1].parse().unwrap(), fields[3].parse().unwrap())
    }

    #[test]
    fn spawn_detached_starts_session_leader() {
        let mut command = std::process::Command::new("sleep");
        command.arg("30").stdin(Stdio::null());
        let pid = spawn_detached(command).unwrap();

        let stat = crate::process::read_stat(pid).unwrap().unwrap();
        assert_eq!(stat.comm, "sleep");
        let (parent, session) = parent_and_session(pid);
        assert_ne!(parent, std::process::id(), "the daemon is not our child");
        assert_eq!(session, pid, "the daemon leads its own session");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("Umask:\t0077"), "{status}");

        let signal = nix::sys::signal::Signal::SIGKILL;
        assert!(crate::process::send_signal(pid, stat.start_time, signal).unwrap());
    }

    #[test]
    fn spawn_detached_missing_program() {
        let command = std::process::Command::new("/nonexistent/banger-test-program");
        let error = spawn_detached(command).unwrap_err();
        assert!(matches!(error, CommandError::NotFound { .. }), "{error:?}");
    }

    #[test]
    fn quote_output_keeps_tail() {
        assert_eq!(quote_output(b"  \n"), "(no output)");
        let long = vec![b'x'; MAX_QUOTED_STDERR + 10];
        assert_eq!(quote_output(&long).len(), MAX_QUOTED_STDERR);
    }
}
