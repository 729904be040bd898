//! Waiting for a booting guest.

use std::sync::Arc;
use std::time::Duration;

use banger_vmm::{VmProcess, Vmm};
use tokio::time::Instant;

use crate::agent::{AgentConn, AgentError};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("the VMM process exited during boot")]
    VmmExited,
    #[error("the guest agent did not answer within the boot timeout")]
    Timeout,
    #[error("the guest agent is incompatible")]
    Agent(#[source] AgentError),
    #[error("the client disconnected during the boot")]
    Abandoned,
}

/// Connects to the guest agent and completes the handshake, retrying until
/// `deadline`. Fails early when the VMM process dies or `abandoned` returns
/// true.
pub async fn wait_for_agent(
    vmm: &dyn Vmm,
    process: &VmProcess,
    deadline: Instant,
    abandoned: &(dyn Fn() -> bool + Sync),
) -> Result<Arc<AgentConn>, BootError> {
    loop {
        if !vmm.is_running(process) {
            return Err(BootError::VmmExited);
        }
        if abandoned() {
            return Err(BootError::Abandoned);
        }
        if Instant::now() >= deadline {
            return Err(BootError::Timeout);
        }
        let stream = match vmm.connect_agent(process).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "agent socket not ready");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Bound each attempt so a dead VMM is noticed within seconds.
        let attempt_deadline = deadline.min(Instant::now() + Duration::from_secs(5));
        match AgentConn::handshake(stream, attempt_deadline).await {
            Ok(conn) => return Ok(conn),
            Err(AgentError::Protocol { found, expected }) => {
                return Err(BootError::Agent(AgentError::Protocol { found, expected }));
            }
            Err(e) => {
                tracing::debug!(error = %e, "agent handshake not complete yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
