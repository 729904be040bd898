//! The serve loop driven over a Unix socket pair by a client built on the
//! protocol crate. Commands run for real on this machine.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use banger_agent_proto::{
    ExitStatus, FrameKind, MAX_PAYLOAD, PROTOCOL_VERSION, STDIN_WINDOW, Shutdown, ShutdownAction,
    SignalRequest, decode_json,
};
use common::{Client, pseudo_random_bytes, request, sh};
use sha2::{Digest, Sha256};

#[test]
fn hello_ack_echoes_nonce() {
    let mut client = Client::in_process();
    let ack = client.hello(0xdead_beef_1234);
    assert_eq!(ack.nonce, 0xdead_beef_1234);
    assert_eq!(ack.protocol, PROTOCOL_VERSION);
    assert_eq!(ack.agent_version, env!("CARGO_PKG_VERSION"));
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(ack.kernel_release, release.trim());
}

#[test]
fn ping_returns_pong_with_payload() {
    let mut client = Client::in_process();
    client.send(FrameKind::Ping, 0, b"are you there?".to_vec());
    let pong = client.next_frame_where(|frame| frame.kind == FrameKind::Pong);
    assert_eq!(pong.payload, b"are you there?");
    assert_eq!(pong.stream, 0);
}

#[test]
fn exec_streams_stdout_stderr_and_code() {
    let mut client = Client::in_process();
    client.hello(1);
    let output = client.run(1, &sh("echo out; echo err >&2; exit 7"));
    assert_eq!(output.stdout_text(), "out\n");
    assert_eq!(output.stderr_text(), "err\n");
    assert_eq!(output.status.code, Some(7));
    assert_eq!(output.status.signal, None);
    assert_eq!(output.status.error, None);
}

#[test]
fn missing_program_exits_127() {
    let mut client = Client::in_process();
    client.hello(1);
    let output = client.run(3, &request(&["banger-no-such-program", "arg"]));
    assert_eq!(
        output.stderr_text(),
        "banger-agent: banger-no-such-program: command not found\n"
    );
    assert_eq!(output.status.code, Some(127));
    assert!(output.status.error.is_some());
}

#[test]
fn non_executable_program_exits_126() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let mut client = Client::in_process();
    let output = client.run(1, &request(&[script.to_str().unwrap()]));
    assert_eq!(output.status.code, Some(126));
    assert!(
        output.stderr_text().contains("Permission denied"),
        "{}",
        output.stderr_text()
    );
}

#[test]
fn missing_cwd_exits_126_naming_it() {
    let mut client = Client::in_process();
    let mut req = request(&["true"]);
    req.cwd = Some("/nonexistent/banger-workdir".into());
    let output = client.run(1, &req);
    assert_eq!(output.status.code, Some(126));
    assert!(
        output.stderr_text().contains("/nonexistent/banger-workdir"),
        "{}",
        output.stderr_text()
    );
}

#[test]
fn env_and_cwd_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::in_process();
    let mut req = sh("echo \"$GREETING|$HOME|$LANG|$PATH\"; pwd; echo \"${CARGO:-unset}\"");
    req.env = vec![
        ("GREETING".into(), "hi".into()),
        ("HOME".into(), "/tmp".into()),
    ];
    req.cwd = Some(dir.path().to_str().unwrap().into());
    let output = client.run(1, &req);
    let canonical = fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        output.stdout_text(),
        format!(
            "hi|/tmp|C.UTF-8|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{}\nunset\n",
            canonical.display()
        )
    );
    assert_eq!(output.status.code, Some(0));
}

#[test]
fn signal_frame_kills_command() {
    let mut client = Client::in_process();
    client.exec(1, &sh("echo started; exec sleep 100"));
    // Wait until the command runs, so the signal finds its process group.
    let started = client.next_frame_where(|frame| frame.kind == FrameKind::Stdout);
    assert_eq!(started.payload, b"started\n");
    client.send_json(FrameKind::Signal, 1, &SignalRequest { signal: 9 });
    let output = client.wait_exit(1);
    assert_eq!(output.status.signal, Some(9));
    assert_eq!(output.status.code, None);
}

#[test]
fn sigterm_reaches_whole_process_group() {
    let mut client = Client::in_process();
    // The shell waits for a background child; SIGTERM to the group ends both.
    client.exec(1, &sh("sleep 100 & echo $!; wait"));
    let started = client.next_frame_where(|frame| frame.kind == FrameKind::Stdout);
    let sleep_pid = String::from_utf8(started.payload)
        .unwrap()
        .trim()
        .to_owned();
    client.send_json(FrameKind::Signal, 1, &SignalRequest { signal: 15 });
    let output = client.wait_exit(1);
    assert_eq!(output.status.signal, Some(15));
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(&sleep_pid) {
        assert!(
            Instant::now() < deadline,
            "background sleep (pid {sleep_pid}) survived SIGTERM to its group"
        );
        thread_sleep(Duration::from_millis(20));
    }
}

/// Returns whether the process exists and is not a zombie.
fn process_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            state != Some(Some('Z'))
        }
        Err(_) => false,
    }
}

