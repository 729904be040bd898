//! `POST /v1/vms/{name}/exec`: an upgraded connection that relays agent
//! frames between the CLI and one exec stream of the guest agent.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use banger_agent_proto::{
    Decoder, ExecRequest, Frame, FrameKind, SignalRequest, StdinAck, decode_json, encode,
    encode_json,
};
use banger_api::{EXEC_STREAM_HEADER, EXEC_UPGRADE};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::AgentConn;
use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

/// Working directory of commands that do not name one.
const DEFAULT_CWD: &str = "/root";

pub async fn exec(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let vm = daemon.running_vm(&name)?;
    let conn = daemon.connect_agent(&vm).await?;
    let (stream, from_agent) = conn.open_stream().map_err(|e| agent_lost(&vm.name, &e))?;
    let upgrade = hyper::upgrade::on(request);
    let vm_name = vm.name.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let relayed = relay(TokioIo::new(upgraded), conn, stream, from_agent).await;
                if let Err(e) = relayed {
                    tracing::info!(vm = %vm_name, error = %e, "exec session ended early");
                }
            }
            Err(e) => {
                conn.close_stream(stream);
                tracing::warn!(vm = %vm_name, error = %e, "exec upgrade failed");
            }
        }
    });
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, EXEC_UPGRADE)
        .header(EXEC_STREAM_HEADER, stream.to_string())
        .body(Body::empty())
        .expect("static response");
    Ok(response)
}

/// `POST /v1/vms/{name}/exec/{stream}/signal`: delivers a signal to the
/// command of an exec stream on its own connection. Frames on the exec
/// connection keep their order, so a signal sent there would wait behind
/// standard input that the command does not read.
pub async fn signal(
    State(daemon): State<Arc<Daemon>>,
    Path((name, stream)): Path<(String, u32)>,
    Json(request): Json<SignalRequest>,
) -> ApiResult<Json<()>> {
    let vm = daemon.running_vm(&name)?;
    let conn = daemon
        .agent(&vm.id)
        .await
        .filter(|conn| conn.has_stream(stream))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no command runs on exec stream {stream} of VM {name:?}"
            ))
        })?;
    conn.send(Frame::new(FrameKind::Signal, stream, encode_json(&request)))
        .map_err(|e| agent_lost(&name, &e))?;
    tracing::info!(vm = %name, stream, signal = request.signal, "signal forwarded");
    Ok(Json(()))
}

fn agent_lost(vm: &str, error: &crate::agent::AgentError) -> ApiError {
    ApiError::from_error(banger_api::ErrorKind::Unavailable, error)
        .context(format!("lost the connection to the agent of VM {vm:?}"))
        .hint(format!(
            "run the command again; if it fails again, restart the VM with `banger vm restart {vm}`"
        ))
}

