//! Daemon start: choose the network mode, remove what VMs that no longer
//! run left behind, rebuild the DNS records and start the DNS server.

use std::collections::HashSet;
use std::sync::Arc;

use banger_model::VmState;

use super::{Mode, choose_mode};
use crate::daemon::Daemon;
use crate::events::new_operation_id;

/// Runs after the VMs were settled, so every VM recorded as running has a
/// live VMM process.
pub async fn startup(daemon: &Arc<Daemon>) {
    let euid = nix::unistd::geteuid().as_raw();
    let mode = choose_mode(
        &daemon.config.network,
        daemon.config.helper_socket.as_deref(),
        euid,
    );
    match &mode {
        Mode::Available(_) => {}
        Mode::Unavailable(reason) => {
            tracing::warn!(%reason, "VMs boot without a network device");
        }
    }
    daemon.net.set_mode(mode);
    tracing::info!(mode = daemon.net.mode_name(), "network mode chosen");

    let (vms, leases) = {
        let store = daemon.store();
        (store.list_vms(), store.list_leases())
    };
    let (vms, leases) = match (vms, leases) {
        (Ok(vms), Ok(leases)) => (vms, leases),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(error = %error, "failed to read VMs and leases; skipping the network sweep");
            return;
        }
    };
    let running: HashSet<&str> = vms
        .iter()
        .filter(|vm| vm.state == VmState::Running)
        .map(|vm| vm.id.as_str())
        .collect();

    if let Ok(backend) = daemon.net.backend() {
        let op = new_operation_id();
        let keep: Vec<String> = running.iter().map(|id| (*id).to_owned()).collect();
        match backend.sweep_nat(&op, &keep).await {
            Ok(result) if !result.removed.is_empty() => {
                tracing::info!(op_id = %op, removed = ?result.removed, "removed NAT rules of VMs that no longer run");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(op_id = %op, error = %banger_net::error_chain(&error), "failed to sweep NAT rules");
            }
        }
        for lease in leases
            .iter()
            .filter(|l| !running.contains(l.vm_id.as_str()))
        {
            match backend.delete_tap(&op, &lease.tap).await {
                Ok(result) if result.deleted => {
                    tracing::info!(op_id = %op, tap = %lease.tap, "removed the tap of a VM that no longer runs");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(op_id = %op, tap = %lease.tap, error = %banger_net::error_chain(&error), "failed to delete a stale tap");
                }
            }
        }
    }

    let entries = vms.iter().filter_map(|vm| {
        let lease = leases.iter().find(|l| l.vm_id == vm.id)?;
        running
            .contains(vm.id.as_str())
            .then(|| (vm.name.clone(), lease.ip))
    });
    daemon.net.records.replace_all(entries);
    crate::dns::start(daemon).await;
    route_vm_domain(daemon).await;
    daemon.refresh_ssh_files().await;
}

/// On hosts with systemd-resolved, sends queries for `*.vm` to the daemon's
/// DNS server through per-link settings on the bridge. resolved forgets link
/// settings when it restarts, so this runs at every daemon start.
///
/// NOTE: never run on the development machines, which have no
/// systemd-resolved; the helper's commands for it are tested with a fake
/// `resolvectl` only.
async fn route_vm_domain(daemon: &Arc<Daemon>) {
    if !std::path::Path::new(RESOLVED_SOCKET).exists() {
        return;
    }
    let Ok(backend) = daemon.net.backend() else {
        return;
    };
    let op = new_operation_id();
    let port = daemon.config.network.dns_addr.port();
    let routed = match backend.ensure_bridge(&op).await {
        Ok(_) => backend.route_dns(&op, port).await.map(|_| ()),
        Err(error) => Err(error),
    };
    match routed {
        Ok(()) => tracing::info!(op_id = %op, port, "routed the vm domain to banger's DNS server"),
        Err(error) => tracing::warn!(
            op_id = %op,
            error = %banger_net::error_chain(&error),
            "failed to route the vm domain through systemd-resolved"
        ),
    }
}

/// Varlink socket that exists while systemd-resolved runs.
const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";
