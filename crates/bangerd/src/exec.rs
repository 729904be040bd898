//! `POST /v1/vms/{name}/exec`: an upgraded connection that relays agent
//! frames between the CLI and one exec stream of the guest agent.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use banger_agent_proto::{
    Decoder, ExecRequest, Frame, FrameKind, decode_json, encode, encode_json,
};
use banger_api::EXEC_UPGRADE;
use banger_model::VmState;
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
    let vm = daemon.vm_record(&name)?;
    if vm.state != VmState::Running {
        return Err(
            ApiError::conflict(format!("VM {name:?} is {}, not running", vm.state))
                .hint(format!("start it with `banger vm start {name}`")),
        );
    }
    let conn = daemon.connect_agent(&vm).await?;
    let upgrade = hyper::upgrade::on(request);
    let vm_name = vm.name.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = relay(TokioIo::new(upgraded), conn).await {
                    tracing::info!(vm = %vm_name, error = %e, "exec session ended early");
                }
            }
            Err(e) => tracing::warn!(vm = %vm_name, error = %e, "exec upgrade failed"),
        }
    });
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, EXEC_UPGRADE)
        .body(Body::empty())
        .expect("static response");
    Ok(response)
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
        let conn = crate::boot::wait_for_agent(vmm.as_ref(), &process, deadline)
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

async fn relay<S>(client: S, conn: Arc<AgentConn>) -> Result<(), RelayError>
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
    let (stream, mut from_agent) = conn.open_stream()?;
    tracing::info!(argv = ?request.argv, stream, "exec started");
    conn.send(Frame::new(
        FrameKind::ExecStart,
        stream,
        encode_json(&request),
    ))?;

    let outcome = loop {
        // Frames the client already sent along with the request.
        while let Some(frame) = decoder.next_frame() {
            if matches!(
                frame.kind,
                FrameKind::Stdin | FrameKind::StdinClose | FrameKind::Signal | FrameKind::Resize
            ) {
                conn.send(Frame::new(frame.kind, stream, frame.payload))?;
            }
        }
        tokio::select! {
            read = client_rx.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    break Err(RelayError::Client(std::io::ErrorKind::ConnectionAborted.into()));
                }
                Ok(n) => decoder.push(&buf[..n]),
            },
            frame = from_agent.recv() => match frame {
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
