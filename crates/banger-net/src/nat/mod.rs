//! NAT for VMs with nftables: banger's own table `inet banger`, rules
//! tagged per VM, applied with `nft -f -` and listed with `nft -j`.
//!
//! Other tables are never read or changed. Note that a drop verdict in
//! another table's forward chain (Docker sets the iptables FORWARD policy to
//! DROP) still drops VM traffic that banger's table accepts.

pub mod rules;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Mutex;

use crate::command::{self, CommandError, CommandRunner};
use crate::names::{NameError, validate_bridge_name, validate_uplink_name, validate_vm_id};
use crate::pool::{Pool, PoolError};
use rules::{RuleEntry, TABLE_FAMILY, TABLE_NAME, VmRule};

/// The nftables command-line program.
pub const NFT: &str = "nft";

/// The IPv4 forwarding switch of the calling thread's network namespace.
pub const IP_FORWARD_PATH: &str = "/proc/sys/net/ipv4/ip_forward";

/// Serializes list-then-apply sequences within this process, so two
/// requests cannot delete the same rule handle or add the drop rule twice.
static NFT_LOCK: Mutex<()> = Mutex::const_new(());

#[derive(Debug, Error)]
pub enum NatError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("{action} failed")]
    Nft {
        action: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("parsing the output of `nft -j list table {TABLE_FAMILY} {TABLE_NAME}` failed")]
    ParseList(#[source] serde_json::Error),
    #[error("enabling IPv4 forwarding through {path} failed")]
    IpForward {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The VM's rules after [`Nat::enable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatState {
    pub vm_id: String,
    pub address: Ipv4Addr,
    pub uplink: String,
}

/// NAT rules of the VMs on one bridge.
pub struct Nat<'a> {
    runner: &'a dyn CommandRunner,
    bridge: String,
    pool: Pool,
    ip_forward_path: PathBuf,
}

impl<'a> Nat<'a> {
    pub fn new(runner: &'a dyn CommandRunner, bridge: &str, pool: Pool) -> Result<Self, NatError> {
        validate_bridge_name(bridge)?;
        Ok(Self {
            runner,
            bridge: bridge.to_owned(),
            pool,
            ip_forward_path: PathBuf::from(IP_FORWARD_PATH),
        })
    }

    /// Writes the forwarding switch at `path` instead of
    /// [`IP_FORWARD_PATH`] (for tests with a fake runner).
    pub fn with_ip_forward_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ip_forward_path = path.into();
        self
    }

    /// Lets the VM with `vm_id` and `address` reach the network behind
    /// `uplink` through masquerading, and turns on IPv4 forwarding. The
    /// VM's earlier rules are replaced in the same transaction, so running
    /// it again leaves exactly one set.
    pub async fn enable(
        &self,
        vm_id: &str,
        address: Ipv4Addr,
        uplink: &str,
    ) -> Result<NatState, NatError> {
        validate_vm_id(vm_id)?;
        self.pool.check_leasable(address)?;
        validate_uplink_name(uplink)?;

        let _guard = NFT_LOCK.lock().await;
        self.apply(rules::base_script(), "creating table inet banger")
            .await?;
        let existing = self.list_locked().await?;
        let rule = VmRule {
            vm_id,
            address,
            bridge: &self.bridge,
            uplink,
        };
        self.apply(
            rules::enable_script(&existing, &rule),
            "adding the VM's NAT rules",
        )
        .await?;
        write_ip_forward(&self.ip_forward_path)?;
        Ok(NatState {
            vm_id: vm_id.to_owned(),
            address,
            uplink: uplink.to_owned(),
        })
    }

    /// Removes the rules tagged with `vm_id` and returns how many there
    /// were. IPv4 forwarding stays on, since other software may need it.
    pub async fn disable(&self, vm_id: &str) -> Result<usize, NatError> {
        validate_vm_id(vm_id)?;
        let _guard = NFT_LOCK.lock().await;
        let existing = self.list_locked().await?;
        let doomed: Vec<&RuleEntry> = existing
            .iter()
            .filter(|entry| entry.vm_id() == Some(vm_id))
            .collect();
        self.delete(&doomed).await?;
        Ok(doomed.len())
    }

    /// Removes the rules of every VM whose id is not in `keep` and returns
    /// the ids whose rules were removed, sorted. Rules without a `vm=` tag
    /// stay.
    pub async fn sweep(&self, keep: &[String]) -> Result<Vec<String>, NatError> {
        for id in keep {
            validate_vm_id(id)?;
        }
        let _guard = NFT_LOCK.lock().await;
        let existing = self.list_locked().await?;
        let doomed: Vec<&RuleEntry> = existing
            .iter()
            .filter(|entry| {
                entry
                    .vm_id()
                    .is_some_and(|id| !keep.iter().any(|k| k == id))
            })
            .collect();
        self.delete(&doomed).await?;
        let mut removed: Vec<String> = doomed
            .iter()
            .filter_map(|entry| entry.vm_id().map(str::to_owned))
            .collect();
        removed.sort();
        removed.dedup();
        Ok(removed)
    }

    /// Lists the rules of banger's table; empty when the table does not
    /// exist.
    pub async fn list(&self) -> Result<Vec<RuleEntry>, NatError> {
        let _guard = NFT_LOCK.lock().await;
        self.list_locked().await
    }

    async fn list_locked(&self) -> Result<Vec<RuleEntry>, NatError> {
        let spec = command::spec(NFT, ["-j", "list", "table", TABLE_FAMILY, TABLE_NAME]);
        match self.runner.run(&spec).await {
            Ok(output) => rules::parse_rules(&output.stdout).map_err(NatError::ParseList),
            Err(CommandError::Failed { stderr_tail, .. }) if is_missing_table(&stderr_tail) => {
                Ok(Vec::new())
            }
            Err(source) => Err(NatError::Nft {
                action: "listing table inet banger",
                source,
            }),
        }
    }

    async fn delete(&self, entries: &[&RuleEntry]) -> Result<(), NatError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.apply(rules::delete_script(entries), "deleting NAT rules")
            .await
    }

    async fn apply(&self, script: String, action: &'static str) -> Result<(), NatError> {
        let spec = command::spec(NFT, ["-f", "-"]).stdin(script);
        self.runner
            .run(&spec)
            .await
            .map(drop)
            .map_err(|source| NatError::Nft { action, source })
    }
}

/// nft reports a missing table as "No such file or directory".
fn is_missing_table(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

fn write_ip_forward(path: &Path) -> Result<(), NatError> {
    std::fs::write(path, b"1\n").map_err(|source| NatError::IpForward {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
