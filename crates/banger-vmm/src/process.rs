//! Identifies VMM processes by pid plus start time and signals them without
//! pid-reuse races.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::signal::Signal;
use thiserror::Error;
use tokio::time::Instant;

/// Interval between checks while waiting for a process to exit.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Failure to read or signal a process.
#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("failed to read /proc/{pid}/stat")]
    ReadStat {
        pid: u32,
        #[source]
        source: io::Error,
    },

    #[error("invalid /proc/{pid}/stat contents {text:?}: {reason}")]
    ParseStat {
        pid: u32,
        text: String,
        reason: &'static str,
    },

    #[error("failed to open a pidfd for process {pid}")]
    OpenPidfd {
        pid: u32,
        #[source]
        source: io::Error,
    },

    #[error("failed to send {signal} to process {pid}")]
    SendSignal {
        pid: u32,
        signal: Signal,
        #[source]
        source: io::Error,
    },
}

/// Fields of `/proc/<pid>/stat` that identify a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// Executable name, up to 15 bytes; it may contain spaces and parentheses.
    pub comm: String,
    /// State letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead) and others.
    pub state: char,
    /// Start time in clock ticks after boot (field 22).
    pub start_time: u64,
}

impl ProcStat {
    /// Returns whether the process has exited and awaits reaping, or is dead.
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/<pid>/stat`.
///
/// `comm` is enclosed in parentheses and may itself contain `)`, so the fields
/// after it are found from the last `)` in the text.
pub fn parse_stat(pid: u32, text: &str) -> Result<ProcStat, ProcessError> {
    let error = |reason| ProcessError::ParseStat {
        pid,
        text: text.chars().take(200).collect(),
        reason,
    };

    let open = text
        .find('(')
        .ok_or_else(|| error("missing '(' before comm"))?;
    let close = text
        .rfind(')')
        .ok_or_else(|| error("missing ')' after comm"))?;
    if close < open {
        return Err(error("')' before '('"));
    }
    let stat_pid: u32 = text[..open]
        .trim()
        .parse()
        .map_err(|_| error("field 1 (pid) is not a number"))?;
    if stat_pid != pid {
        return Err(error("field 1 (pid) does not match the requested pid"));
    }
    let comm = text[open + 1..close].to_owned();

    // Fields from 3 (state) onwards, so field N has index N - 3.
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let state = rest
        .first()
        .and_then(|field| field.chars().next())
        .ok_or_else(|| error("field 3 (state) is missing"))?;
    let start_time = rest
        .get(22 - 3)
        .ok_or_else(|| error("field 22 (starttime) is missing"))?
        .parse()
        .map_err(|_| error("field 22 (starttime) is not a number"))?;

    Ok(ProcStat {
        pid,
        comm,
        state,
        start_time,
    })
}

/// Reads `/proc/<pid>/stat`; `Ok(None)` when no process has that pid.
pub fn read_stat(pid: u32) -> Result<Option<ProcStat>, ProcessError> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(pid, &text).map(Some),
        // ESRCH shows up when the process exits between open and read.
        Err(error)
            if error.kind() == io::ErrorKind::NotFound
                || error.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(source) => Err(ProcessError::ReadStat { pid, source }),
    }
}

/// Returns whether the process `pid` exists, started at `start_time` and has
/// not exited. A zombie counts as exited. Read errors count as not running.
pub fn is_running(pid: u32, start_time: u64) -> bool {
    match read_stat(pid) {
        Ok(Some(stat)) => stat.start_time == start_time && !stat.is_exited(),
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(pid, %error, "treating unreadable process as not running");
            false
        }
    }
}

/// Polls until the process is no longer running or `timeout` passes; returns
/// true when it is gone.
pub async fn wait_gone(pid: u32, start_time: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_running(pid, start_time) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(EXIT_POLL_INTERVAL).await;
    }
}

/// Sends `signal` to the process if it is still the one that started at
/// `start_time`. Returns false when that process no longer exists.
///
/// The pidfd pins the process: once it is open and the start time matches,
/// the signal cannot reach a different process that reused the pid.
pub fn send_signal(pid: u32, start_time: u64, signal: Signal) -> Result<bool, ProcessError> {
    let Some(pidfd) = open_pidfd(pid)? else {
        return Ok(false);
    };
    match read_stat(pid)? {
        Some(stat) if stat.start_time == start_time => {}
        _ => return Ok(false),
    }

    // SAFETY: pidfd_send_signal takes a valid pidfd (owned by `pidfd` for the
    // whole call), a signal number, a null siginfo pointer (the kernel then
    // fills in the siginfo as kill(2) does) and flags 0. No memory is shared.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if result == 0 {
        return Ok(true);
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::ESRCH) {
        return Ok(false);
    }
    Err(ProcessError::SendSignal {
        pid,
        signal,
        source,
    })
}

fn open_pidfd(pid: u32) -> Result<Option<OwnedFd>, ProcessError> {
    let Ok(raw_pid) = libc::pid_t::try_from(pid) else {
        return Ok(None);
    };
    // SAFETY: pidfd_open takes a pid and flags 0 and returns a new file
    // descriptor or -1; it does not touch memory of this process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0 as libc::c_uint) };
    if fd < 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::ESRCH) {
            return Ok(None);
        }
        return Err(ProcessError::OpenPidfd { pid, source });
    }
    let fd = RawFd::try_from(fd).map_err(|_| ProcessError::OpenPidfd {
        pid,
        source: io::Error::other("pidfd_open returned an out-of-range descriptor"),
    })?;
    // SAFETY: `fd` was just returned by pidfd_open, is open, and nothing else
    // owns it, so OwnedFd may close it on drop.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_TAIL: &str = "S 1 8533 8533 0 -1 138412480 6025 0 1 0 0 2 0 0 20 0 4 0 102988 \
        1650274304 11395 18446744073709551615 94152752234496 94152758094933 140723591572624 \
        0 0 0 268444224 3674112 16451 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parse_stat_plain_comm() {
        let text = format!("8535 (qemu-system-x86) {STAT_TAIL}\n");
        let stat = parse_stat(8535, &text).unwrap();
        assert_eq!(stat.comm, "qemu-system-x86");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_time, 102_988);
        assert!(!stat.is_exited());
    }

    #[test]
    fn parse_stat_comm_with_spaces_and_parens() {
        let text = format!("42 (a) b (c)) {STAT_TAIL}");
        let stat = parse_stat(42, &text).unwrap();
        assert_eq!(stat.comm, "a) b (c)");
        assert_eq!(stat.start_time, 102_988);
    }

    #[test]
    fn parse_stat_zombie() {
        let text = format!("7 (x) Z{}", &STAT_TAIL[1..]);
        let stat = parse_stat(7, &text).unwrap();
        assert_eq!(stat.state, 'Z');
        assert!(stat.is_exited());
    }

    #[test]
    fn parse_stat_rejects_bad_input() {
        assert!(parse_stat(1, "").is_err());
        assert!(parse_stat(1, "1 (init S 0").is_err());
        assert!(parse_stat(1, "1 (init) S 0 1 2").is_err(), "too few fields");
        assert!(
            parse_stat(2, &format!("1 (init) {STAT_TAIL}")).is_err(),
            "pid mismatch"
        );
        let bad_start = STAT_TAIL.replace(" 102988 ", " x ");
        assert!(parse_stat(1, &format!("1 (init) {bad_start}")).is_err());
    }

    #[test]
    fn read_stat_own_process() {
        let pid = std::process::id();
        let stat = read_stat(pid).unwrap().unwrap();
        assert_eq!(stat.pid, pid);
        assert!(is_running(pid, stat.start_time));
        assert!(!is_running(pid, stat.start_time + 1), "start time mismatch");
    }

    #[tokio::test]
    async fn signal_and_wait_for_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start_time = read_stat(pid).unwrap().unwrap().start_time;

        assert!(
            !send_signal(pid, start_time + 1, Signal::SIGKILL).unwrap(),
            "wrong start time"
        );
        assert!(is_running(pid, start_time));

        assert!(send_signal(pid, start_time, Signal::SIGKILL).unwrap());
        // The child stays a zombie until reaped, and a zombie counts as gone.
        assert!(wait_gone(pid, start_time, Duration::from_secs(5)).await);
        child.wait().unwrap();
        assert!(!send_signal(pid, start_time, Signal::SIGKILL).unwrap());
    }
}