impl Daemon {
    /// The live agent session of a running VM, reconnecting when it was lost
    /// (after a daemon restart, for one).
    pub async fn connect_agent(&self, vm: &banger_model::VmRecord) -> ApiResult<Arc<AgentConn>> {
        if let Some(conn) = self.agent(&vm.id).await {
            return Ok(conn);
        }
        let process = crate::vms::runtime_process(vm)
            .ok_or_else(|| ApiError::conflict(format!("VM {:?} has no process record", vm.name)))?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        let vmm = self.backend_of(&process)?;
        let conn = crate::boot::wait_for_agent(vmm.as_ref(), &process, deadline, &|| false)
            .await
            .map_err(|e| {
                ApiError::from_error(banger_api::ErrorKind::Internal, &e)
                    .context(format!("cannot reach the agent of VM {:?}", vm.name))
                    .hint(format!(
                        "restart it with `banger vm stop {0} && banger vm start {0}`",
                        vm.name
                    ))
            })?;
        self.set_agent(&vm.id, conn.clone()).await;
        Ok(conn)
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the client closed the connection before starting a command")]
    NoRequest,
    #[error("the first frame was not a valid exec request")]
    BadRequest,
    #[error("the agent connection failed")]
    Agent(#[from] crate::agent::AgentError),
    #[error("the client connection failed")]
    Client(#[from] std::io::Error),
}

async fn relay<S>(
    client: S,
    conn: Arc<AgentConn>,
    stream: u32,
    mut from_agent: tokio::sync::mpsc::Receiver<Frame>,
) -> Result<(), RelayError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];

    let mut request: ExecRequest = loop {
        if let Some(frame) = decoder.next_frame() {
            if frame.kind != FrameKind::ExecStart {
                return Err(RelayError::BadRequest);
            }
            break decode_json(&frame.payload).map_err(|_| RelayError::BadRequest)?;
        }
        let n = client_rx.read(&mut buf).await?;
        if n == 0 {
            return Err(RelayError::NoRequest);
        }
        decoder.push(&buf[..n]);
    };
    if request.cwd.is_none() {
        request.cwd = Some(DEFAULT_CWD.to_string());
    }
    tracing::info!(argv = ?request.argv, stream, "exec started");
    conn.send(Frame::new(
        FrameKind::ExecStart,
        stream,
        encode_json(&request),
    ))?;

    // With a window, stdin waits in `held` while the agent has `window`
    // unacknowledged bytes. The client is not read meanwhile, so a fast
    // writer is slowed down through its socket.
    // Frames keep their order, so a `Signal` sent here after stdin that the
    // command does not read waits behind it. The CLI therefore sends signals
    // through the `signal` route.
    let window = conn.stdin_window();
    let mut in_flight = 0usize;
    let mut held: Option<Frame> = None;
    let outcome = loop {
        // Frames the client already sent along with the request.
        while let Some(frame) = held.take().or_else(|| decoder.next_frame()) {
            match frame.kind {
                FrameKind::Stdin => {
                    let len = frame.payload.len();
                    if let Some(window) = window
                        && in_flight > 0
                        && in_flight + len > window
                    {
                        held = Some(frame);
                        break;
                    }
                    in_flight += len;
                    conn.send(Frame::new(frame.kind, stream, frame.payload))?;
                }
                FrameKind::StdinClose | FrameKind::Signal | FrameKind::Resize => {
                    conn.send(Frame::new(frame.kind, stream, frame.payload))?;
                }
                _ => {}
            }
        }
        tokio::select! {
            read = client_rx.read(&mut buf), if held.is_none() => match read {
                Ok(0) | Err(_) => {
                    break Err(RelayError::Client(std::io::ErrorKind::ConnectionAborted.into()));
                }
                Ok(n) => decoder.push(&buf[..n]),
            },
            frame = from_agent.recv() => match frame {
                Some(frame) if frame.kind == FrameKind::StdinAck => {
                    // Acknowledgements stay between the daemon and the agent.
                    match decode_json::<StdinAck>(&frame.payload) {
                        Ok(ack) => {
                            let acked = usize::try_from(ack.bytes).unwrap_or(usize::MAX);
                            in_flight = in_flight.saturating_sub(acked);
                        }
                        Err(error) => {
                            tracing::warn!(stream, %error, "invalid StdinAck from the agent");
                        }
                    }
                }
                Some(frame) => {
                    let last = matches!(frame.kind, FrameKind::Exit | FrameKind::Error);
                    let out = Frame::new(frame.kind, 0, frame.payload);
                    client_tx.write_all(&encode(&out).expect("agent frames fit")).await?;
                    if last {
                        if frame.kind == FrameKind::Exit {
                            tracing::info!(stream, status = %String::from_utf8_lossy(&out.payload), "exec ended");
                        }
                        break Ok(());
                    }
                }
                None => {
                    let error = Frame::new(
                        FrameKind::Error,
                        0,
                        b"lost the connection to the guest agent".to_vec(),
                    );
                    let _ = client_tx.write_all(&encode(&error).expect("small frame")).await;
                    break Err(RelayError::Agent(crate::agent::AgentError::Closed));
                }
            },
        }
    };
    if outcome.is_err() {
        // The client is gone: end the command like a closed terminal would.
        let kill = banger_agent_proto::SignalRequest {
            signal: libc::SIGKILL,
        };
        let _ = conn.send(Frame::new(FrameKind::Signal, stream, encode_json(&kill)));
    }
    conn.close_stream(stream);
    let _ = client_tx.shutdown().await;
    outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use banger_agent_proto::{ExitStatus, HelloAck, STDIN_WINDOW};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::UnixStream;

    use super::*;

    /// Connects an `AgentConn` to the real agent code serving on a socket
    /// pair in this process.
    async fn real_agent() -> Arc<AgentConn> {
        let (host_end, agent_end) = std::os::unix::net::UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let options = banger_agent::serve::ConnectionOptions {
                end_of_input: banger_agent::serve::EndOfInput::Close,
                shutdown: Arc::new(|_| {}),
            };
            let writer = agent_end.try_clone().unwrap();
            let _ = banger_agent::serve::serve_connection(agent_end, writer, &options);
        });
        host_end.set_nonblocking(true).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        AgentConn::handshake(UnixStream::from_std(host_end).unwrap(), deadline)
            .await
            .unwrap()
    }

    /// Opens a stream on `conn` and relays `relay_end` to it, as the exec
    /// route does.
    fn start_relay(
        relay_end: DuplexStream,
        conn: Arc<AgentConn>,
    ) -> tokio::task::JoinHandle<Result<(), RelayError>> {
        let (stream, from_agent) = conn.open_stream().unwrap();
        tokio::spawn(relay(relay_end, conn, stream, from_agent))
    }

    fn exec_frame(argv: &[&str]) -> Vec<u8> {
        let request = ExecRequest {
            argv: argv.iter().map(|arg| arg.to_string()).collect(),
            stdin: true,
            ..ExecRequest::default()
        };
        encode(&Frame::new(FrameKind::ExecStart, 0, encode_json(&request))).unwrap()
    }

    /// Writes `total` bytes of stdin in 1 MiB frames, then closes stdin.
    async fn write_stdin(mut client: tokio::io::WriteHalf<DuplexStream>, total: usize) {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0;
        while sent < total {
            let len = chunk.len().min(total - sent);
            let frame = Frame::new(FrameKind::Stdin, 0, chunk[..len].to_vec());
            if client.write_all(&encode(&frame).unwrap()).await.is_err() {
                return;
            }
            sent += len;
        }
        let close = Frame::empty(FrameKind::StdinClose, 0);
        let _ = client.write_all(&encode(&close).unwrap()).await;
    }

    /// Reads frames from the relay until `Exit`; returns stdout and the status.
    async fn read_until_exit(
        mut client: tokio::io::ReadHalf<DuplexStream>,
    ) -> (Vec<u8>, ExitStatus) {
        let mut decoder = Decoder::new();
        let mut stdout = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(frame) = decoder.next_frame() {
                match frame.kind {
                    FrameKind::Stdout => stdout.extend(frame.payload),
                    FrameKind::Exit => return (stdout, decode_json(&frame.payload).unwrap()),
                    FrameKind::StdinAck => panic!("the relay passed a StdinAck to the client"),
                    _ => {}
                }
            }
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the relay closed before Exit");
            decoder.push(&buf[..n]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signal_on_its_own_path_passes_held_stdin() {
        let conn = real_agent().await;
        let (client, relay_end) = tokio::io::duplex(256 * 1024);
        let (stream, from_agent) = conn.open_stream().unwrap();
        let relay_task = tokio::spawn(relay(relay_end, conn.clone(), stream, from_agent));
        let (reader, mut writer) = tokio::io::split(client);
        // `sleep` never reads its stdin, so the relay keeps what exceeds the
        // window and stops reading the client.
        writer
            .write_all(&exec_frame(&["sleep", "600"]))
            .await
            .unwrap();
        tokio::spawn(write_stdin(writer, 4 * STDIN_WINDOW));
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The signal route sends straight to the agent's stream.
        let request = banger_agent_proto::SignalRequest {
            signal: libc::SIGTERM,
        };
        assert!(conn.has_stream(stream));
        conn.send(Frame::new(FrameKind::Signal, stream, encode_json(&request)))
            .unwrap();
        let (_, status) = tokio::time::timeout(Duration::from_secs(30), read_until_exit(reader))
            .await
            .expect("the signal did not reach the command");
        assert_eq!(status.signal, Some(libc::SIGTERM), "{status:?}");
        relay_task.await.unwrap().unwrap();
        assert!(!conn.has_stream(stream));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stdin_larger_than_the_window_reaches_the_agent() {
        let conn = real_agent().await;
        assert_eq!(conn.stdin_window(), Some(STDIN_WINDOW));
        let (client, relay_end) = tokio::io::duplex(256 * 1024);
        let relay_task = start_relay(relay_end, conn);
        let (reader, mut writer) = tokio::io::split(client);
        writer.write_all(&exec_frame(&["wc", "-c"])).await.unwrap();
        let total = 3 * STDIN_WINDOW + 12345;
        tokio::spawn(write_stdin(writer, total));
        let (stdout, status) =
            tokio::time::timeout(Duration::from_secs(60), read_until_exit(reader))
                .await
                .expect("the command got all its stdin and exited");
        assert_eq!(status.code, Some(0));
        assert_eq!(String::from_utf8(stdout).unwrap().trim(), total.to_string());
        relay_task.await.unwrap().unwrap();
    }

    /// An agent that answers the handshake, counts stdin bytes and sends a
    /// `StdinAck` only for each size the test puts on `acks` (0 sends Exit).
    async fn silent_agent(
        socket: UnixStream,
        received: Arc<std::sync::atomic::AtomicUsize>,
        mut acks: tokio::sync::mpsc::Receiver<u64>,
    ) {
        use std::sync::atomic::Ordering;
        let (mut reader, mut writer) = socket.into_split();
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut stream = 0;
        loop {
            while let Some(frame) = decoder.next_frame() {
                match frame.kind {
                    FrameKind::Hello => {
                        let hello: banger_agent_proto::Hello = decode_json(&frame.payload).unwrap();
                        let ack = HelloAck {
                            nonce: hello.nonce,
                            protocol: banger_agent_proto::PROTOCOL_VERSION,
                            agent_version: "test".into(),
                            kernel_release: "test".into(),
                        };
                        let reply = Frame::new(FrameKind::HelloAck, 0, encode_json(&ack));
                        writer.write_all(&encode(&reply).unwrap()).await.unwrap();
                    }
                    FrameKind::ExecStart => stream = frame.stream,
                    FrameKind::Stdin => {
                        received.fetch_add(frame.payload.len(), Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => decoder.push(&buf[..n]),
                },
                Some(bytes) = acks.recv() => {
                    let frame = if bytes == 0 {
                        let status = ExitStatus {
                            code: Some(0),
                            signal: None,
                            error: None,
                        };
                        Frame::new(FrameKind::Exit, stream, encode_json(&status))
                    } else {
                        Frame::new(FrameKind::StdinAck, stream, encode_json(&StdinAck { bytes }))
                    };
                    writer.write_all(&encode(&frame).unwrap()).await.unwrap();
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unacknowledged_stdin_stops_at_the_window() {
        use std::sync::atomic::Ordering;
        let (host_end, agent_end) = UnixStream::pair().unwrap();
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (ack_tx, ack_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(silent_agent(agent_end, received.clone(), ack_rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let conn = AgentConn::handshake(host_end, deadline).await.unwrap();

        let (client, relay_end) = tokio::io::duplex(256 * 1024);
        let relay_task = start_relay(relay_end, conn);
        let (reader, mut writer) = tokio::io::split(client);
        writer.write_all(&exec_frame(&["cat"])).await.unwrap();
        tokio::spawn(write_stdin(writer, 3 * STDIN_WINDOW));

        // Without acknowledgements the relay stops at the window.
        let settle = |expected: usize| {
            let received = received.clone();
            async move {
                for _ in 0..100 {
                    if received.load(Ordering::SeqCst) >= expected {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Whatever else was going to arrive has had time to.
                tokio::time::sleep(Duration::from_millis(300)).await;
                received.load(Ordering::SeqCst)
            }
        };
        let first = settle(STDIN_WINDOW).await;
        assert_eq!(first, STDIN_WINDOW, "bytes sent before any acknowledgement");

        // An acknowledgement of 2 MiB lets exactly 2 MiB more through.
        ack_tx.send(2 << 20).await.unwrap();
        let second = settle(STDIN_WINDOW + (2 << 20)).await;
        assert_eq!(second, STDIN_WINDOW + (2 << 20));

        ack_tx.send(0).await.unwrap();
        let (_, status) = tokio::time::timeout(Duration::from_secs(10), read_until_exit(reader))
            .await
            .unwrap();
        assert_eq!(status.code, Some(0));
        relay_task.await.unwrap().unwrap();
    }
}
