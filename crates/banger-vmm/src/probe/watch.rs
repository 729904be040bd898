//! Watching a probe VM's console and stderr for the outcome of its boot.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::time::Instant;

/// Prefix of the line the guest init prints in probe mode, followed by the
/// kernel release.
pub const PROBE_LINE_PREFIX: &str = "banger-probe: ok ";

/// Maximum length of one console or stderr line; longer lines are split.
const MAX_LINE_LEN: u64 = 4096;

/// Number of console lines kept for a failure report.
const KEPT_CONSOLE_LINES: usize = 5;

/// Number of stderr lines kept for a failure report.
const KEPT_STDERR_LINES: usize = 10;

/// Time allowed after QEMU exits for the rest of its output to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// QEMU 7.2 prints one of these on stderr when KVM cannot run the guest;
/// after "KVM internal error" QEMU pauses the VM instead of exiting.
const KVM_FAILURE_MARKERS: [&str; 3] = [
    "KVM internal error",
    "emulation failure",
    "failed to set MSR",
];

/// Result of watching one probe boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// The guest printed the probe line with this kernel release.
    Passed { release: String },
    /// The guest did not reach user space, for the reason given.
    Failed { reason: String },
}

/// Returns the kernel release from a console line that contains the probe line.
pub fn parse_probe_line(line: &str) -> Option<&str> {
    let start = line.find(PROBE_LINE_PREFIX)? + PROBE_LINE_PREFIX.len();
    line[start..].split_whitespace().next()
}

