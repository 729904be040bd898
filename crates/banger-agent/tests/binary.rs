//! The `banger-agent` binary run as a user would run it on a host.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use banger_agent_proto::{FrameKind, Shutdown, ShutdownAction};
use common::{Client, sh};

const BINARY: &str = env!("CARGO_BIN_EXE_banger-agent");

/// Kills the agent process when a test ends, pass or fail.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and connects to the socket it listens on.
fn start_and_connect(mut command: Command, socket: &Path) -> (AgentProcess, Client) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let agent = AgentProcess(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stream) = UnixStream::connect(socket) {
            return (
                agent,
                Client::from_socket(stream, Arc::new(Mutex::new(Vec::new()))),
            );
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not listen on {}",
            socket.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn version_prints_package_version() {
    let output = Command::new(BINARY).arg("version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("banger-agent {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_command_exits_2_with_usage() {
    let output = Command::new(BINARY).arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("unknown command `frobnicate`"), "{stderr}");
    assert!(stderr.contains("banger-agent serve"), "{stderr}");
}

#[test]
fn missing_device_fails_with_its_path() {
    let output = Command::new(BINARY)
        .args(["serve", "--device", "/nonexistent/vport9p9"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/vport9p9"), "{stderr}");
}

#[test]
fn unix_socket_serves_connections_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut command = Command::new(BINARY);
    command.args(["serve", "--unix-socket"]).arg(&socket);
    let (_agent, mut client) = start_and_connect(command, &socket);

    client.hello(11);
    let output = client.run(1, &sh("echo out; echo err >&2; exit 7"));
    assert_eq!(output.stdout_text(), "out\n");
    assert_eq!(output.stderr_text(), "err\n");
    assert_eq!(output.status.code, Some(7));

    // Shutdown is acknowledged, but the host is not powered off and the
    // agent keeps serving.
    client.send_json(
        FrameKind::Shutdown,
        0,
        &Shutdown {
            action: ShutdownAction::Poweroff,
        },
    );
    client.next_frame_where(|frame| frame.kind == FrameKind::ShutdownAck);
    drop(client);

    let stream = UnixStream::connect(&socket).unwrap();
    let mut second = Client::from_socket(stream, Arc::new(Mutex::new(Vec::new())));
    assert_eq!(second.hello(12).nonce, 12);
    assert_eq!(second.run(1, &sh("echo second")).stdout_text(), "second\n");
}

#[test]
fn closing_connection_kills_its_commands() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut command = Command::new(BINARY);
    command.args(["serve", "--unix-socket"]).arg(&socket);
    let (_agent, mut client) = start_and_connect(command, &socket);

    client.exec(1, &sh("echo $$; exec sleep 100"));
    let frame = client.next_frame_where(|frame| frame.kind == FrameKind::Stdout);
    let pid: u32 = String::from_utf8_lossy(&frame.payload)
        .trim()
        .parse()
        .unwrap();
    drop(client);

    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "sleep (pid {pid}) outlived its connection"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// As PID 1 of a new PID namespace the agent must reap orphans. Needs root
/// (or user namespaces) and util-linux `unshare`; skipped when that fails.
#[test]
fn pid1_agent_reaps_orphans() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(status) if status.success()) {
        banger_test_support::skip("unshare --pid --mount-proc is not permitted here");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", BINARY])
        .args(["serve", "--unix-socket"])
        .arg(&socket);
    let (_agent, mut client) = start_and_connect(command, &socket);

    let me = client.run(1, &sh("echo $PPID"));
    assert_eq!(
        me.stdout_text(),
        "1\n",
        "the agent is not PID 1 in the namespace"
    );

    // The shell exits at once; its background sleep is re-parented to the
    // agent and exits 0.2 s later.
    let orphan = client.run(2, &sh("sleep 0.2 >/dev/null 2>&1 & echo $!"));
    let orphan_pid = orphan.stdout_text().trim().to_owned();
    assert_eq!(orphan.status.code, Some(0));

    let check = format!(
        "sleep 1; if [ -e /proc/{orphan_pid} ]; then cat /proc/{orphan_pid}/status | grep State; else echo gone; fi"
    );
    let state = client.run(3, &sh(&check));
    assert_eq!(
        state.stdout_text(),
        "gone\n",
        "orphan {orphan_pid} was not reaped"
    );

    // Children the agent waits for itself still report their own status.
    let own = client.run(4, &sh("exit 5"));
    assert_eq!(own.status.code, Some(5));
}
