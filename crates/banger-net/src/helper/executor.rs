//! Runs helper operations in the calling process. `banger-root` uses it for
//! every request it accepts; a daemon that runs as root can use it directly.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::Mutex;

use super::protocol::{
    DeleteTapResult, DisableNatResult, ErrorInfo, Operation, Request, RouteDnsResult,
    SweepNatResult,
};
use super::validate::{HelperConfig, RequestError, validate_request};
use crate::command::{CommandError, CommandRunner};
use crate::link::{LinkError, Netlink};
use crate::names::NameError;
use crate::nat::{Nat, NatError};
use crate::resolved::{self, ResolvedError};

#[derive(Debug, Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error("invalid helper configuration")]
    Config(#[source] NameError),
    #[error("{op} failed")]
    Link {
        op: &'static str,
        #[source]
        source: Box<LinkError>,
    },
    #[error("{op} failed")]
    Nat {
        op: &'static str,
        #[source]
        source: NatError,
    },
    #[error("{op} failed")]
    Resolved {
        op: &'static str,
        #[source]
        source: ResolvedError,
    },
    #[error("encoding the result of {op} failed")]
    Encode {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ExecuteError {
    /// Returns what the caller should do about the error, when there is more
    /// to say than the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            ExecuteError::Invalid(error) => error.hint(),
            ExecuteError::Config(_) => Some("fix the configuration file and restart banger-root".to_owned()),
            ExecuteError::Link { source, .. } if is_permission_error(source) => Some(
                "network devices can only be changed as root or with CAP_NET_ADMIN; run banger-root as root".to_owned(),
            ),
            ExecuteError::Nat {
                source:
                    NatError::Nft {
                        source: CommandError::NotFound { .. },
                        ..
                    },
                ..
            } => Some("install nftables (on Debian: apt-get install nftables)".to_owned()),
            ExecuteError::Resolved { .. } => Some(
                "without systemd-resolved, send queries for the vm domain to banger's DNS server in the host resolver's configuration"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The error as the helper sends it: the whole cause chain and the hint.
    pub fn to_error_info(&self) -> ErrorInfo {
        ErrorInfo {
            message: crate::error_chain(self),
            hint: self.hint(),
        }
    }
}

fn is_permission_error(error: &LinkError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        if let Some(rtnetlink::Error::NetlinkError(message)) =
            cause.downcast_ref::<rtnetlink::Error>()
            && message.raw_code().abs() == libc::EPERM
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Runs validated operations on the configured bridge, pool and uplink.
/// Operations run one at a time, so concurrent requests cannot interleave
/// their netlink and nftables steps.
pub struct Executor {
    config: HelperConfig,
    runner: Arc<dyn CommandRunner>,
    lock: Mutex<()>,
}

impl Executor {
    pub fn new(config: HelperConfig, runner: Arc<dyn CommandRunner>) -> Result<Self, ExecuteError> {
        config.validate().map_err(ExecuteError::Config)?;
        Ok(Self {
            config,
            runner,
            lock: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &HelperConfig {
        &self.config
    }

    /// Validates `request` and runs it. Returns the operation's result as
    /// JSON; the result types are listed on [`Operation`].
    pub async fn execute(&self, request: &Request) -> Result<Value, ExecuteError> {
        validate_request(request, &self.config)?;
        let _guard = self.lock.lock().await;
        let op = request.operation.name();
        let config = &self.config;
        match &request.operation {
            Operation::EnsureBridge => {
                let netlink = connect(op)?;
                let state = netlink
                    .ensure_bridge(&config.bridge, &config.pool)
                    .await
                    .map_err(|source| link_error(op, source))?;
                encode(op, &state)
            }
            Operation::CreateTap { name } => {
                let netlink = connect(op)?;
                let state = netlink
                    .create_tap(name, config.owner_uid, &config.bridge)
                    .await
                    .map_err(|source| link_error(op, source))?;
                encode(op, &state)
            }
            Operation::DeleteTap { name } => {
                let netlink = connect(op)?;
                let deleted = netlink
                    .delete_tap(name)
                    .await
                    .map_err(|source| link_error(op, source))?;
                let name = name.clone();
                encode(op, &DeleteTapResult { name, deleted })
            }
            Operation::EnableNat { vm_id, address } => {
                let uplink = self.uplink(op).await?;
                let state = self
                    .nat(op)?
                    .enable(vm_id, *address, &uplink)
                    .await
                    .map_err(|source| ExecuteError::Nat { op, source })?;
                encode(op, &state)
            }
            Operation::DisableNat { vm_id } => {
                let removed = self
                    .nat(op)?
                    .disable(vm_id)
                    .await
                    .map_err(|source| ExecuteError::Nat { op, source })?;
                let vm_id = vm_id.clone();
                encode(op, &DisableNatResult { vm_id, removed })
            }
            Operation::SweepNat { keep } => {
                let removed = self
                    .nat(op)?
                    .sweep(keep)
                    .await
                    .map_err(|source| ExecuteError::Nat { op, source })?;
                encode(op, &SweepNatResult { removed })
            }
            Operation::RouteDns { port } => {
                resolved::route_vm_domain(self.runner.as_ref(), &config.bridge, *port)
                    .await
                    .map_err(|source| ExecuteError::Resolved { op, source })?;
                let result = RouteDnsResult {
                    link: config.bridge.clone(),
                    server: Some(format!("127.0.0.1:{port}")),
                };
                encode(op, &result)
            }
            Operation::UnrouteDns => {
                resolved::unroute_vm_domain(self.runner.as_ref(), &config.bridge)
                    .await
                    .map_err(|source| ExecuteError::Resolved { op, source })?;
                let result = RouteDnsResult {
                    link: config.bridge.clone(),
                    server: None,
                };
                encode(op, &result)
            }
        }
    }

    fn nat(&self, op: &'static str) -> Result<Nat<'_>, ExecuteError> {
        Nat::new(self.runner.as_ref(), &self.config.bridge, self.config.pool)
            .map_err(|source| ExecuteError::Nat { op, source })
    }

    async fn uplink(&self, op: &'static str) -> Result<String, ExecuteError> {
        if let Some(uplink) = &self.config.uplink {
            return Ok(uplink.clone());
        }
        connect(op)?
            .default_route_interface()
            .await
            .map_err(|source| link_error(op, source))
    }
}

fn connect(op: &'static str) -> Result<Netlink, ExecuteError> {
    Netlink::connect().map_err(|source| link_error(op, source))
}

fn encode(op: &'static str, value: &impl Serialize) -> Result<Value, ExecuteError> {
    serde_json::to_value(value).map_err(|source| ExecuteError::Encode { op, source })
}

fn link_error(op: &'static str, source: LinkError) -> ExecuteError {
    ExecuteError::Link {
        op,
        source: Box::new(source),
    }
}
