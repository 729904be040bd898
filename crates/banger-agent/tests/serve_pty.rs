//! Commands started with `ExecRequest::tty` run on a pseudo-terminal: the
//! serve loop driven over a Unix socket pair, with real commands.

mod common;

use banger_agent_proto::{FrameKind, TtySize, encode_json};
use common::{Client, sh};

#[test]
fn tty_command_sees_terminal_and_merged_output() {
    let mut client = Client::in_process();
    client.hello(1);
    let mut request = sh("test -t 0 && test -t 1 && echo on-tty; stty size; echo err >&2; exit 3");
    request.tty = Some(TtySize { rows: 24, cols: 80 });
    let output = client.run(1, &request);
    let text = output.stdout_text();
    assert!(text.contains("on-tty\r\n"), "{text:?}");
    assert!(text.contains("24 80\r\n"), "{text:?}");
    assert!(
        text.contains("err\r\n"),
        "stderr goes to the terminal: {text:?}"
    );
    assert!(output.stderr.is_empty(), "{:?}", output.stderr_text());
    assert_eq!(output.status.code, Some(3));
}

#[test]
fn tty_stdin_and_resize_reach_the_command() {
    let mut client = Client::in_process();
    client.hello(1);
    // The shell reads one line, then reports the size after a SIGWINCH.
    let mut request = sh("read line; echo \"got $line\"; \
         trap 'stty size; exit 0' WINCH; echo waiting; while :; do sleep 0.05; done");
    request.tty = Some(TtySize { rows: 10, cols: 40 });
    client.exec(2, &request);
    client.send(FrameKind::Stdin, 2, b"hello\r".to_vec());
    client.next_frame_where(|frame| {
        frame.kind == FrameKind::Stdout
            && String::from_utf8_lossy(&frame.payload).contains("waiting")
    });
    client.send(
        FrameKind::Resize,
        2,
        encode_json(&TtySize {
            rows: 52,
            cols: 160,
        }),
    );
    let output = client.wait_exit(2);
    let text = output.stdout_text();
    assert!(text.contains("52 160"), "{text:?}");
    assert_eq!(output.status.code, Some(0));
}

#[test]
fn resize_without_tty_is_rejected() {
    let mut client = Client::in_process();
    client.hello(1);
    client.exec(3, &sh("sleep 1"));
    client.send(
        FrameKind::Resize,
        3,
        encode_json(&TtySize { rows: 1, cols: 1 }),
    );
    let error = client.next_frame_where(|frame| frame.kind == FrameKind::Error);
    let message = String::from_utf8_lossy(&error.payload);
    assert!(message.contains("stream 3 has no terminal"), "{message}");
    let output = client.wait_exit(3);
    assert_eq!(output.status.code, Some(0));
}
