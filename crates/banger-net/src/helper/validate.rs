//! Parsing and checking of helper requests against the helper's
//! configuration. Nothing here touches the system.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::protocol::{MAX_REQUEST_BYTES, Operation, Request};
use crate::names::{
    DEFAULT_BRIDGE, NameError, validate_bridge_name, validate_tap_name, validate_uplink_name,
    validate_vm_id,
};
use crate::pool::{Pool, PoolError};

/// Maximum length of an operation id.
pub const MAX_OP_ID_LEN: usize = 64;

/// Owner uid, bridge, pool and uplink that the operations act on. The
/// helper reads them from its configuration file, and a daemon running as
/// root builds them from its own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperConfig {
    /// The only non-root uid the helper serves, and the owner of new taps.
    pub owner_uid: u32,
    pub bridge: String,
    pub pool: Pool,
    /// Interface NAT masquerades out of; the default route's interface when
    /// `None`.
    pub uplink: Option<String>,
}

impl HelperConfig {
    /// Configuration with the default bridge and pool.
    pub fn new(owner_uid: u32) -> Self {
        Self {
            owner_uid,
            bridge: DEFAULT_BRIDGE.to_owned(),
            pool: Pool::default(),
            uplink: None,
        }
    }

    /// Checks the bridge and uplink names.
    pub fn validate(&self) -> Result<(), NameError> {
        validate_bridge_name(&self.bridge)?;
        if let Some(uplink) = &self.uplink {
            validate_uplink_name(uplink)?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("request is {len} bytes, more than the limit of {MAX_REQUEST_BYTES}")]
    TooLarge { len: usize },
    #[error("invalid request JSON")]
    Json(#[source] serde_json::Error),
    #[error(
        "invalid op_id {op_id:?}: expected 1 to {MAX_OP_ID_LEN} ASCII letters, digits, '.', '_', ':' or '-'"
    )]
    OpId { op_id: String },
    #[error("invalid {op} request")]
    Name {
        op: &'static str,
        #[source]
        source: NameError,
    },
    #[error("invalid {op} request")]
    Address {
        op: &'static str,
        #[source]
        source: PoolError,
    },
    #[error("invalid route_dns request: port 0 is not a port banger's DNS server can listen on")]
    PortZero,
}

impl RequestError {
    /// Returns what the sender should do about the error.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            RequestError::TooLarge { .. } | RequestError::Json(_) => {
                "send one JSON object such as {\"op_id\": \"1f2e3d4c\", \"operation\": {\"op\": \"ensure_bridge\"}}; \
                 op is one of ensure_bridge, create_tap, delete_tap, enable_nat, disable_nat, sweep_nat, route_dns, unroute_dns"
            }
            RequestError::OpId { .. } => "send the daemon's operation id, such as 1f2e3d4c",
            RequestError::Name { .. } => {
                "bridge names start with \"banger\", tap names with \"bgt\", VM ids are 12 lowercase hex digits, \
                 and device names have at most 15 bytes of [a-z0-9-]"
            }
            RequestError::Address { .. } => {
                "use a VM address of the configured pool, in the range the message names"
            }
            RequestError::PortZero => "send the port the DNS server is bound to",
        };
        Some(hint.to_owned())
    }
}

/// Parses one request. Unknown fields and operations are errors.
pub fn parse_request(bytes: &[u8]) -> Result<Request, RequestError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge { len: bytes.len() });
    }
    serde_json::from_slice(bytes).map_err(RequestError::Json)
}

/// Checks the operation id and every argument of `request` against
/// `config`: device name prefixes and lengths, VM ids, and addresses inside
/// the pool.
pub fn validate_request(request: &Request, config: &HelperConfig) -> Result<(), RequestError> {
    validate_op_id(&request.op_id)?;
    let op = request.operation.name();
    let name_error = |source| RequestError::Name { op, source };
    match &request.operation {
        Operation::EnsureBridge | Operation::UnrouteDns => {}
        Operation::CreateTap { name } | Operation::DeleteTap { name } => {
            validate_tap_name(name).map_err(name_error)?;
        }
        Operation::EnableNat { vm_id, address } => {
            validate_vm_id(vm_id).map_err(name_error)?;
            config
                .pool
                .check_leasable(*address)
                .map_err(|source| RequestError::Address { op, source })?;
        }
        Operation::DisableNat { vm_id } => validate_vm_id(vm_id).map_err(name_error)?,
        Operation::SweepNat { keep } => {
            for vm_id in keep {
                validate_vm_id(vm_id).map_err(name_error)?;
            }
        }
        Operation::RouteDns { port } => {
            if *port == 0 {
                return Err(RequestError::PortZero);
            }
        }
    }
    Ok(())
}

fn validate_op_id(op_id: &str) -> Result<(), RequestError> {
    let valid = !op_id.is_empty()
        && op_id.len() <= MAX_OP_ID_LEN
        && op_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(RequestError::OpId {
            op_id: op_id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