#[test]
fn self_kill_reports_signal_9() {
    let mut client = Client::in_process();
    let output = client.run(2, &sh("kill -9 $$"));
    assert_eq!(output.status.signal, Some(9));
    assert_eq!(output.status.code, None);
}

#[test]
fn cat_echoes_stdin() {
    let mut client = Client::in_process();
    let mut req = request(&["cat"]);
    req.stdin = true;
    client.exec(1, &req);
    client.send(FrameKind::Stdin, 1, b"hello ".to_vec());
    client.send(FrameKind::Stdin, 1, b"world\n".to_vec());
    client.send(FrameKind::StdinClose, 1, Vec::new());
    let output = client.wait_exit(1);
    assert_eq!(output.stdout_text(), "hello world\n");
    assert_eq!(output.status.code, Some(0));
}

#[test]
fn large_stdin_round_trips() {
    let data = pseudo_random_bytes(3_000_000);
    let mut client = Client::in_process();
    let mut req = request(&["cat"]);
    req.stdin = true;
    client.exec(1, &req);
    for chunk in data.chunks(MAX_PAYLOAD / 2) {
        client.send(FrameKind::Stdin, 1, chunk.to_vec());
    }
    client.send(FrameKind::StdinClose, 1, Vec::new());
    let output = client.wait_exit(1);
    assert_eq!(output.stdout.len(), data.len());
    assert!(output.stdout == data, "stdout differs from stdin");
    assert_eq!(
        output.stdin_acked,
        data.len() as u64,
        "every stdin byte is acknowledged"
    );
}

#[test]
fn stdin_far_beyond_the_window_is_rejected() {
    let mut client = Client::in_process();
    // The command never reads, so the queue only grows.
    let mut req = request(&["sleep", "30"]);
    req.stdin = true;
    client.exec(1, &req);
    let chunk = vec![0u8; MAX_PAYLOAD / 2];
    for _ in 0..(2 * STDIN_WINDOW / chunk.len() + 2) {
        client.send(FrameKind::Stdin, 1, chunk.clone());
    }
    let error = client.next_frame_where(|frame| frame.kind == FrameKind::Error);
    let message = String::from_utf8(error.payload).unwrap();
    assert!(message.contains("wait for StdinAck"), "{message}");
    client.send_json(FrameKind::Signal, 1, &SignalRequest { signal: 9 });
    let exit = client.next_frame_where(|frame| frame.kind == FrameKind::Exit);
    let status: ExitStatus = decode_json(&exit.payload).unwrap();
    assert_eq!(status.signal, Some(9));
}

#[test]
fn large_binary_output_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    let data = pseudo_random_bytes(5_000_000);
    fs::write(&file, &data).unwrap();
    let mut client = Client::in_process();
    let output = client.run(1, &request(&["cat", file.to_str().unwrap()]));
    assert_eq!(output.status.code, Some(0));
    assert_eq!(output.stdout.len(), data.len());
    assert_eq!(Sha256::digest(&output.stdout), Sha256::digest(&data));
    assert!(output.frame_sizes.iter().all(|&size| size <= 64 * 1024));
}

#[test]
fn urandom_output_matches_its_checksum() {
    let mut client = Client::in_process();
    // The shell writes 5 MB of random bytes to stdout and their sha256 to stderr.
    let script = "head -c 5000000 /dev/urandom > \"$T/blob\" && cat \"$T/blob\" && sha256sum \"$T/blob\" >&2";
    let dir = tempfile::tempdir().unwrap();
    let mut req = sh(script);
    req.env = vec![("T".into(), dir.path().to_str().unwrap().into())];
    let output = client.run(1, &req);
    assert_eq!(output.status.code, Some(0), "{}", output.stderr_text());
    assert_eq!(output.stdout.len(), 5_000_000);
    let expected = output.stderr_text();
    let expected_hex = expected.split_whitespace().next().unwrap();
    let actual_hex: String = Sha256::digest(&output.stdout)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(actual_hex, expected_hex);
}

#[test]
fn concurrent_streams_stay_separate() {
    let mut client = Client::in_process();
    client.hello(5);
    client.exec(
        1,
        &sh("for i in 1 2 3 4 5; do echo a$i; sleep 0.05; done; exit 1"),
    );
    client.exec(
        2,
        &sh("for i in 1 2 3 4 5; do echo b$i >&2; sleep 0.05; done; exit 2"),
    );
    let first = client.wait_exit(1);
    let second = client.wait_exit(2);
    assert_eq!(first.stdout_text(), "a1\na2\na3\na4\na5\n");
    assert_eq!(first.stderr_text(), "");
    assert_eq!(first.status.code, Some(1));
    assert_eq!(second.stderr_text(), "b1\nb2\nb3\nb4\nb5\n");
    assert_eq!(second.stdout_text(), "");
    assert_eq!(second.status.code, Some(2));
}

