//! Booting the Firecracker probe VM and watching it.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use banger_process::{CommandError, CommandSpec};
use tokio::io::{AsyncRead, BufReader};
use tokio::process::Child;
use tokio::time::Instant;

use super::{FirecrackerProbeOptions, ProbeError};
use crate::firecracker::api::{
    ActionType, ApiClient, ApiError, BootSource, LogLevel, Logger, MachineConfig, Metrics,
};
use crate::firecracker::{RunPaths, boot_args, firecracker_args};
use crate::probe::watch::{BootOutcome, Tail, parse_probe_line, read_line};
use crate::qemu::read_log_tail;

/// Kernel arguments of the probe VM after [`crate::firecracker::CONSOLE_CMDLINE`].
/// `banger.probe=1` makes the initramfs init print the probe line.
pub const PROBE_ARGS: &str = "banger.probe=1";

/// Guest memory of the probe VM in MiB.
const PROBE_MEMORY_MIB: u32 = 256;

/// Deadline for Firecracker to serve its API socket.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Deadline for each API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Interval between checks of Firecracker's log and metrics.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Time allowed after Firecracker exits for the rest of its output to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Firecracker 1.12.1 logs this when KVM stops the vCPU with an internal
/// error, and then exits after the VMM shut down.
const INTERNAL_ERROR_MARKER: &str = "KVM_EXIT_INTERNAL_ERROR";

/// Number of console lines kept for a failure report.
const KEPT_CONSOLE_LINES: usize = 5;

/// Number of standard error lines kept for a failure report.
const KEPT_STDERR_LINES: usize = 5;

/// Number of Firecracker log lines quoted in a failure report.
const KEPT_LOG_LINES: usize = 3;

/// Firecracker 1.12.1 tags the lines of its API thread with this. Those
/// lines only record the probe's own requests.
const API_THREAD_MARKER: &str = ":fc_api]";

/// Returns the number of vCPU exits to Firecracker for port I/O and MMIO in
/// the last complete line of a metrics file, or `None` when there is none.
pub fn vcpu_exit_count(metrics: &str) -> Option<u64> {
    let line = metrics.lines().rev().find(|line| !line.trim().is_empty())?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let vcpu = value.get("vcpu")?;
    [
        "exit_io_in",
        "exit_io_out",
        "exit_mmio_read",
        "exit_mmio_write",
    ]
    .iter()
    .map(|name| vcpu.get(name).and_then(serde_json::Value::as_u64))
    .sum()
}

/// Boots the probe VM as a direct child in a temporary run directory and
/// ensures it is gone before returning.
pub(super) async fn boot(options: &FirecrackerProbeOptions) -> Result<BootOutcome, ProbeError> {
    let dir = tempfile::Builder::new()
        .prefix("banger-fc-probe-")
        .tempdir()
        .map_err(ProbeError::Prepare)?;
    let paths = RunPaths::new(dir.path());
    for file in [&paths.log, &paths.metrics] {
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(file)
            .map_err(ProbeError::Prepare)?;
    }

    let command =
        CommandSpec::new(&options.firecracker).args(firecracker_args("banger-probe", &paths));
    tracing::info!(kernel = %options.kernel.display(), "starting Firecracker boot probe VM");
    let mut child = command.spawn().map_err(ProbeError::Start)?;
    let outcome = configure_and_watch(options, &paths, &mut child).await;

    if let Ok(None) = child.try_wait() {
        if let Err(error) = child.start_kill() {
            tracing::warn!(%error, "failed to kill the Firecracker boot probe VM");
        }
        if let Err(error) = child.wait().await {
            tracing::warn!(%error, "failed to wait for the killed Firecracker boot probe VM");
        }
    }
    outcome
}