/// Reads QEMU's console (`stdout`) and `stderr` until the probe line appears,
/// QEMU reports a KVM failure, QEMU exits (`exit` completes) or `timeout`
/// passes.
pub async fn watch_boot<O, E, X>(stdout: O, stderr: E, exit: X, timeout: Duration) -> BootOutcome
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
    X: Future<Output = io::Result<ExitStatus>>,
{
    let mut stdout = BufReader::new(stdout);
    let mut stderr = BufReader::new(stderr);
    let mut stdout_open = true;
    let mut stderr_open = true;
    let mut stdout_line = Vec::new();
    let mut stderr_line = Vec::new();
    let mut console_tail = Tail::new(KEPT_CONSOLE_LINES);
    let mut stderr_tail = Tail::new(KEPT_STDERR_LINES);

    let mut deadline = Instant::now() + timeout;
    let mut exit_status: Option<io::Result<ExitStatus>> = None;
    tokio::pin!(exit);

    loop {
        if exit_status.is_some() && !stdout_open && !stderr_open {
            break;
        }
        tokio::select! {
            read = read_line(&mut stdout, &mut stdout_line), if stdout_open => match read {
                Some(line) => {
                    if let Some(release) = parse_probe_line(&line) {
                        return BootOutcome::Passed { release: release.to_owned() };
                    }
                    console_tail.push(line);
                }
                None => stdout_open = false,
            },
            read = read_line(&mut stderr, &mut stderr_line), if stderr_open => match read {
                Some(line) => {
                    let is_kvm_failure = KVM_FAILURE_MARKERS.iter().any(|marker| line.contains(marker));
                    if is_kvm_failure {
                        return BootOutcome::Failed {
                            reason: format!("QEMU reported a KVM failure: {}", line.trim()),
                        };
                    }
                    stderr_tail.push(line);
                }
                None => stderr_open = false,
            },
            status = &mut exit, if exit_status.is_none() => {
                exit_status = Some(status);
                // The probe line may still sit in the pipe; read on briefly.
                deadline = deadline.min(Instant::now() + DRAIN_TIMEOUT);
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }

    let reason = match exit_status {
        None => format!(
            "the guest did not print the probe line within {} s",
            timeout.as_secs_f64()
        ),
        Some(Ok(status)) => {
            format!("QEMU exited with {status} before the guest printed the probe line")
        }
        Some(Err(error)) => format!("failed to wait for QEMU: {error}"),
    };
    BootOutcome::Failed {
        reason: format!(
            "{reason}; QEMU stderr: {}; last console lines: {}",
            stderr_tail.join(),
            console_tail.join()
        ),
    }
}

/// Reads one line, at most [`MAX_LINE_LEN`] bytes, without its line ending;
/// `None` at end of stream or on a read error.
///
/// Cancel-safe for `select!`: bytes of an unfinished line stay in `buffer`
/// and the next call continues the line.
pub(crate) async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buffer: &mut Vec<u8>,
) -> Option<String> {
    let already_read = u64::try_from(buffer.len()).unwrap_or(u64::MAX);
    let limit = MAX_LINE_LEN.saturating_sub(already_read).max(1);
    match (&mut *reader).take(limit).read_until(b'\n', buffer).await {
        Ok(0) if buffer.is_empty() => None,
        Err(_) => None,
        // A full line, a line cut at the limit, or the last unterminated line.
        Ok(_) => {
            let line = String::from_utf8_lossy(buffer)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            buffer.clear();
            Some(line)
        }
    }
}

/// Last lines of a stream, for failure reports.
pub(crate) struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    pub(crate) fn new(capacity: usize) -> Self {
        Tail {
            lines: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub(crate) fn join(&self) -> String {
        if self.lines.is_empty() {
            "(none)".to_owned()
        } else {
            self.lines
                .iter()
                .map(|line| line.trim())
                .collect::<Vec<_>>()
                .join(" | ")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use tokio::io::AsyncWriteExt;
    use tokio::sync::oneshot;

    use super::*;

    async fn exit_future(receiver: oneshot::Receiver<i32>) -> io::Result<ExitStatus> {
        match receiver.await {
            Ok(code) => Ok(ExitStatus::from_raw(code << 8)),
            Err(_) => std::future::pending().await,
        }
    }

    #[test]
    fn parse_probe_line_cases() {
        assert_eq!(
            parse_probe_line("banger-probe: ok 6.1.0-57-cloud-amd64"),
            Some("6.1.0-57-cloud-amd64")
        );
        assert_eq!(
            parse_probe_line("[    1.2] x banger-probe: ok 6.1.0 \r"),
            Some("6.1.0")
        );
        assert_eq!(parse_probe_line("banger-probe: ok "), None);
        assert_eq!(
            parse_probe_line("Command line: console=ttyS0 banger.probe=1"),
            None
        );
    }

    #[tokio::test]
    async fn probe_line_after_kernel_output_passes() {
        let (mut console, stdout) = tokio::io::duplex(1024);
        let (_stderr_writer, stderr) = tokio::io::duplex(1024);
        let (_exit_sender, exit_receiver) = oneshot::channel();
        console
            .write_all(
                b"[    0.0] Linux version 6.1.0\r\nbanger-probe: ok 6.1.0-57-cloud-amd64\r\n",
            )
            .await
            .unwrap();
        let outcome = watch_boot(
            stdout,
            stderr,
            exit_future(exit_receiver),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            outcome,
            BootOutcome::Passed {
                release: "6.1.0-57-cloud-amd64".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn probe_line_written_just_before_exit_passes() {
        let (mut console, stdout) = tokio::io::duplex(1024);
        let (stderr_writer, stderr) = tokio::io::duplex(1024);
        let (exit_sender, exit_receiver) = oneshot::channel();
        exit_sender.send(0).unwrap();
        console
            .write_all(b"banger-probe: ok 6.1.0\n")
            .await
            .unwrap();
        drop(console);
        drop(stderr_writer);
        let outcome = watch_boot(
            stdout,
            stderr,
            exit_future(exit_receiver),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            outcome,
            BootOutcome::Passed {
                release: "6.1.0".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn kvm_failure_on_stderr_fails_at_once() {
        let (_console, stdout) = tokio::io::duplex(1024);
        let (mut stderr_writer, stderr) = tokio::io::duplex(1024);
        let (_exit_sender, exit_receiver) = oneshot::channel();
        stderr_writer
            .write_all(b"KVM internal error. Suberror: 1\nemulation failure\n")
            .await
            .unwrap();
        let started = Instant::now();
        let outcome = watch_boot(
            stdout,
            stderr,
            exit_future(exit_receiver),
            Duration::from_secs(30),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let BootOutcome::Failed { reason } = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(reason.contains("KVM internal error"), "{reason}");
    }

    #[tokio::test]
    async fn exit_without_probe_line_fails() {
        let (mut console, stdout) = tokio::io::duplex(1024);
        let (mut stderr_writer, stderr) = tokio::io::duplex(1024);
        let (exit_sender, exit_receiver) = oneshot::channel();
        console
            .write_all(b"Kernel panic - not syncing: VFS\n")
            .await
            .unwrap();
        stderr_writer
            .write_all(b"qemu: some warning\n")
            .await
            .unwrap();
        drop(console);
        drop(stderr_writer);
        exit_sender.send(1).unwrap();
        let outcome = watch_boot(
            stdout,
            stderr,
            exit_future(exit_receiver),
            Duration::from_secs(5),
        )
        .await;
        let BootOutcome::Failed { reason } = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(reason.contains("exited with exit status: 1"), "{reason}");
        assert!(reason.contains("Kernel panic"), "{reason}");
        assert!(reason.contains("some warning"), "{reason}");
    }

    #[tokio::test]
    async fn silent_guest_times_out() {
        let (_console, stdout) = tokio::io::duplex(1024);
        let (_stderr_writer, stderr) = tokio::io::duplex(1024);
        let (_exit_sender, exit_receiver) = oneshot::channel();
        let outcome = watch_boot(
            stdout,
            stderr,
            exit_future(exit_receiver),
            Duration::from_millis(300),
        )
        .await;
        let BootOutcome::Failed { reason } = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(
            reason.contains("did not print the probe line within 0.3 s"),
            "{reason}"
        );
    }
}
