//! Per-VM network steps: lease at create, tap and NAT at boot, teardown at
//! stop, kill and delete. Each step that fails undoes the earlier ones.

use std::net::Ipv4Addr;

use banger_api::ErrorKind;
use banger_model::VmRecord;
use banger_net::helper::NetError;
use banger_net::names::tap_name;
use banger_net::pool::{format_mac, mac_for_ip};
use banger_store::Lease;

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};
use crate::events::Events;

/// The network device of a booting VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub tap: String,
    /// `02:42:` and the address bytes, as QEMU's `mac=` takes it.
    pub mac: String,
    /// Resolver for the guest's `/etc/resolv.conf`.
    pub dns: Option<Ipv4Addr>,
}

impl GuestNet {
    /// Kernel command line arguments the guest agent reads at serve start.
    /// The resolver is the host's upstream one, not the daemon's DNS server:
    /// that one listens on the host's loopback and answers only `NAME.vm`.
    pub fn cmdline_args(&self) -> String {
        let mut args = format!(
            "banger.ip={}/{} banger.gw={}",
            self.ip, self.prefix_len, self.gateway
        );
        if let Some(dns) = self.dns {
            args.push_str(&format!(" banger.dns={dns}"));
        }
        args
    }

    /// The NIC handed to the VMM.
    pub fn nic(&self) -> banger_vmm::NicSpec {
        banger_vmm::NicSpec {
            tap: self.tap.clone(),
            mac: self.mac.clone(),
        }
    }
}

fn net_error(error: &NetError, what: String) -> ApiError {
    let info = error.to_error_info();
    let api = ApiError::new(ErrorKind::Internal, what).cause(info.message);
    match info.hint {
        Some(hint) => api.hint(hint),
        None => api,
    }
}

impl Daemon {
    /// Leases an address and a tap name to `vm` unless it has them. Returns
    /// `None` when the network is unavailable.
    pub fn lease_address(&self, vm: &VmRecord) -> ApiResult<Option<Lease>> {
        if self.net.backend().is_err() {
            return Ok(None);
        }
        let pool = self.config.network.pool;
        let tap = tap_name(&vm.id).map_err(|e| {
            ApiError::from_error(ErrorKind::Internal, &e)
                .context(format!("VM {:?} has an id unfit for a tap name", vm.name))
        })?;
        let lease = self.store().allocate_lease(
            &vm.id,
            &tap,
            pool.first_leasable(),
            pool.last_leasable(),
        )?;
        match lease {
            Some(lease) => {
                tracing::info!(vm = %vm.name, ip = %lease.ip, tap = %lease.tap, "address leased");
                Ok(Some(lease))
            }
            None => Err(ApiError::unavailable(format!(
                "every address of the VM pool {pool} is leased"
            ))
            .hint("delete VMs you no longer need, or set a larger [network] pool in config.toml")),
        }
    }

    /// Creates the VM's tap on the bridge and, with NAT, its masquerading
    /// rules. Returns `None` when the network is unavailable, after saying
    /// why once per daemon.
    pub async fn network_up(&self, vm: &VmRecord, events: &Events) -> ApiResult<Option<GuestNet>> {
        let backend = match self.net.backend() {
            Ok(backend) => backend,
            Err(reason) => {
                if self.net.first_explanation() {
                    events
                        .progress(format!("booting without a network device: {reason}"))
                        .await;
                }
                return Ok(None);
            }
        };
        let Some(lease) = self.lease_address(vm)? else {
            return Ok(None);
        };
        let op = events.operation_id();
        let pool = self.config.network.pool;
        let nat = self.store().vm_nat(&vm.id)?;

        backend.ensure_bridge(op).await.map_err(|e| {
            net_error(
                &e,
                format!("failed to set up bridge {}", self.config.network.bridge),
            )
        })?;
        backend
            .create_tap(op, &lease.tap)
            .await
            .map_err(|e| net_error(&e, format!("failed to create tap {}", lease.tap)))?;
        if nat && let Err(error) = backend.enable_nat(op, &vm.id, lease.ip).await {
            if let Err(undo) = backend.delete_tap(op, &lease.tap).await {
                tracing::warn!(vm = %vm.name, tap = %lease.tap, error = %banger_net::error_chain(&undo), "failed to delete the tap after a NAT failure");
            }
            return Err(net_error(
                &error,
                format!("failed to enable NAT for {}", lease.ip),
            ));
        }
        tracing::info!(vm = %vm.name, ip = %lease.ip, tap = %lease.tap, nat, "network device ready");
        Ok(Some(GuestNet {
            ip: lease.ip,
            prefix_len: pool.prefix_len(),
            gateway: pool.gateway(),
            tap: lease.tap,
            mac: format_mac(mac_for_ip(lease.ip)),
            dns: self.config.network.guest_resolver(),
        }))
    }

    /// Publishes a running VM: its DNS record and SSH host entries.
    pub async fn network_ready(&self, vm: &VmRecord) {
        if let Ok(Some(lease)) = self.store().get_lease(&vm.id) {
            self.net.records.insert(&vm.name, lease.ip);
        }
        self.refresh_ssh_files().await;
    }

    /// Removes the VM's NAT rules, tap and DNS record. Failures are logged:
    /// the startup sweep removes what is left.
    pub async fn network_down(&self, vm: &VmRecord, op: &str) {
        self.net.records.remove(&vm.name);
        let Ok(backend) = self.net.backend() else {
            return;
        };
        let lease = match self.store().get_lease(&vm.id) {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(vm = %vm.name, error = %error, "failed to read the lease");
                return;
            }
        };
        if self.store().vm_nat(&vm.id).unwrap_or(true)
            && let Err(error) = backend.disable_nat(op, &vm.id).await
        {
            tracing::warn!(vm = %vm.name, error = %banger_net::error_chain(&error), "failed to remove NAT rules");
        }
        match backend.delete_tap(op, &lease.tap).await {
            Ok(result) => {
                tracing::info!(vm = %vm.name, tap = %lease.tap, deleted = result.deleted, "tap removed")
            }
            Err(error) => {
                tracing::warn!(vm = %vm.name, tap = %lease.tap, error = %banger_net::error_chain(&error), "failed to delete the tap")
            }
        }
    }

    /// Releases the lease of a deleted VM and drops its SSH entries.
    pub async fn network_forget(&self, vm: &VmRecord) {
        if let Err(error) = self.store().release_lease(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %error, "failed to release the lease");
        }
        self.refresh_ssh_files().await;
    }

    /// The boot steps with the VM's network around them: the network comes
    /// up before the VMM starts and goes down again when the boot fails.
    pub async fn boot_with_network(&self, vm: &mut VmRecord, events: &Events) -> ApiResult<()> {
        let net = self.network_up(vm, events).await?;
        match self.boot(vm, events, net.as_ref()).await {
            Ok(()) => {
                self.network_ready(vm).await;
                Ok(())
            }
            Err(error) => {
                if net.is_some() {
                    self.network_down(vm, events.operation_id()).await;
                }
                Err(error)
            }
        }
    }
}
