//! The sync and async runners against real child processes: scripts written
//! to temporary directories and standard tools (`sh`, `cat`, `sleep`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_process::{CommandError, CommandSpec, PIPE_GRACE, STDERR_CAPTURE_BYTES};

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Returns whether process `pid` still runs: it exists and is no zombie.
fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .next();
    state != Some("Z")
}

/// Reads the pid that a test script wrote to `path`.
fn read_pid(path: &Path) -> i32 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// Kills a process that a test started, when it still runs.
fn kill_if_running(pid: i32) {
    if is_running(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn missing_program_names_debian_package() {
    let empty = tempfile::tempdir().unwrap();
    let error = CommandSpec::new("mkfs.ext4")
        .search_path(empty.path())
        .run()
        .unwrap_err();

    assert!(
        matches!(
            error,
            CommandError::NotFound {
                package: Some("e2fsprogs"),
                source: None,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("`mkfs.ext4` not found on PATH"),
        "{message}"
    );
    assert!(message.contains("apt-get install e2fsprogs"), "{message}");
}

#[test]
fn missing_unknown_program_suggests_path() {
    let empty = tempfile::tempdir().unwrap();
    let error = CommandSpec::new("banger-no-such-tool")
        .search_path(empty.path())
        .run()
        .unwrap_err();

    assert!(
        matches!(error, CommandError::NotFound { package: None, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("add its directory to PATH"),
        "{error}"
    );
}

#[tokio::test]
async fn missing_program_path_is_named() {
    let error = CommandSpec::new("/nonexistent/banger-process-test")
        .arg("x")
        .run_async()
        .await
        .unwrap_err();

    assert!(
        matches!(
            error,
            CommandError::NotFound {
                package: None,
                source: Some(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("/nonexistent/banger-process-test"),
        "{error}"
    );
}

#[test]
fn failure_reports_command_and_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        "failing",
        "i=0; while [ $i -lt 50 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 3",
    );
    let error = CommandSpec::new("failing")
        .arg("some arg")
        .search_path(dir.path())
        .run()
        .unwrap_err();

    assert!(matches!(error, CommandError::Failed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("`failing 'some arg'` failed (exit status: 3)"),
        "{message}"
    );
    assert!(message.contains("line 49"), "{message}");
    assert!(!message.contains("line 29\n"), "only the tail is quoted");
}

#[tokio::test]
async fn async_failure_reports_status_and_stderr() {
    let error = CommandSpec::new("sh")
        .args(["-c", "echo bad >&2; exit 3"])
        .run_async()
        .await
        .unwrap_err();

    assert!(matches!(error, CommandError::Failed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("`sh -c 'echo bad >&2; exit 3'`"),
        "{message}"
    );
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.ends_with(": bad"), "{message}");
}

#[test]
fn failure_without_stderr_says_so() {
    let error = CommandSpec::new("false").run().unwrap_err();
    assert!(error.to_string().ends_with("(no output)"), "{error}");
}

#[test]
fn accepted_exit_code_is_returned() {
    let output = CommandSpec::new("sh")
        .args(["-c", "printf x; exit 1"])
        .accept_exit_codes(&[1])
        .run()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(output.stdout, b"x");
}

#[test]
fn unaccepted_exit_code_fails() {
    let error = CommandSpec::new("sh")
        .args(["-c", "exit 2"])
        .accept_exit_codes(&[1])
        .run()
        .unwrap_err();

    let CommandError::Failed { status, .. } = error else {
        panic!("expected Failed, got {error:?}");
    };
    assert_eq!(status.code(), Some(2));
}

#[test]
fn stdin_bytes_reach_child() {
    let output = CommandSpec::new("cat")
        .stdin("table inet x {}\n")
        .run()
        .unwrap();
    assert_eq!(output.stdout, b"table inet x {}\n");
}

#[tokio::test]
async fn large_stdin_is_written_while_output_is_read() {
    // 4 MiB through `cat`: more than both pipe buffers together, so the
    // write blocks unless stdout is read at the same time.
    let input: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let output = CommandSpec::new("cat")
        .stdin(input.clone())
        .timeout(Duration::from_secs(60))
        .run_async()
        .await
        .unwrap();
    assert!(output.stdout == input, "stdout differs from stdin");
}

#[test]
fn child_ignoring_stdin_succeeds() {
    // `true` exits without reading, so the write meets a closed pipe.
    let output = CommandSpec::new("true")
        .stdin(vec![b'x'; 1024 * 1024])
        .run()
        .unwrap();
    assert!(output.stdout.is_empty());
}

#[test]
fn stdin_is_dev_null_without_bytes() {
    let output = CommandSpec::new("cat").run().unwrap();
    assert!(output.stdout.is_empty());
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
    let output = CommandSpec::new("noisy")
        .search_path(dir.path())
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();

    assert_eq!(output.stdout.len(), 4 * 1024 * 1024);
    assert_eq!(output.stderr.len(), STDERR_CAPTURE_BYTES);
}

#[test]
fn timeout_kills_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("helper.pid");
    // The helper in the background is in the child's process group. It
    // keeps the pipes open, so only a group kill lets the run end early.
    write_script(
        dir.path(),
        "slow",
        &format!(
            "echo started >&2; sleep 30 & echo $! > '{}'; sleep 30",
            pid_file.display()
        ),
    );
    let started = Instant::now();
    let error = CommandSpec::new("slow")
        .search_path(dir.path())
        .timeout(Duration::from_millis(500))
        .run()
        .unwrap_err();
    let elapsed = started.elapsed();
    let helper = read_pid(&pid_file);
    let helper_running = is_running(helper);
    kill_if_running(helper);

    assert!(matches!(error, CommandError::TimedOut { .. }), "{error:?}");
    assert!(error.to_string().contains("started"), "{error}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(!helper_running, "helper {helper} survived the timeout");
}

#[tokio::test]
async fn async_timeout_kills_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("helper.pid");
    let script = format!("sleep 30 & echo $! > '{}'; sleep 30", pid_file.display());
    let error = CommandSpec::new("sh")
        .args(["-c", &script])
        .timeout(Duration::from_millis(500))
        .run_async()
        .await
        .unwrap_err();
    let helper = read_pid(&pid_file);
    let helper_running = is_running(helper);
    kill_if_running(helper);

    let CommandError::TimedOut { timeout, .. } = error else {
        panic!("expected TimedOut, got {error:?}");
    };
    assert_eq!(timeout, Duration::from_millis(500));
    assert!(!helper_running, "helper {helper} survived the timeout");
}

#[test]
fn background_helper_holding_stdout_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("helper.pid");
    // The helper inherits stdout and stderr and outlives the script by far.
    let script = format!(
        "printf done; sleep 30 & echo $! > '{}'; exit 0",
        pid_file.display()
    );
    let started = Instant::now();
    let result = CommandSpec::new("sh").args(["-c", &script]).run();
    let elapsed = started.elapsed();
    kill_if_running(read_pid(&pid_file));

    let output = result.unwrap();
    assert_eq!(output.stdout, b"done");
    assert!(
        elapsed >= PIPE_GRACE,
        "returned before the grace: {elapsed:?}"
    );
    assert!(
        elapsed < PIPE_GRACE + Duration::from_secs(5),
        "took {elapsed:?}"
    );
}

#[test]
fn current_dir_and_env_apply() {
    let dir = tempfile::tempdir().unwrap();
    let output = CommandSpec::new("sh")
        .args(["-c", "pwd; printf '%s\\n' \"$BANGER_TEST_VALUE\""])
        .current_dir(dir.path())
        .env("BANGER_TEST_VALUE", "a b")
        .run()
        .unwrap();

    let printed = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert_eq!(
        Path::new(lines[0]).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
    assert_eq!(lines[1], "a b");
}

#[test]
fn missing_current_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let error = CommandSpec::new("sh")
        .args(["-c", "true"])
        .current_dir(&gone)
        .run()
        .unwrap_err();
    assert!(
        matches!(&error, CommandError::MissingDirectory { dir, .. } if *dir == gone),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("the directory does not exist"),
        "{message}"
    );
    assert!(!message.contains("not found on PATH"), "{message}");
}

#[test]
fn umask_applies_in_child() {
    let output = CommandSpec::new("sh")
        .args(["-c", "umask"])
        .umask(0o077)
        .run()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "0077");
}

#[tokio::test]
async fn sync_run_works_inside_runtime() {
    let output = CommandSpec::new("sh")
        .args(["-c", "printf hello"])
        .run()
        .unwrap();
    assert_eq!(output.stdout, b"hello");
}

#[tokio::test]
async fn async_run_captures_stdout_and_stderr() {
    let output = CommandSpec::new("sh")
        .args(["-c", "printf hello; printf note >&2"])
        .run_async()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, b"hello");
    assert_eq!(output.stderr, b"note");
}

#[tokio::test]
async fn spawn_pipes_output_to_caller() {
    use tokio::io::AsyncReadExt;

    let mut child = CommandSpec::new("sh")
        .args(["-c", "printf console"])
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut text = String::new();
    stdout.read_to_string(&mut text).await.unwrap();

    assert_eq!(text, "console");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn spawn_missing_program() {
    let error = CommandSpec::new("/nonexistent/banger-process-test")
        .spawn()
        .unwrap_err();
    assert!(matches!(error, CommandError::NotFound { .. }), "{error:?}");
}
