use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use crate::output::{STDERR_CAPTURE_BYTES, TailBuffer, quote_output};
use crate::path::{debian_package_for, find_in_path};
use crate::{CommandError, CommandOutput, CommandSpec};

/// Time the runners keep reading stdout and stderr after the child exited.
///
/// A helper that the program leaves running in the background inherits the
/// pipes and can keep them open for as long as it runs. The runners return
/// once this grace has passed and drop what the helper writes later.
pub const PIPE_GRACE: Duration = Duration::from_secs(2);

impl CommandSpec {
    /// Runs the program to completion from synchronous code and returns its
    /// output when the exit status counts as success.
    ///
    /// Drives [`CommandSpec::run_async`] on a private current-thread tokio
    /// runtime, so the two behave the same. Called on a thread that is
    /// inside a tokio runtime, it runs on a scoped thread of its own,
    /// because such a thread cannot block on a second runtime.
    pub fn run(&self) -> Result<CommandOutput, CommandError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.run_on_own_runtime();
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.run_on_own_runtime())
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs the program to completion and returns its output when the exit
    /// status counts as success.
    ///
    /// The child runs in its own process group, so that a timeout kills the
    /// helpers it started too, and this process's terminal signals do not
    /// reach it. Standard input is [`CommandSpec::stdin`] or `/dev/null`.
    /// Reading stdout and stderr stops [`PIPE_GRACE`] after the child exits,
    /// even when a background helper still keeps the pipes open. Only the last
    /// [`crate::STDERR_CAPTURE_BYTES`] bytes of stderr are kept. Dropping the
    /// future kills the child but not the rest of its process group.
    pub async fn run_async(&self) -> Result<CommandOutput, CommandError> {
        let command_line = self.describe();
        let mut command = self.command()?;
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| self.spawn_error(source))?;

        let input = write_input(child.stdin.take(), self.stdin.as_deref());
        let mut stdout = Vec::new();
        let mut stderr = TailBuffer::new(STDERR_CAPTURE_BYTES);
        let output = read_output(
            child.stdout.take(),
            child.stderr.take(),
            &mut stdout,
            &mut stderr,
        );
        let supervised = supervise(&mut child, self.timeout, input, output, &command_line).await;
        let stderr = stderr.into_vec();

        let status = match supervised.exit {
            Exit::Exited(status) => status,
            Exit::TimedOut(timeout) => {
                return Err(CommandError::TimedOut {
                    command: command_line,
                    timeout,
                    stderr_tail: quote_output(&stderr),
                });
            }
            Exit::WaitFailed(source) => {
                return Err(CommandError::Wait {
                    command: command_line,
                    source,
                });
            }
        };
        if !self.accepts(status) {
            return Err(CommandError::Failed {
                command: command_line,
                status,
                stderr_tail: quote_output(&stderr),
            });
        }
        if let Some(Err(source)) = supervised.output {
            return Err(CommandError::ReadOutput {
                command: command_line,
                source,
            });
        }
        // A child that succeeds without reading all of its input is fine,
        // so a broken pipe is no error here.
        if let Some(Err(source)) = supervised.input
            && source.kind() != io::ErrorKind::BrokenPipe
        {
            return Err(CommandError::WriteStdin {
                command: command_line,
                source,
            });
        }
        Ok(CommandOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Starts the program with stdin from `/dev/null` and stdout and stderr
    /// piped, and returns the child at once. The caller reads the pipes and
    /// waits for the child, which stays in this process's process group and
    /// is killed when the handle is dropped. `stdin`, `timeout` and
    /// `accepted_exit_codes` of the spec do not apply here.
    ///
    /// Must be called inside a tokio runtime.
    pub fn spawn(&self) -> Result<Child, CommandError> {
        let mut command = self.command()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().map_err(|source| self.spawn_error(source))
    }

    fn run_on_own_runtime(&self) -> Result<CommandOutput, CommandError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| CommandError::Runtime {
                command: self.describe(),
                source,
            })?;
        runtime.block_on(self.run_async())
    }

    /// Builds the command with the program resolved, and everything but the
    /// standard streams set.
    fn command(&self) -> Result<Command, CommandError> {
        let mut command = Command::new(self.resolve_program()?);
        // argv[0] stays the name the caller gave, as with a `PATH` search
        // by execvp.
        command
            .arg0(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if let Some(mask) = self.umask {
            // SAFETY: the closure runs in the forked child before exec, where
            // only async-signal-safe functions may be called. It calls only
            // umask(2), which is async-signal-safe and cannot fail, and it
            // allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        Ok(command)
    }

    /// Returns the path to execute: `program` itself when it contains `/`,
    /// else the first executable file of that name on the search path.
    fn resolve_program(&self) -> Result<PathBuf, CommandError> {
        if self.program.as_bytes().contains(&b'/') {
            return Ok(PathBuf::from(&self.program));
        }
        let path_var = match &self.search_path {
            Some(path_var) => Some(path_var.clone()),
            None => std::env::var_os("PATH"),
        };
        find_in_path(&self.program, path_var.as_deref()).ok_or_else(|| {
            let program = self.program.to_string_lossy().into_owned();
            CommandError::NotFound {
                package: debian_package_for(&program),
                program,
                source: None,
            }
        })
    }

    fn spawn_error(&self, source: io::Error) -> CommandError {
        if source.kind() != io::ErrorKind::NotFound {
            return CommandError::Spawn {
                command: self.describe(),
                source,
            };
        }
        // A missing working directory fails the spawn with ENOENT too.
        if let Some(dir) = &self.current_dir
            && !dir.is_dir()
        {
            return CommandError::MissingDirectory {
                command: self.describe(),
                dir: dir.clone(),
            };
        }
        let program = self.program.to_string_lossy().into_owned();
        let package = if program.contains('/') {
            None
        } else {
            debian_package_for(&program)
        };
        CommandError::NotFound {
            program,
            package,
            source: Some(source),
        }
    }
}

/// Result of waiting for the child.
enum Exit {
    Exited(ExitStatus),
    /// The timeout expired and the child's process group was killed.
    TimedOut(Duration),
    WaitFailed(io::Error),
}

/// Outcome of [`supervise`]. `input` and `output` are `None` when the child
/// exited before the write finished, or before the pipes closed within
/// [`PIPE_GRACE`].
struct Supervised {
    exit: Exit,
    input: Option<io::Result<()>>,
    output: Option<io::Result<()>>,
}

/// Waits for the child while writing its input and reading its output, and
/// kills its process group when `timeout` expires.
async fn supervise(
    child: &mut Child,
    timeout: Option<Duration>,
    input: impl Future<Output = io::Result<()>>,
    output: impl Future<Output = io::Result<()>>,
    command_line: &str,
) -> Supervised {
    tokio::pin!(input, output);
    let deadline = timeout.map(|timeout| (Instant::now() + timeout, timeout));
    let mut input_result = None;
    let mut output_result = None;
    let exit = loop {
        tokio::select! {
            waited = child.wait() => break match waited {
                Ok(status) => Exit::Exited(status),
                Err(source) => Exit::WaitFailed(source),
            },
            result = &mut input, if input_result.is_none() => input_result = Some(result),
            result = &mut output, if output_result.is_none() => output_result = Some(result),
            timeout = expire(deadline) => break Exit::TimedOut(timeout),
        }
    };
    if let Exit::TimedOut(_) = exit {
        kill_process_group(child);
        // The kill leaves nothing to wait for but a zombie, and the timeout
        // is the error to report even when reaping fails.
        let _ = child.wait().await;
    }

    if output_result.is_none() {
        match tokio::time::timeout(PIPE_GRACE, &mut output).await {
            Ok(result) => output_result = Some(result),
            Err(_) => tracing::warn!(
                command = command_line,
                grace_secs = PIPE_GRACE.as_secs_f64(),
                "stopped reading stdout and stderr of the exited command after the grace, because a process it started still keeps them open"
            ),
        }
    }
    Supervised {
        exit,
        input: input_result,
        output: output_result,
    }
}

/// Completes with the timeout at its deadline, or never when there is none.
async fn expire(deadline: Option<(Instant, Duration)>) -> Duration {
    match deadline {
        Some((deadline, timeout)) => {
            tokio::time::sleep_until(deadline).await;
            timeout
        }
        None => std::future::pending().await,
    }
}

fn kill_process_group(child: &mut Child) {
    // `id` is `None` once the child has been reaped, and then there is no
    // group left to address by its pid.
    let Some(pid) = child.id() else {
        return;
    };
    // The child was started with `process_group(0)`, so its pid is the id
    // of the group that contains it and every helper it started. The child
    // is not reaped yet, so that id cannot belong to another group.
    let Ok(pid) = i32::try_from(pid) else {
        // Linux pids fit in i32, so this branch is not taken in practice.
        // Killing the child alone still ends the program itself.
        let _ = child.start_kill();
        return;
    };
    if killpg(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
        let _ = child.start_kill();
    }
}

/// Writes `bytes` to the child's stdin and closes it.
async fn write_input(pipe: Option<ChildStdin>, bytes: Option<&[u8]>) -> io::Result<()> {
    if let (Some(mut pipe), Some(bytes)) = (pipe, bytes) {
        pipe.write_all(bytes).await?;
        pipe.shutdown().await?;
    }
    Ok(())
}

/// Reads both pipes to their end, stdout whole and stderr into its tail
/// buffer. What was read stays in the buffers when the future is dropped.
async fn read_output(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    stdout_buffer: &mut Vec<u8>,
    stderr_buffer: &mut TailBuffer,
) -> io::Result<()> {
    let read_stdout = async {
        match stdout {
            Some(pipe) => read_chunks(pipe, |chunk| stdout_buffer.extend_from_slice(chunk)).await,
            None => Ok(()),
        }
    };
    let read_stderr = async {
        match stderr {
            Some(pipe) => read_chunks(pipe, |chunk| stderr_buffer.extend(chunk)).await,
            None => Ok(()),
        }
    };
    // Both run to their end even when one fails, so that the child never
    // blocks on a full pipe that is not read.
    let (stdout_result, stderr_result) = tokio::join!(read_stdout, read_stderr);
    stdout_result.and(stderr_result)
}

async fn read_chunks(
    mut pipe: impl AsyncRead + Unpin,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(count) => sink(&chunk[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
}
