//! Kernels and images: the catalog in SQLite and the files in the cache.

use std::path::{Path, PathBuf};

use banger_api::ErrorKind;
use banger_image::image::BuiltImage;
use banger_image::kernel::KernelArtifacts;
use banger_model::{ImageRecord, KernelRecord};

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};
use crate::events::Events;
use crate::now_rfc3339;

/// A kernel that `kernel pull` can fetch.
pub struct CatalogKernel {
    pub name: &'static str,
    /// Debian package fetched with `apt-get download`.
    pub package: &'static str,
}

pub const KERNEL_CATALOG: &[CatalogKernel] = &[CatalogKernel {
    name: "debian-cloud-amd64",
    package: "linux-image-cloud-amd64",
}];

impl Daemon {
    pub fn kernel_record(&self, name: &str) -> ApiResult<KernelRecord> {
        self.store()
            .get_kernel(name)?
            .ok_or_else(|| {
                ApiError::not_found(format!("kernel {name:?} not found")).hint(format!(
                    "list kernels with `banger kernel list`; fetch the default one with `banger kernel pull {}`",
                    banger_model::DEFAULT_KERNEL
                ))
            })
    }

    pub fn image_record(&self, name: &str) -> ApiResult<ImageRecord> {
        self.store().get_image(name)?.ok_or_else(|| {
            ApiError::not_found(format!("image {name:?} not found")).hint(format!(
                "list images with `banger image list`; build the default one with `banger image build {}`",
                banger_model::DEFAULT_IMAGE
            ))
        })
    }

    /// Files of a kernel in the cache.
    pub fn kernel_files(&self, record: &KernelRecord) -> ApiResult<KernelArtifacts> {
        banger_image::kernel::load(&self.paths.cache_dir, &record.sha256).map_err(|e| {
            ApiError::from_error(ErrorKind::Conflict, &e)
                .context(format!(
                    "the files of kernel {:?} are missing from the cache",
                    record.name
                ))
                .hint(format!(
                    "remove it with `banger kernel rm {0}` and import it again",
                    record.name
                ))
        })
    }

    pub fn image_file(&self, record: &ImageRecord) -> PathBuf {
        banger_image::image::image_path(&self.paths.cache_dir, &record.sha256)
    }

    /// Returns the kernel, pulling it first when it is missing and in the catalog.
    pub async fn ensure_kernel(&self, name: &str, events: &Events) -> ApiResult<KernelRecord> {
        if let Some(record) = self.store().get_kernel(name)? {
            return Ok(record);
        }
        if !KERNEL_CATALOG.iter().any(|k| k.name == name) {
            return Err(self.kernel_record(name).unwrap_err());
        }
        events
            .progress(format!("kernel {name} is missing: pulling it"))
            .await;
        self.pull_kernel(name, events).await
    }