async fn configure_and_watch(
    options: &FirecrackerProbeOptions,
    paths: &RunPaths,
    child: &mut Child,
) -> Result<BootOutcome, ProbeError> {
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ProbeError::Start(CommandError::Spawn {
            command: options.firecracker.display().to_string(),
            source: std::io::Error::other("standard output and error are not piped"),
        }));
    };
    let mut watcher = Watcher::new(stdout, stderr);

    let api = ApiClient::new(&paths.api_socket, REQUEST_TIMEOUT);
    wait_for_api(&api, paths, child, &mut watcher).await?;
    let configure = |action, result: Result<(), ApiError>| {
        result.map_err(|source| ProbeError::Configure {
            action,
            source: Box::new(source),
        })
    };
    let logger = Logger {
        log_path: paths.log.clone(),
        level: LogLevel::Info,
    };
    configure("configure its log", api.put_logger(&logger).await)?;
    let metrics = Metrics {
        metrics_path: paths.metrics.clone(),
    };
    configure("configure its metrics", api.put_metrics(&metrics).await)?;
    let machine = MachineConfig {
        vcpu_count: 1,
        mem_size_mib: PROBE_MEMORY_MIB,
    };
    configure(
        "set the machine configuration",
        api.put_machine_config(&machine).await,
    )?;
    let boot_source = BootSource {
        kernel_image_path: options.kernel.clone(),
        initrd_path: Some(options.initrd.clone()),
        boot_args: boot_args(PROBE_ARGS),
    };
    configure(
        "set the boot source",
        api.put_boot_source(&boot_source).await,
    )?;

    let started = Instant::now();
    if let Err(error) = api.action(ActionType::InstanceStart).await {
        // Firecracker could not start the guest with these inputs, which is
        // an outcome of the probe like a guest that stalls.
        return Ok(BootOutcome::Failed {
            reason: format!("InstanceStart failed: {}", crate::error_chain(&error)),
        });
    }
    Ok(watcher.watch(options, &api, paths, child, started).await)
}

/// Waits until Firecracker responds to `GET /`. Its output is read
/// meanwhile, so that its pipes do not fill.
async fn wait_for_api(
    api: &ApiClient,
    paths: &RunPaths,
    child: &mut Child,
    watcher: &mut Watcher<impl AsyncRead + Unpin, impl AsyncRead + Unpin>,
) -> Result<(), ProbeError> {
    let deadline = Instant::now() + API_TIMEOUT;
    loop {
        if api.instance_info().await.is_ok() {
            return Ok(());
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() >= deadline {
            watcher.drain(Duration::from_millis(200)).await;
            return Err(ProbeError::ApiTimedOut {
                socket: paths.api_socket.clone(),
                timeout: API_TIMEOUT,
                stderr: watcher.stderr_tail.join(),
            });
        }
        watcher.drain(Duration::from_millis(20)).await;
    }
}

/// Reads the console (Firecracker's standard output) and standard error.
struct Watcher<O, E> {
    stdout: BufReader<O>,
    stderr: BufReader<E>,
    stdout_open: bool,
    stderr_open: bool,
    stdout_line: Vec<u8>,
    stderr_line: Vec<u8>,
    console_tail: Tail,
    stderr_tail: Tail,
    release: Option<String>,
}

impl<O: AsyncRead + Unpin, E: AsyncRead + Unpin> Watcher<O, E> {
    fn new(stdout: O, stderr: E) -> Self {
        Watcher {
            stdout: BufReader::new(stdout),
            stderr: BufReader::new(stderr),
            stdout_open: true,
            stderr_open: true,
            stdout_line: Vec::new(),
            stderr_line: Vec::new(),
            console_tail: Tail::new(KEPT_CONSOLE_LINES),
            stderr_tail: Tail::new(KEPT_STDERR_LINES),
            release: None,
        }
    }

    /// Reads output until `duration` passes, both streams end or the probe
    /// line arrives.
    async fn drain(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while self.release.is_none() && (self.stdout_open || self.stderr_open) {
            if !self.read_once(deadline).await {
                return;
            }
        }
    }

    /// Reads one line from either stream. Returns false when `deadline`
    /// passed first.
    async fn read_once(&mut self, deadline: Instant) -> bool {
        tokio::select! {
            read = read_line(&mut self.stdout, &mut self.stdout_line), if self.stdout_open => match read {
                Some(line) => match parse_probe_line(&line) {
                    Some(release) => self.release = Some(release.to_owned()),
                    None => self.console_tail.push(line),
                },
                None => self.stdout_open = false,
            },
            read = read_line(&mut self.stderr, &mut self.stderr_line), if self.stderr_open => match read {
                Some(line) => self.stderr_tail.push(line),
                None => self.stderr_open = false,
            },
            () = tokio::time::sleep_until(deadline) => return false,
        }
        true
    }

    /// Watches the started guest until an outcome is known.
    async fn watch(
        &mut self,
        options: &FirecrackerProbeOptions,
        api: &ApiClient,
        paths: &RunPaths,
        child: &mut Child,
        started: Instant,
    ) -> BootOutcome {
        let deadline = started + options.timeout;
        let stall_deadline = started + options.stall_timeout;
        let mut stall_checked = false;
        loop {
            let next_check = (Instant::now() + CHECK_INTERVAL).min(deadline);
            while self.read_once(next_check).await {
                if let Some(release) = self.release.take() {
                    return BootOutcome::Passed { release };
                }
            }

            if let Ok(Some(status)) = child.try_wait() {
                self.drain(DRAIN_TIMEOUT).await;
                if let Some(release) = self.release.take() {
                    return BootOutcome::Passed { release };
                }
                let reason = format!(
                    "Firecracker exited with {status} before the guest printed the probe line"
                );
                return self.failed(paths, &reason);
            }
            if read_log_tail(&paths.log).contains(INTERNAL_ERROR_MARKER) {
                return self.failed(
                    paths,
                    "Firecracker reported KVM_EXIT_INTERNAL_ERROR: KVM on this host could not run the guest",
                );
            }
            if !stall_checked && Instant::now() >= stall_deadline {
                stall_checked = true;
                if let Some(reason) = stall_reason(api, paths, options.stall_timeout).await {
                    return self.failed(paths, &reason);
                }
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "the guest did not print the probe line within {} s",
                    options.timeout.as_secs_f64()
                );
                return self.failed(paths, &reason);
            }
        }
    }

    fn failed(&self, paths: &RunPaths, reason: &str) -> BootOutcome {
        BootOutcome::Failed {
            reason: format!(
                "{reason}; last console lines: {}; Firecracker standard error: {}; Firecracker log: {}",
                self.console_tail.join(),
                self.stderr_tail.join(),
                last_log_lines(&paths.log),
            ),
        }
    }
}

