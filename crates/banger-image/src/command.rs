//! Runs external programs: resolves them on `PATH`, checks the exit status,
//! captures output on reader threads and enforces an optional timeout.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Bytes of stderr kept for error messages. Earlier output is dropped.
const STDERR_TAIL_BYTES: usize = 64 * 1024;
/// Lines of stderr quoted in an error message.
const STDERR_TAIL_LINES: usize = 20;
/// Interval between exit checks while a timeout is armed.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Errors from running an external program.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{program}` not found on PATH{}", package_hint(.package))]
    NotFound {
        program: String,
        /// Debian package that ships the program, when known.
        package: Option<&'static str>,
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
    #[error("`{command}` failed ({}){}", describe_status(.status), format_tail(.stderr_tail))]
    Failed {
        command: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("`{command}` timed out after {} s and was killed{}", .timeout.as_secs_f64(), format_tail(.stderr_tail))]
    TimedOut {
        command: String,
        timeout: Duration,
        stderr_tail: String,
    },
}

fn package_hint(package: &Option<&'static str>) -> String {
    match package {
        Some(package) => format!("; install it with `apt-get install {package}`"),
        None => String::new(),
    }
}

fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_string(),
    }
}

fn format_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr:\n{tail}")
    }
}

/// Returns the Debian package that ships `program`, for the not-found hint.
pub fn debian_package_for(program: &str) -> Option<&'static str> {
    match program {
        "apt-get" => Some("apt"),
        "mmdebstrap" => Some("mmdebstrap"),
        "mkfs.ext4" | "debugfs" | "mke2fs" | "e2fsck" => Some("e2fsprogs"),
        "cpio" => Some("cpio"),
        _ => None,
    }
}

/// Finds an executable named `program` in the directories of `path_var`
/// (a `PATH`-style list). A `program` containing `/` is checked as given.
pub fn find_in_path(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let candidate = PathBuf::from(program);
        return is_executable(&candidate).then_some(candidate);
    }
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) => meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

/// Output of a command that exited with status 0.
#[derive(Debug)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    /// The last 64 KiB of stderr.
    pub stderr: Vec<u8>,
}

/// A program invocation: builder for [`Cmd::run`].
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<OsString>,
    current_dir: Option<PathBuf>,
    timeout: Option<Duration>,
    search_path: Option<OsString>,
}

