//! Requests and responses of the privileged helper `banger-root`.
//!
//! One JSON request per connection, then one JSON response:
//!
//! ```json
//! {"op_id": "1f2e3d4c", "operation": {"op": "create_tap", "name": "bgt0123456789ab"}}
//! {"ok": true, "result": {"name": "bgt0123456789ab", "index": 7, ...}}
//! {"ok": false, "error": {"message": "...", "hint": "..."}}
//! ```

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Socket path of the helper when its configuration names none.
pub const DEFAULT_SOCKET_PATH: &str = "/run/banger/root.sock";

/// Configuration file of the helper, written at install time.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/banger/root.toml";

/// Largest request the helper reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest response the client reads, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// One request: the daemon's operation id, for the log, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub op_id: String,
    pub operation: Operation,
}

impl Request {
    pub fn new(op_id: impl Into<String>, operation: Operation) -> Self {
        Self {
            op_id: op_id.into(),
            operation,
        }
    }
}

/// What the helper can do. Device names are checked against banger's
/// prefixes and addresses against the configured pool before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Create the configured bridge unless it exists, with the pool's
    /// gateway address, and bring it up. Result: [`crate::link::BridgeState`].
    EnsureBridge,
    /// Create tap `name` owned by the owner uid and attach it to the bridge.
    /// Result: [`crate::link::TapState`].
    CreateTap { name: String },
    /// Delete tap `name`. Result: [`DeleteTapResult`].
    DeleteTap { name: String },
    /// Masquerade the VM's traffic out of the uplink. Result:
    /// [`crate::nat::NatState`].
    EnableNat { vm_id: String, address: Ipv4Addr },
    /// Remove the VM's NAT rules. Result: [`DisableNatResult`].
    DisableNat { vm_id: String },
    /// Remove the NAT rules of every VM not in `keep`. Result:
    /// [`SweepNatResult`].
    SweepNat { keep: Vec<String> },
    /// Route the `vm` DNS domain to `127.0.0.1:port` through
    /// systemd-resolved. Result: [`RouteDnsResult`].
    RouteDns { port: u16 },
    /// Undo [`Operation::RouteDns`]. Result: [`RouteDnsResult`].
    UnrouteDns,
}

impl Operation {
    /// The `op` tag, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::EnsureBridge => "ensure_bridge",
            Operation::CreateTap { .. } => "create_tap",
            Operation::DeleteTap { .. } => "delete_tap",
            Operation::EnableNat { .. } => "enable_nat",
            Operation::DisableNat { .. } => "disable_nat",
            Operation::SweepNat { .. } => "sweep_nat",
            Operation::RouteDns { .. } => "route_dns",
            Operation::UnrouteDns => "unroute_dns",
        }
    }
}

/// Result of [`Operation::DeleteTap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTapResult {
    pub name: String,
    /// False when no such tap existed.
    pub deleted: bool,
}

/// Result of [`Operation::DisableNat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisableNatResult {
    pub vm_id: String,
    /// Number of rules removed.
    pub removed: usize,
}

/// Result of [`Operation::SweepNat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepNatResult {
    /// Ids of the VMs whose rules were removed, sorted.
    pub removed: Vec<String>,
}

/// Result of [`Operation::RouteDns`] and [`Operation::UnrouteDns`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDnsResult {
    pub link: String,
    /// `127.0.0.1:PORT` after `route_dns`; `None` after `unroute_dns`.
    pub server: Option<String>,
}

/// A failure as the helper sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// What failed, with its causes joined by `: `.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// The helper's response: `result` when `ok`, else `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl Response {
    pub fn success(result: Value) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn failure(error: ErrorInfo) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(error),
        }
    }
}
