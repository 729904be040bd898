//! One interface for the daemon, whether it runs the operations itself (as
//! root) or sends them to `banger-root`.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use super::client::{ClientError, HelperClient};
use super::executor::{ExecuteError, Executor};
use super::protocol::{
    DeleteTapResult, DisableNatResult, ErrorInfo, Operation, Request, RouteDnsResult,
    SweepNatResult,
};
use crate::link::{BridgeState, TapState};
use crate::nat::NatState;

#[derive(Debug, Error)]
pub enum NetError {
    #[error(transparent)]
    Local(#[from] ExecuteError),
    #[error(transparent)]
    Helper(#[from] ClientError),
    #[error("the result of {op} has an unexpected shape")]
    Decode {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl NetError {
    /// Converts the error to message and hint, whichever side it came from.
    pub fn to_error_info(&self) -> ErrorInfo {
        match self {
            NetError::Local(error) => error.to_error_info(),
            NetError::Helper(ClientError::Failed { op, error }) => ErrorInfo {
                message: format!("{op} failed in banger-root: {}", error.message),
                hint: error.hint.clone(),
            },
            other => ErrorInfo {
                message: crate::error_chain(other),
                hint: None,
            },
        }
    }
}

/// Runner of privileged network operations: this process or `banger-root`.
pub enum NetBackend {
    /// In this process, which must be root.
    Local(Executor),
    /// In `banger-root`, through its socket.
    Helper(HelperClient),
}

impl NetBackend {
    /// Runs `request` and returns its JSON result.
    pub async fn call(&self, request: &Request) -> Result<Value, NetError> {
        match self {
            NetBackend::Local(executor) => Ok(executor.execute(request).await?),
            NetBackend::Helper(client) => Ok(client.call(request).await?),
        }
    }

    pub async fn ensure_bridge(&self, op_id: &str) -> Result<BridgeState, NetError> {
        self.typed(op_id, Operation::EnsureBridge).await
    }

    pub async fn create_tap(&self, op_id: &str, name: &str) -> Result<TapState, NetError> {
        let name = name.to_owned();
        self.typed(op_id, Operation::CreateTap { name }).await
    }

    pub async fn delete_tap(&self, op_id: &str, name: &str) -> Result<DeleteTapResult, NetError> {
        let name = name.to_owned();
        self.typed(op_id, Operation::DeleteTap { name }).await
    }

    pub async fn enable_nat(
        &self,
        op_id: &str,
        vm_id: &str,
        address: Ipv4Addr,
    ) -> Result<NatState, NetError> {
        let vm_id = vm_id.to_owned();
        self.typed(op_id, Operation::EnableNat { vm_id, address })
            .await
    }

    pub async fn disable_nat(
        &self,
        op_id: &str,
        vm_id: &str,
    ) -> Result<DisableNatResult, NetError> {
        let vm_id = vm_id.to_owned();
        self.typed(op_id, Operation::DisableNat { vm_id }).await
    }

    pub async fn sweep_nat(
        &self,
        op_id: &str,
        keep: &[String],
    ) -> Result<SweepNatResult, NetError> {
        let keep = keep.to_vec();
        self.typed(op_id, Operation::SweepNat { keep }).await
    }

    pub async fn route_dns(&self, op_id: &str, port: u16) -> Result<RouteDnsResult, NetError> {
        self.typed(op_id, Operation::RouteDns { port }).await
    }

    pub async fn unroute_dns(&self, op_id: &str) -> Result<RouteDnsResult, NetError> {
        self.typed(op_id, Operation::UnrouteDns).await
    }

    async fn typed<T: DeserializeOwned>(
        &self,
        op_id: &str,
        operation: Operation,
    ) -> Result<T, NetError> {
        let op = operation.name();
        let value = self.call(&Request::new(op_id, operation)).await?;
        serde_json::from_value(value).map_err(|source| NetError::Decode { op, source })
    }
}
