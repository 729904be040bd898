//! `spawn_detached` against real daemons (`sleep`), checked through /proc.

use std::process::Stdio;

use banger_process::{CommandError, spawn_detached};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Returns field 2 (comm) and fields 4 (ppid) and 6 (session id) of
/// `/proc/<pid>/stat`.
fn comm_parent_session(pid: u32) -> (String, u32, u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let open = text.find('(').unwrap();
    let close = text.rfind(')').unwrap();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    (
        text[open + 1..close].to_owned(),
        fields[1].parse().unwrap(),
        fields[3].parse().unwrap(),
    )
}

#[test]
fn spawn_detached_starts_session_leader() {
    let mut command = std::process::Command::new("sleep");
    command.arg("30").stdin(Stdio::null());
    let pid = spawn_detached(command).unwrap();

    let (comm, parent, session) = comm_parent_session(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // The daemon is this test's own `sleep`, as `comm` confirms.
    if comm == "sleep" {
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    }

    assert_eq!(comm, "sleep");
    assert_ne!(parent, std::process::id(), "the daemon is not our child");
    assert_eq!(session, pid, "the daemon leads its own session");
    assert!(status.contains("Umask:\t0077"), "{status}");
}

#[test]
fn spawn_detached_missing_program() {
    let command = std::process::Command::new("/nonexistent/banger-test-program");
    let error = spawn_detached(command).unwrap_err();
    assert!(matches!(error, CommandError::NotFound { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("/nonexistent/banger-test-program"),
        "{error}"
    );
}
