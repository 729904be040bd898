//! `PUT /v1/vms/{name}/workspace`: records the repository that the CLI
//! copied into a VM.
//!
//! The CLI runs git on the host and the copy in the guest through the exec
//! route. The daemon only keeps the result on the VM record, so that it
//! survives daemon restarts and shows in `banger ps`. The CLI calls this
//! route only after the guest reported a complete copy.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use banger_api::ErrorKind;
use banger_model::{VmRecord, Workspace, validate_workspace};

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

pub async fn record(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Json(mut workspace): Json<Workspace>,
) -> ApiResult<Json<VmRecord>> {
    // The daemon stamps every record's times, as it does for VMs.
    workspace.prepared_at = crate::now_rfc3339();
    validate_workspace(&workspace).map_err(|e| {
        ApiError::from_error(ErrorKind::Invalid, &e)
            .context(format!("invalid workspace record for VM {name:?}"))
    })?;
    let mut vm = daemon.vm_record(&name)?;
    if !daemon.store().set_vm_workspace(&vm.id, Some(&workspace))? {
        return Err(ApiError::not_found(format!("VM {name:?} not found"))
            .hint("list VMs with `banger vm list`"));
    }
    tracing::info!(
        vm = %name,
        guest_path = %workspace.guest_path,
        host_path = %workspace.host_path,
        head = workspace.head.as_deref().unwrap_or("none"),
        "workspace recorded"
    );
    vm.workspace = Some(workspace);
    Ok(Json(vm))
}
