//! Running a command in a guest through the daemon's exec route.

use std::io::{IsTerminal, Write};

use banger_agent_proto::{
    Decoder, ExecRequest, ExitStatus, Frame, FrameKind, SignalRequest, decode_json, encode,
    encode_json,
};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, error_from};
use crate::render::CliError;

/// Stdin bytes per frame.
const STDIN_CHUNK: usize = 64 * 1024;

/// Runs `argv` in VM `name` with this process's stdio and returns how it ended.
/// Standard input is forwarded unless it is a terminal (interactive sessions
/// need a pty, which this path does not allocate).
pub async fn run(client: &Client, name: &str, argv: Vec<String>) -> Result<ExitStatus, CliError> {
    let forward_stdin = !std::io::stdin().is_terminal();
    let response = client
        .send(
            Method::POST,
            &format!("/vms/{name}/exec"),
            None,
            Some(banger_api::EXEC_UPGRADE),
        )
        .await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(error_from(response).await);
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| CliError::local("the exec connection failed").cause(e.to_string()))?;
    let (mut rx, mut tx) = tokio::io::split(TokioIo::new(upgraded));

    let request = ExecRequest {
        argv,
        env: Vec::new(),
        cwd: None,
        stdin: forward_stdin,
        ..Default::default()
    };
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    frames_tx
        .send(Frame::new(FrameKind::ExecStart, 0, encode_json(&request)))
        .expect("receiver alive");
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            let Ok(bytes) = encode(&frame) else { continue };
            if tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    if forward_stdin {
        let stdin_tx = frames_tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin_tx
                            .send(Frame::new(FrameKind::Stdin, 0, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = stdin_tx.send(Frame::empty(FrameKind::StdinClose, 0));
        });
    }
    spawn_signal_forwarding(frames_tx.clone());

    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let status = loop {
        while let Some(frame) = decoder.next_frame() {
            match frame.kind {
                FrameKind::Stdout => write_through(&mut stdout, &frame.payload)?,
                FrameKind::Stderr => {
                    let _ = stderr.write_all(&frame.payload);
                    let _ = stderr.flush();
                }
                FrameKind::Exit => {
                    let status: ExitStatus = decode_json(&frame.payload).map_err(|e| {
                        CliError::local("the guest agent sent an invalid exit status")
                            .cause(e.to_string())
                    })?;
                    writer.abort();
                    return Ok(status);
                }
                FrameKind::Error => {
                    return Err(CliError::local(format!(
                        "the command failed in the guest: {}",
                        String::from_utf8_lossy(&frame.payload)
                    )));
                }
                _ => {}
            }
        }
        let n = rx
            .read(&mut buf)
            .await
            .map_err(|e| CliError::local("the exec connection failed").cause(e.to_string()))?;
        if n == 0 {
            break Err(CliError::local(
                "the daemon closed the exec connection before the command ended",
            ));
        }
        decoder.push(&buf[..n]);
    };
    writer.abort();
    status
}

/// Writes guest output to stdout; a closed pipe (`| head`) ends quietly.
fn write_through(stdout: &mut std::io::Stdout, bytes: &[u8]) -> Result<(), CliError> {
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::local("failed to write to stdout").cause(e.to_string())),
    }
}

/// Forwards Ctrl-C, SIGTERM and SIGHUP to the guest command instead of
/// leaving it running when the CLI dies.
fn spawn_signal_forwarding(frames: tokio::sync::mpsc::UnboundedSender<Frame>) {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, number) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let frames = frames.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let request = SignalRequest { signal: number };
                if frames
                    .send(Frame::new(FrameKind::Signal, 0, encode_json(&request)))
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}
