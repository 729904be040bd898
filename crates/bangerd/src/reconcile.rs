//! Startup: settle the VMs the previous daemon left behind.
//!
//! VMM processes run in their own sessions and outlive the daemon. A VM
//! recorded as running whose process (same pid and start time) is still
//! alive is adopted; any other VM caught mid-operation is settled as
//! stopped or failed, and its runtime directory removed.

use banger_model::VmState;

use crate::daemon::Daemon;
use crate::vms::runtime_process;

pub async fn reconcile(daemon: &Daemon) -> anyhow::Result<()> {
    let vms = daemon.store().list_vms()?;
    for mut vm in vms {
        let process = runtime_process(&vm);
        let vmm = process.as_ref().and_then(|p| daemon.backend_of(p).ok());
        let alive = match (&process, &vmm) {
            (Some(p), Some(vmm)) => vmm.is_running(p),
            _ => false,
        };
        let settled = match (vm.state, alive) {
            (VmState::Running, true) => {
                tracing::info!(vm = %vm.name, "adopted running VM");
                continue;
            }
            (VmState::Stopped | VmState::Error, false) => continue,
            (VmState::Starting | VmState::Stopping | VmState::Creating, true) => {
                // The operation was cut short; the process is ours to end.
                if let (Some(process), Some(vmm)) = (&process, &vmm) {
                    let _ = vmm.kill(process).await;
                }
                if vm.state == VmState::Stopping {
                    VmState::Stopped
                } else {
                    VmState::Error
                }
            }
            (VmState::Running | VmState::Stopping, false) => VmState::Stopped,
            (VmState::Starting | VmState::Creating, false) => VmState::Error,
            (VmState::Stopped | VmState::Error, true) => {
                if let (Some(process), Some(vmm)) = (&process, &vmm) {
                    let _ = vmm.kill(process).await;
                }
                vm.state
            }
        };
        if settled == VmState::Error && vm.last_error.is_none() {
            vm.last_error = Some(format!("the daemon stopped while the VM was {}", vm.state));
        }
        tracing::info!(vm = %vm.name, from = %vm.state, to = %settled, "settled VM at startup");
        vm.state = settled;
        vm.runtime = None;
        let _ = std::fs::remove_dir_all(daemon.paths.vm_run_dir(&vm.id));
        daemon.save(&mut vm)?;
    }
    Ok(())
}