/// Returns why the guest counts as stalled: Firecracker's counters of vCPU
/// exits for port I/O and MMIO are still 0. `None` when the guest made such
/// exits, or when the counters cannot be read.
async fn stall_reason(
    api: &ApiClient,
    paths: &RunPaths,
    stall_timeout: Duration,
) -> Option<String> {
    if let Err(error) = api.action(ActionType::FlushMetrics).await {
        tracing::warn!(error = %crate::error_chain(&error), "failed to flush Firecracker metrics; not checking for a stalled guest");
        return None;
    }
    let metrics = match std::fs::read_to_string(&paths.metrics) {
        Ok(metrics) => metrics,
        Err(error) => {
            tracing::warn!(path = %paths.metrics.display(), %error, "failed to read Firecracker metrics; not checking for a stalled guest");
            return None;
        }
    };
    match vcpu_exit_count(&metrics) {
        Some(0) => Some(format!(
            "the guest made no port I/O or MMIO access in {} s after InstanceStart (Firecracker's vCPU exit counters stayed 0), so it did not get as far as writing to its serial console",
            stall_timeout.as_secs_f64()
        )),
        Some(exits) => {
            tracing::debug!(exits, "the probe guest is running");
            None
        }
        None => {
            tracing::warn!(path = %paths.metrics.display(), "no vCPU exit counters in the Firecracker metrics; not checking for a stalled guest");
            None
        }
    }
}

/// Returns the last lines of Firecracker's log that are not about API
/// requests, on one line.
fn last_log_lines(path: &Path) -> String {
    let tail = read_log_tail(path);
    let mut lines: Vec<&str> = tail
        .lines()
        .rev()
        .filter(|line| !line.contains(API_THREAD_MARKER))
        .take(KEPT_LOG_LINES)
        .collect();
    if lines.is_empty() {
        return "(none)".to_owned();
    }
    lines.reverse();
    lines.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_count_from_last_metrics_line() {
        let first = r#"{"utc_timestamp_ms":1,"vcpu":{"exit_io_in":0,"exit_io_out":0,"exit_mmio_read":0,"exit_mmio_write":0,"failures":0,"exit_io_in_agg":{"min_us":0,"max_us":0,"sum_us":0}}}"#;
        let second = r#"{"utc_timestamp_ms":2,"vcpu":{"exit_io_in":2,"exit_io_out":22,"exit_mmio_read":1,"exit_mmio_write":3,"failures":0}}"#;
        assert_eq!(vcpu_exit_count(first), Some(0));
        assert_eq!(vcpu_exit_count(&format!("{first}\n{second}\n\n")), Some(28));
        assert_eq!(vcpu_exit_count(""), None);
        assert_eq!(vcpu_exit_count("{\"vcpu\":{}}"), None);
        assert_eq!(vcpu_exit_count("{not json"), None);
    }
}
