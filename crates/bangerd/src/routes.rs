//! HTTP routes of the API.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use banger_api::{
    BuildImageRequest, CreateVmRequest, Defaults, Health, ImportKernelRequest, PullKernelRequest,
    SetVmRequest,
};
use banger_model::{ImageRecord, KernelRecord, VmRecord};

use crate::artifacts::KernelSource;
use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};
use crate::events::{new_operation_id, stream};

pub fn router(daemon: Arc<Daemon>) -> Router {
    let v1 = Router::new()
        .route("/health", get(health))
        .route("/defaults", get(defaults))
        .route("/doctor", get(crate::doctor::doctor))
        .route("/shutdown", post(shutdown))
        .route("/vms", get(list_vms).post(create_vm))
        .route("/vms/{name}", get(show_vm).delete(delete_vm).patch(set_vm))
        .route("/vms/{name}/start", post(start_vm))
        .route("/vms/{name}/restart", post(restart_vm))
        .route("/vms/{name}/stats", get(crate::stats::stats))
        .route("/vms/{name}/stop", post(stop_vm))
        .route("/vms/{name}/exec", post(crate::exec::exec))
        .route(
            "/vms/{name}/exec/{stream}/signal",
            post(crate::exec::signal),
        )
        .route("/vms/{name}/logs", get(crate::logs::logs))
        .route("/vms/{name}/kill", post(kill_vm))
        .route("/vms/{name}/workspace", put(crate::workspace::record))
        .route("/kernels", get(list_kernels))
        .route("/kernels/import", post(import_kernel))
        .route("/kernels/pull", post(pull_kernel))
        .route("/kernels/{name}", delete(remove_kernel))
        .route("/images", get(list_images))
        .route("/images/build", post(build_image))
        .route("/images/{name}", delete(remove_image))
        .merge(crate::net_routes::routes());
    Router::new()
        .nest(banger_api::PREFIX, v1)
        .with_state(daemon)
}

async fn health() -> Json<Health> {
    Json(Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
    })
}

async fn defaults(State(daemon): State<Arc<Daemon>>) -> ApiResult<Json<Defaults>> {
    Ok(Json(daemon.defaults()?))
}

async fn shutdown(State(daemon): State<Arc<Daemon>>) -> StatusCode {
    tracing::info!("shutdown requested through the API");
    daemon.shutdown.notify_one();
    StatusCode::NO_CONTENT
}

async fn list_vms(State(daemon): State<Arc<Daemon>>) -> ApiResult<Json<Vec<VmRecord>>> {
    Ok(Json(daemon.store().list_vms()?))
}

async fn show_vm(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Json<VmRecord>> {
    Ok(Json(daemon.vm_record(&name)?))
}

async fn create_vm(
    State(daemon): State<Arc<Daemon>>,
    Json(request): Json<CreateVmRequest>,
) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.create_vm(request, &events).await
    })
}

async fn start_vm(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.start_vm(&name, &events).await
    })
}

async fn restart_vm(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.restart_vm(&name, &events).await
    })
}

async fn set_vm(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Json(request): Json<SetVmRequest>,
) -> ApiResult<Json<VmRecord>> {
    Ok(Json(daemon.set_vm(&name, &request).await?))
}

async fn stop_vm(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.stop_vm(&name, &events).await
    })
}

async fn kill_vm(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.kill_vm(&name, &events).await
    })
}

async fn delete_vm(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.delete_vm(&name, &events).await
    })
}

async fn list_kernels(State(daemon): State<Arc<Daemon>>) -> ApiResult<Json<Vec<KernelRecord>>> {
    Ok(Json(daemon.store().list_kernels()?))
}

async fn import_kernel(
    State(daemon): State<Arc<Daemon>>,
    Json(request): Json<ImportKernelRequest>,
) -> ApiResult<Response> {
    let source = kernel_source(&request)?;
    if let Some(name) = &request.name {
        banger_model::validate_vm_name(name).map_err(|e| {
            ApiError::invalid(format!("invalid kernel name {name:?}"))
                .cause(e.to_string())
                .hint(e.hint())
        })?;
    }
    Ok(stream(new_operation_id(), move |events| async move {
        let label = source.describe();
        daemon
            .import_kernel_from(source, request.name.as_deref(), &label, &events)
            .await
    }))
}

/// Checks the paths of a kernel import request.
fn kernel_source(request: &ImportKernelRequest) -> ApiResult<KernelSource> {
    let absolute = |what: &str, path: &str| -> ApiResult<std::path::PathBuf> {
        let path = std::path::PathBuf::from(path);
        if !path.is_absolute() {
            return Err(ApiError::invalid(format!(
                "{what} path {:?} is not absolute",
                path.display().to_string()
            )));
        }
        Ok(path)
    };
    match (&request.deb, &request.vmlinux) {
        (Some(deb), None) => {
            if request.modules.is_some() {
                return Err(ApiError::invalid(
                    "a modules directory goes with a kernel file, not with a package",
                )
                .hint("a package brings its own modules: drop --modules"));
            }
            let deb = absolute("kernel package", deb)?;
            if !deb.is_file() {
                return Err(ApiError::not_found(format!("kernel package {} not found", deb.display()))
                    .hint("pass the path of a .deb file, e.g. one fetched with `apt-get download linux-image-cloud-amd64`"));
            }
            Ok(KernelSource::Deb(deb))
        }
        (None, Some(kernel)) => {
            let kernel = absolute("kernel file", kernel)?;
            if kernel.exists() && !kernel.is_file() {
                return Err(ApiError::invalid(format!(
                    "kernel file {} is not a regular file",
                    kernel.display()
                ))
                .hint("pass an ELF vmlinux or a bzImage such as /boot/vmlinuz-<release>"));
            }
            if !kernel.is_file() {
                return Err(ApiError::not_found(format!(
                    "kernel file {} not found",
                    kernel.display()
                ))
                .hint("pass an ELF vmlinux or a bzImage such as /boot/vmlinuz-<release>"));
            }
            let modules = match &request.modules {
                Some(dir) => {
                    let dir = absolute("modules directory", dir)?;
                    if !dir.is_dir() {
                        return Err(ApiError::not_found(format!(
                            "modules directory {} not found",
                            dir.display()
                        ))
                        .hint("pass the kernel's /lib/modules/<release> directory"));
                    }
                    Some(dir)
                }
                None => None,
            };
            Ok(KernelSource::File { kernel, modules })
        }
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "a kernel import takes a package or a kernel file, not both",
        )
        .hint("pass either --deb FILE or --vmlinux FILE")),
        (None, None) => Err(
            ApiError::invalid("a kernel import needs a package or a kernel file")
                .hint("pass --deb FILE or --vmlinux FILE"),
        ),
    }
}

async fn pull_kernel(
    State(daemon): State<Arc<Daemon>>,
    Json(request): Json<PullKernelRequest>,
) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.pull_kernel(&request.name, &events).await
    })
}

async fn remove_kernel(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    daemon.remove_kernel(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_images(State(daemon): State<Arc<Daemon>>) -> ApiResult<Json<Vec<ImageRecord>>> {
    Ok(Json(daemon.store().list_images()?))
}

async fn build_image(
    State(daemon): State<Arc<Daemon>>,
    Json(request): Json<BuildImageRequest>,
) -> Response {
    stream(new_operation_id(), move |events| async move {
        daemon.build_image(&request.name, &events).await
    })
}

async fn remove_image(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    daemon.remove_image(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