#[test]
fn second_hello_ends_running_stream() {
    let mut client = Client::in_process();
    client.hello(1);
    client.exec(1, &sh("echo $$; exec sleep 100"));
    let pid_frame = client.next_frame_where(|frame| frame.kind == FrameKind::Stdout);
    let pid: u32 = String::from_utf8_lossy(&pid_frame.payload)
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    client.hello(2);
    // The waiter thread reaps the killed process, so its /proc entry goes away.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "sleep (pid {pid}) still runs after the second Hello"
        );
        thread_sleep(Duration::from_millis(20));
    }
    let late = client.frames_during(Duration::from_millis(500));
    assert!(
        late.iter().all(|frame| frame.stream != 1),
        "frames of the old stream after the new HelloAck: {late:?}"
    );

    // The stream id is free again in the new session.
    let output = client.run(1, &sh("echo again"));
    assert_eq!(output.stdout_text(), "again\n");
}

#[test]
fn background_process_holding_stdout_does_not_block_exit() {
    let mut client = Client::in_process();
    let started = Instant::now();
    let output = client.run(1, &sh("sleep 30 & echo done"));
    let elapsed = started.elapsed();
    assert_eq!(output.stdout_text(), "done\n");
    assert_eq!(output.status.code, Some(0));
    assert!(
        elapsed >= Duration::from_secs(2),
        "exit came after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "exit came after {elapsed:?}"
    );
}

#[test]
fn garbage_before_hello_is_skipped() {
    let mut client = Client::in_process();
    let mut garbage = pseudo_random_bytes(10_000);
    garbage.extend_from_slice(b"login: \x00\xffBNG");
    client.send_raw(&garbage);
    let ack = client.hello(77);
    assert_eq!(ack.nonce, 77);
    let output = client.run(1, &sh("echo still works"));
    assert_eq!(output.stdout_text(), "still works\n");
}

#[test]
fn invalid_requests_get_error_frames() {
    let mut client = Client::in_process();
    let cases: Vec<(FrameKind, u32, Vec<u8>, &str)> = vec![
        (
            FrameKind::ExecStart,
            4,
            b"{not json".to_vec(),
            "invalid ExecStart payload",
        ),
        (
            FrameKind::ExecStart,
            5,
            br#"{"argv":[]}"#.to_vec(),
            "argv is empty",
        ),
        (
            FrameKind::ExecStart,
            0,
            br#"{"argv":["true"]}"#.to_vec(),
            "stream 0 is reserved",
        ),
        (
            FrameKind::Stdin,
            6,
            b"data".to_vec(),
            "stream 6 has no running command",
        ),
        (
            FrameKind::Signal,
            7,
            br#"{"signal":15}"#.to_vec(),
            "stream 7 has no running command",
        ),
        (
            FrameKind::Signal,
            7,
            br#"{"signal":-1}"#.to_vec(),
            "invalid signal number -1",
        ),
        (
            FrameKind::Stdout,
            8,
            b"x".to_vec(),
            "only the agent sends this kind",
        ),
        (FrameKind::Hello, 0, b"{}".to_vec(), "invalid Hello payload"),
    ];
    for (kind, stream, payload, expected) in cases {
        client.send(kind, stream, payload);
        let error = client.next_frame_where(|frame| frame.kind == FrameKind::Error);
        let message = String::from_utf8(error.payload).unwrap();
        assert_eq!(error.stream, stream, "{kind:?}: {message}");
        assert!(message.contains(expected), "{kind:?}: {message}");
    }
}

#[test]
fn stdin_frames_for_command_without_stdin_are_rejected() {
    let mut client = Client::in_process();
    client.exec(1, &request(&["sleep", "1"]));
    client.send(FrameKind::Stdin, 1, b"x".to_vec());
    let error = client.next_frame_where(|frame| frame.kind == FrameKind::Error);
    let message = String::from_utf8(error.payload).unwrap();
    assert!(message.contains("without stdin"), "{message}");
    assert_eq!(client.wait_exit(1).status.code, Some(0));
}

#[test]
fn duplicate_stream_id_is_rejected() {
    let mut client = Client::in_process();
    client.exec(1, &request(&["sleep", "1"]));
    client.exec(1, &request(&["true"]));
    let error = client.next_frame_where(|frame| frame.kind == FrameKind::Error);
    let message = String::from_utf8(error.payload).unwrap();
    assert!(message.contains("already running"), "{message}");
    assert_eq!(client.wait_exit(1).status.code, Some(0));
}

#[test]
fn shutdown_is_acknowledged_then_handled() {
    let mut client = Client::in_process();
    client.send_json(
        FrameKind::Shutdown,
        0,
        &Shutdown {
            action: ShutdownAction::Reboot,
        },
    );
    client.next_frame_where(|frame| frame.kind == FrameKind::ShutdownAck);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.shutdowns.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "shutdown handler was not called");
        thread_sleep(Duration::from_millis(10));
    }
    assert_eq!(
        *client.shutdowns.lock().unwrap(),
        vec![ShutdownAction::Reboot]
    );
}

fn thread_sleep(duration: Duration) {
    std::thread::sleep(duration);
}