impl Cmd {
    pub fn new(program: &str) -> Self {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            current_dir: None,
            timeout: None,
            search_path: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Kills the program (and its process group) when it runs longer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Looks the program up in this `PATH`-style list instead of `$PATH`.
    pub fn search_path(mut self, path_var: impl Into<OsString>) -> Self {
        self.search_path = Some(path_var.into());
        self
    }

    /// Renders the command line for messages, quoting arguments that need it.
    pub fn display(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            let arg = arg.to_string_lossy();
            line.push(' ');
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                line.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
            } else {
                line.push_str(&arg);
            }
        }
        line
    }

    /// Runs the program to completion and returns its output when it exits
    /// with status 0. Stdin is `/dev/null`. The child runs in its own process
    /// group so that a timeout kills its helpers too.
    pub fn run(&self) -> Result<CommandOutput, CommandError> {
        let path_var = match &self.search_path {
            Some(path_var) => Some(path_var.clone()),
            None => std::env::var_os("PATH"),
        };
        let program_path = find_in_path(&self.program, path_var.as_deref()).ok_or_else(|| {
            CommandError::NotFound {
                program: self.program.clone(),
                package: debian_package_for(&self.program),
            }
        })?;

        let mut command = std::process::Command::new(&program_path);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|source| CommandError::Spawn {
            command: self.display(),
            source,
        })?;

        let stdout_reader = child.stdout.take().map(|pipe| {
            thread::spawn(move || {
                let mut buffer = Vec::new();
                let mut pipe = pipe;
                pipe.read_to_end(&mut buffer).map(|_| buffer)
            })
        });
        let stderr_reader = child
            .stderr
            .take()
            .map(|pipe| thread::spawn(move || read_tail(pipe, STDERR_TAIL_BYTES)));

        let waited = self.wait(&mut child);
        // NOTE: the readers finish when every holder of the pipes exits. A
        // helper that the program leaves running in the background keeps
        // this call waiting after the program itself has exited.
        let stdout = join_reader(stdout_reader);
        let stderr = join_reader(stderr_reader);

        let status = match waited {
            Ok(Some(status)) => status,
            Ok(None) => {
                return Err(CommandError::TimedOut {
                    command: self.display(),
                    timeout: self.timeout.unwrap_or_default(),
                    stderr_tail: stderr_tail_text(&stderr),
                });
            }
            Err(source) => {
                return Err(CommandError::Wait {
                    command: self.display(),
                    source,
                });
            }
        };
        if !status.success() {
            return Err(CommandError::Failed {
                command: self.display(),
                status,
                stderr_tail: stderr_tail_text(&stderr),
            });
        }
        Ok(CommandOutput { stdout, stderr })
    }

    /// Waits for the child; returns `Ok(None)` when the timeout expired and
    /// the child's process group was killed.
    fn wait(&self, child: &mut Child) -> io::Result<Option<ExitStatus>> {
        let Some(timeout) = self.timeout else {
            return child.wait().map(Some);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                kill_process_group(child);
                child.wait()?;
                return Ok(None);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

fn kill_process_group(child: &mut Child) {
    // The child was spawned with `process_group(0)`, so its pid is the id of
    // the group that contains it and every helper it started.
    let Ok(pid) = i32::try_from(child.id()) else {
        // Linux pids fit in i32, so this branch is not taken in practice.
        // Killing the child alone still ends the program itself.
        let _ = child.kill();
        return;
    };
    if killpg(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
        let _ = child.kill();
    }
}

/// Reads `pipe` to its end, keeping only the last `max_bytes` bytes.
fn read_tail(mut pipe: impl Read, max_bytes: usize) -> io::Result<Vec<u8>> {
    let mut tail = VecDeque::with_capacity(max_bytes.min(8192));
    let mut chunk = [0u8; 8192];
    loop {
        let count = match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(count) => count,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        tail.extend(&chunk[..count]);
        if tail.len() > max_bytes {
            let excess = tail.len() - max_bytes;
            tail.drain(..excess);
        }
    }
    Ok(tail.into_iter().collect())
}

fn join_reader(reader: Option<JoinHandle<io::Result<Vec<u8>>>>) -> Vec<u8> {
    // A read error on a pipe only loses diagnostic output, so it yields an
    // empty buffer instead of hiding the command's own result.
    reader
        .and_then(|handle| handle.join().ok())
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Returns the last lines of `stderr` as text for an error message.
pub fn stderr_tail_text(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn find_in_path_skips_non_executables() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        fs::write(first.path().join("tool"), "not executable").unwrap();
        let expected = write_script(second.path(), "tool", "exit 0");
        let path_var = std::env::join_paths([first.path(), second.path()]).unwrap();

        assert_eq!(find_in_path("tool", Some(&path_var)), Some(expected));
        assert_eq!(find_in_path("missing", Some(&path_var)), None);
        assert_eq!(find_in_path("tool", None), None);
    }

    #[test]
    fn not_found_names_debian_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = Cmd::new("mkfs.ext4")
            .search_path(empty.path())
            .run()
            .unwrap_err();

        assert!(matches!(
            err,
            CommandError::NotFound {
                package: Some("e2fsprogs"),
                ..
            }
        ));
        assert!(err.to_string().contains("apt-get install e2fsprogs"));
        assert_eq!(debian_package_for("apt-get"), Some("apt"));
        assert_eq!(debian_package_for("mmdebstrap"), Some("mmdebstrap"));
        assert_eq!(debian_package_for("debugfs"), Some("e2fsprogs"));
    }

    #[test]
    fn failure_reports_command_and_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        write_script(
            dir.path(),
            "failing",
            "i=0; while [ $i -lt 50 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 3",
        );
        let err = Cmd::new("failing")
            .arg("some arg")
            .search_path(dir.path())
            .run()
            .unwrap_err();

        let message = err.to_string();
        assert!(message.contains("`failing 'some arg'` failed (exit code 3)"));
        assert!(message.contains("line 49"));
        assert!(!message.contains("line 29\n"), "only the tail is quoted");
    }

    #[test]
    fn large_output_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        // 4 MiB on each stream, well above the pipe buffer size.
        write_script(
            dir.path(),
            "noisy",
            "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2",
        );
        let output = Cmd::new("noisy")
            .search_path(dir.path())
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap();

        assert_eq!(output.stdout.len(), 4 * 1024 * 1024);
        assert_eq!(output.stderr.len(), STDERR_TAIL_BYTES);
    }

    #[test]
    fn timeout_kills_process_group() {
        let dir = tempfile::tempdir().unwrap();
        // The grandchild keeps the pipes open; killing only the child would
        // leave the reader threads waiting for it.
        write_script(dir.path(), "slow", "echo started >&2; sleep 30 & sleep 30");
        let started = Instant::now();
        let err = Cmd::new("slow")
            .search_path(dir.path())
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();

        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("started"));
    }

    #[test]
    fn current_dir_applies() {
        let dir = tempfile::tempdir().unwrap();
        let output = Cmd::new("pwd").current_dir(dir.path()).run().unwrap();
        let printed = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            Path::new(printed.trim()).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }
}
