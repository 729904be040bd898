//! Routes of the networking features: status, SSH targets and guest ports.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use banger_api::network::{ListeningPort, NetworkStatus, SshTarget, VmNetwork};

use crate::daemon::Daemon;
use crate::error::ApiResult;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/network", get(network_status))
        .route("/vms/{name}/ssh", get(ssh_target))
        .route("/vms/{name}/ports", get(ports))
}

async fn network_status(State(daemon): State<Arc<Daemon>>) -> ApiResult<Json<NetworkStatus>> {
    Ok(Json(daemon.network_status()?))
}

async fn ssh_target(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Json<SshTarget>> {
    Ok(Json(daemon.ssh_target(&name)?))
}

async fn ports(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<ListeningPort>>> {
    Ok(Json(daemon.listening_ports(&name).await?))
}

impl Daemon {
    pub fn network_status(&self) -> ApiResult<NetworkStatus> {
        let config = &self.config.network;
        let (vms, leases) = {
            let store = self.store();
            (store.list_vms()?, store.list_leases()?)
        };
        let mut entries = Vec::new();
        for lease in leases {
            let Some(vm) = vms.iter().find(|vm| vm.id == lease.vm_id) else {
                continue;
            };
            entries.push(VmNetwork {
                vm_id: vm.id.clone(),
                name: vm.name.clone(),
                ip: lease.ip.to_string(),
                prefix_len: config.pool.prefix_len(),
                gateway: config.pool.gateway().to_string(),
                tap: lease.tap,
                nat: self.store().vm_nat(&vm.id)?,
                dns_name: format!("{}.vm", vm.name),
            });
        }
        Ok(NetworkStatus {
            enabled: config.enabled,
            mode: self.net.mode_name().to_owned(),
            unavailable_reason: self.net.backend().err(),
            bridge: config.bridge.clone(),
            pool: config.pool.to_string(),
            dns_addr: self.net.dns_addr.get().map(ToString::to_string),
            vms: entries,
        })
    }
}