    /// Fetches a catalog kernel's package and imports it.
    pub async fn pull_kernel(&self, name: &str, events: &Events) -> ApiResult<KernelRecord> {
        let entry = KERNEL_CATALOG
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| {
                let known: Vec<_> = KERNEL_CATALOG.iter().map(|k| k.name).collect();
                ApiError::not_found(format!("kernel {name:?} is not in the catalog")).hint(format!(
                    "known kernels: {}; import another with `banger kernel import --deb FILE`",
                    known.join(", ")
                ))
            })?;
        let _guard = self.artifact_lock(&format!("kernel/{name}")).await;
        if let Some(record) = self.store().get_kernel(name)? {
            return Ok(record);
        }
        let download_dir = tempfile::Builder::new()
            .prefix("kernel-download-")
            .tempdir_in(self.ensure_cache_dir()?)
            .map_err(|e| ApiError::from_error(ErrorKind::Internal, &e))?;
        let dir = download_dir.path().to_path_buf();
        let package = entry.package;
        let ev = events.clone();
        events
            .progress(format!("downloading {package} with apt-get"))
            .await;
        let deb = blocking(move || {
            banger_image::kernel::download_deb(package, &dir, &mut |m| ev.progress_blocking(m))
        })
        .await
        .map_err(|e| classify_tool_error(e).context(format!("failed to pull kernel {name:?}")))?;
        self.import_kernel_file(&deb, Some(name), package, events)
            .await
    }

    /// Imports a kernel package under `name`, or under its kernel release.
    pub async fn import_kernel_file(
        &self,
        deb: &Path,
        name: Option<&str>,
        source: &str,
        events: &Events,
    ) -> ApiResult<KernelRecord> {
        self.import_kernel_from(KernelSource::Deb(deb.to_path_buf()), name, source, events)
            .await
    }

    /// Imports a kernel into the cache and records it in the catalog.
    pub async fn import_kernel_from(
        &self,
        kernel_source: KernelSource,
        name: Option<&str>,
        source: &str,
        events: &Events,
    ) -> ApiResult<KernelRecord> {
        let cache = self.ensure_cache_dir()?;
        let ev = events.clone();
        let label = kernel_source.describe();
        let artifacts = blocking(move || {
            let mut progress = |m: &str| ev.progress_blocking(m);
            match &kernel_source {
                KernelSource::Deb(deb) => {
                    banger_image::kernel::import_deb(deb, &cache, &mut progress)
                }
                KernelSource::File { kernel, modules } => banger_image::kernel::import_kernel_file(
                    kernel,
                    modules.as_deref(),
                    &cache,
                    &mut progress,
                ),
            }
        })
        .await
        .map_err(|e| {
            classify_tool_error(e).context(format!("failed to import kernel from {label}"))
        })?;
        let name = name.unwrap_or(&artifacts.release);
        let record = KernelRecord {
            name: name.to_string(),
            sha256: artifacts.sha256.clone(),
            release: artifacts.release.clone(),
            source: source.to_string(),
            created_at: now_rfc3339(),
        };
        self.store().put_kernel(&record)?;
        tracing::info!(kernel = %name, release = %record.release, "kernel imported");
        events
            .progress(format!("kernel {name} ({}) is ready", record.release))
            .await;
        Ok(record)
    }

    /// Returns the image, building it first when it is missing and has a recipe.
    pub async fn ensure_image(&self, name: &str, events: &Events) -> ApiResult<ImageRecord> {
        if let Some(record) = self.store().get_image(name)? {
            return Ok(record);
        }
        if banger_image::image::default_recipe(name).is_none() {
            return Err(self.image_record(name).unwrap_err());
        }
        events
            .progress(format!("image {name} is missing: building it"))
            .await;
        self.build_image(name, events).await
    }

    /// Builds an image from its recipe (reusing a cached build of the same recipe).
    pub async fn build_image(&self, name: &str, events: &Events) -> ApiResult<ImageRecord> {
        let recipe = banger_image::image::default_recipe(name).ok_or_else(|| {
            ApiError::not_found(format!("no recipe for image {name:?}"))
                .hint(format!("known images: {}", banger_model::DEFAULT_IMAGE))
        })?;
        let _guard = self.artifact_lock(&format!("image/{name}")).await;
        let cache = self.ensure_cache_dir()?;
        let agent = self.agent_binary()?;
        let ev = events.clone();
        let source = format!("mmdebstrap {}", recipe.suite);
        let built: BuiltImage = blocking(move || {
            if let Some(built) = banger_image::image::find_built(&recipe, &cache) {
                ev.progress_blocking("using the cached build of this recipe");
                return Ok(built);
            }
            banger_image::image::build_image(&recipe, &agent, &cache, &mut |m| {
                ev.progress_blocking(m)
            })
        })
        .await
        .map_err(|e| classify_tool_error(e).context(format!("failed to build image {name:?}")))?;
        let record = ImageRecord {
            name: name.to_string(),
            sha256: built.sha256,
            size_bytes: built.size_bytes,
            source,
            created_at: now_rfc3339(),
        };
        self.store().put_image(&record)?;
        tracing::info!(image = %name, sha256 = %record.sha256, "image ready");
        events.progress(format!("image {name} is ready")).await;
        Ok(record)
    }

    pub fn remove_kernel(&self, name: &str) -> ApiResult<()> {
        self.kernel_record(name)?;
        let users = self.store().vms_using_kernel(name)?;
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "kernel {name:?} is used by VM(s) {}",
                users.join(", ")
            ))
            .hint("delete those VMs first with `banger vm delete NAME`"));
        }
        self.store().delete_kernel(name)?;
        tracing::info!(kernel = %name, "kernel removed from the catalog");
        Ok(())
    }

    pub fn remove_image(&self, name: &str) -> ApiResult<()> {
        self.image_record(name)?;
        let users = self.store().vms_using_image(name)?;
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "image {name:?} is used by VM(s) {}",
                users.join(", ")
            ))
            .hint("delete those VMs first with `banger vm delete NAME`"));
        }
        self.store().delete_image(name)?;
        tracing::info!(image = %name, "image removed from the catalog");
        Ok(())
    }

    fn ensure_cache_dir(&self) -> ApiResult<PathBuf> {
        std::fs::create_dir_all(&self.paths.cache_dir).map_err(|e| {
            ApiError::from_error(ErrorKind::Internal, &e).context(format!(
                "failed to create {}",
                self.paths.cache_dir.display()
            ))
        })?;
        Ok(self.paths.cache_dir.clone())
    }
}

/// Runs blocking work on the blocking pool.
pub async fn blocking<T, E, F>(work: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking task panicked")
}

/// Maps an error from the image library to an API error; a missing host
/// program makes it `Unavailable` (its message already names the package).
pub fn classify_tool_error<E: std::error::Error + 'static>(error: E) -> ApiError {
    let mut kind = ErrorKind::Internal;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(banger_process::CommandError::NotFound { .. }) = cause.downcast_ref() {
            kind = ErrorKind::Unavailable;
        }
        source = cause.source();
    }
    ApiError::from_error(kind, &error)
}

/// Source of a kernel import.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// A Debian `linux-image-*` package.
    Deb(PathBuf),
    /// An ELF vmlinux or a bzImage, with its modules directory when the
    /// virtio drivers are modules.
    File {
        kernel: PathBuf,
        modules: Option<PathBuf>,
    },
}

impl KernelSource {
    /// Formats the paths for messages and the catalog's source column.
    pub fn describe(&self) -> String {
        match self {
            KernelSource::Deb(deb) => deb.display().to_string(),
            KernelSource::File {
                kernel,
                modules: Some(modules),
            } => format!(
                "{} with modules from {}",
                kernel.display(),
                modules.display()
            ),
            KernelSource::File {
                kernel,
                modules: None,
            } => kernel.display().to_string(),
        }
    }
}
