//! Serve mode on vsock: the per-connection accept loop (run here over a
//! Unix socket, since a host without a vsock loopback transport cannot
//! connect to its own vsock listener) and `serve --vsock-port` as a binary.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use banger_agent::serve::vsock::serve_each_connection;
use banger_agent::serve::{ConnectionOptions, EndOfInput};
use common::{Client, sh};

const BINARY: &str = env!("CARGO_BIN_EXE_banger-agent");

#[test]
fn each_connection_is_served_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listener.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let options = ConnectionOptions {
        end_of_input: EndOfInput::Close,
        shutdown: Arc::new(|_| {}),
    };
    thread::spawn(move || {
        serve_each_connection(
            || {
                let (stream, _) = listener.accept()?;
                let writer = stream.try_clone()?;
                Ok((stream, writer, "test peer".to_owned()))
            },
            "the test listener",
            &options,
        )
    });

    let connect = || {
        let stream = UnixStream::connect(&path).unwrap();
        Client::from_socket(stream, Arc::new(Mutex::new(Vec::new())))
    };
    let mut first = connect();
    assert_eq!(first.hello(1).nonce, 1);
    first.exec(1, &sh("echo first-started; exec sleep 30"));
    first.next_frame_where(|frame| frame.stream == 1);

    // The first session still runs a command, and a second connection is
    // served at the same time.
    let mut second = connect();
    assert_eq!(second.hello(2).nonce, 2);
    assert_eq!(second.run(1, &sh("echo second")).stdout_text(), "second\n");

    drop(first);
    let mut third = connect();
    assert_eq!(third.run(1, &sh("echo third")).stdout_text(), "third\n");
}

/// Kills the agent process when a test ends, pass or fail.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve --vsock-port port` and returns the process and its first
/// line on standard error.
fn start_vsock_agent(port: u32) -> (AgentProcess, String) {
    let mut child = Command::new(BINARY)
        .args(["serve", "--vsock-port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let agent = AgentProcess(child);
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    (agent, line)
}

fn host_has_vsock() -> bool {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Vsock,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .is_ok()
}

#[test]
fn vsock_port_listens_and_rejects_port_in_use() {
    if !host_has_vsock() {
        banger_test_support::skip("this host has no AF_VSOCK sockets (load the vsock module)");
        return;
    }
    // A port that no other test run is likely to hold.
    let port = 40_000 + std::process::id() % 20_000;
    let (mut agent, line) = start_vsock_agent(port);
    assert!(
        line.contains(&format!("listening on vsock port {port}")),
        "{line}"
    );
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent keeps listening"
    );

    let output = Command::new(BINARY)
        .args(["serve", "--vsock-port", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("listening on vsock port {port} failed")),
        "{stderr}"
    );
    assert!(stderr.contains("EADDRINUSE"), "{stderr}");
    thread::sleep(Duration::from_millis(50));
    assert!(agent.0.try_wait().unwrap().is_none());
}

#[test]
fn invalid_vsock_port_exits_2() {
    let output = Command::new(BINARY)
        .args(["serve", "--vsock-port", "port"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid vsock port `port`"), "{stderr}");
}
