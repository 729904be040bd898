//! `import_deb`: one pass over the package's `data.tar` collects the kernel
//! image, `modules.builtin` and the `.modinfo` of every module. The selected
//! modules and the extracted vmlinux are then published atomically.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::deb::{self, Walk};
use super::modules::{self, ModuleInfo, REQUIRED_MODULES};
use super::{
    BZIMAGE_FILE, KernelArtifacts, KernelError, KernelMetadata, METADATA_FILE, METADATA_FORMAT,
    MODULES_DIR, VMLINUX_FILE, cache_error, kernel_dir,
};
use crate::store;

/// Results of scanning `data.tar`.
#[derive(Default)]
struct PackageScan {
    /// Release and bytes of each `boot/vmlinuz-<release>`.
    kernels: Vec<(String, Vec<u8>)>,
    /// `modules.builtin` text per release.
    builtin: HashMap<String, String>,
    /// Module metadata per release, keyed by module name.
    modules: HashMap<String, HashMap<String, ModuleInfo>>,
    /// Decompressed bytes of the modules kept so far, keyed by package path.
    module_bytes: HashMap<String, Vec<u8>>,
}

/// Splits `lib/modules/<release>/<rest>` (or the `usr/lib/...` form).
fn split_modules_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("lib/modules/")
        .or_else(|| path.strip_prefix("usr/lib/modules/"))?;
    rest.split_once('/')
}

/// Imports a kernel package into `<cache>/kernels/<sha256>/`, or returns the
/// existing import of the same package.
pub fn import_deb(
    deb: &Path,
    cache_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<KernelArtifacts, KernelError> {
    progress(&format!("hashing {}", deb.display()));
    let sha256 = store::sha256_file(deb).map_err(|source| KernelError::ReadPackage {
        path: deb.to_path_buf(),
        source,
    })?;
    let final_dir = kernel_dir(cache_root, &sha256);
    if final_dir.join(METADATA_FILE).is_file() {
        progress(&format!("kernel {sha256} already imported"));
        return super::load(cache_root, &sha256);
    }

    progress(&format!("extracting {}", deb::data_member_name(deb)?));
    let mut scan = scan_package(deb)?;
    let (release, bzimage) = match scan.kernels.len() {
        0 => {
            return Err(KernelError::NoKernelImage {
                path: deb.to_path_buf(),
            });
        }
        1 => scan.kernels.remove(0),
        _ => {
            let releases: Vec<&str> = scan.kernels.iter().map(|(r, _)| r.as_str()).collect();
            return Err(KernelError::SeveralKernels {
                path: deb.to_path_buf(),
                releases: releases.join(", "),
            });
        }
    };

    let available = scan.modules.remove(&release).unwrap_or_default();
    let builtin = scan
        .builtin
        .get(&release)
        .map(|text| modules::builtin_names(text))
        .unwrap_or_default();
    let order = modules::load_order(REQUIRED_MODULES, &available, &builtin)?;
    let selected: Vec<&ModuleInfo> = order.iter().map(|name| &available[name]).collect();
    collect_missing_bytes(deb, &selected, &mut scan.module_bytes)?;
    progress(&format!("selected modules: {}", order.join(" ")));

    progress(&format!("extracting vmlinux from vmlinuz-{release}"));
    let vmlinux = super::extract_vmlinux(&bzimage)?;

    let modules: Vec<(String, &[u8])> = selected
        .iter()
        .map(|info| {
            (
                info.name.clone(),
                scan.module_bytes[&info.package_path].as_slice(),
            )
        })
        .collect();
    let source = deb
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staged = StagedKernel {
        sha256: &sha256,
        release: &release,
        source,
        bzimage: Some(&bzimage),
        vmlinux: &vmlinux,
        modules: &modules,
    };
    publish_kernel(cache_root, &staged)?;
    progress(&format!("kernel {release} imported as {sha256}"));
    super::load(cache_root, &sha256)
}

/// The files of a kernel about to enter the cache.
pub(super) struct StagedKernel<'a> {
    pub sha256: &'a str,
    pub release: &'a str,
    /// Source it was imported from, for display.
    pub source: String,
    /// Absent for a kernel imported as a bare ELF vmlinux.
    pub bzimage: Option<&'a [u8]>,
    pub vmlinux: &'a [u8],
    /// Module names and bytes, in load order.
    pub modules: &'a [(String, &'a [u8])],
}

/// Writes a kernel into a staging directory and publishes it as
/// `<cache>/kernels/<sha256>/`.
pub(super) fn publish_kernel(
    cache_root: &Path,
    kernel: &StagedKernel<'_>,
) -> Result<(), KernelError> {
    let kernels_dir = cache_root.join("kernels");
    fs::create_dir_all(&kernels_dir).map_err(cache_error("create", &kernels_dir))?;
    let staging = store::staging_dir(cache_root, "kernel-")
        .map_err(cache_error("create a staging directory in", cache_root))?;
    let staged = staging.path();
    let write = |name: &Path, data: &[u8]| {
        fs::write(staged.join(name), data).map_err(cache_error("write", &staged.join(name)))
    };
    if let Some(bzimage) = kernel.bzimage {
        write(Path::new(BZIMAGE_FILE), bzimage)?;
    }
    write(Path::new(VMLINUX_FILE), kernel.vmlinux)?;
    let modules_dir = staged.join(MODULES_DIR);
    fs::create_dir(&modules_dir).map_err(cache_error("create", &modules_dir))?;
    for (name, bytes) in kernel.modules {
        write(&Path::new(MODULES_DIR).join(format!("{name}.ko")), bytes)?;
    }
    let metadata = KernelMetadata {
        format: METADATA_FORMAT,
        sha256: kernel.sha256.to_string(),
        release: kernel.release.to_string(),
        source: kernel.source.clone(),
        modules: kernel
            .modules
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
    };
    let json =
        serde_json::to_vec_pretty(&metadata).map_err(|err| KernelError::InvalidMetadata {
            path: staged.join(METADATA_FILE),
            reason: err.to_string(),
        })?;
    write(Path::new(METADATA_FILE), &json)?;
    store::fsync_tree(staged).map_err(cache_error("fsync", staged))?;
    publish_dir(staging, &kernel_dir(cache_root, kernel.sha256))
}

/// Walks `data.tar` once, keeping the bytes of the required modules.
fn scan_package(deb: &Path) -> Result<PackageScan, KernelError> {
    let mut scan = PackageScan::default();
    let required: HashSet<&str> = REQUIRED_MODULES.iter().copied().collect();
    deb::walk_data(deb, &mut |path, header, contents| {
        if let Some(release) = deb::kernel_image_release(path, header) {
            let bytes = deb::read_entry(deb, "data.tar", path, header, contents)?;
            scan.kernels.push((release, bytes));
            return Ok(Walk::Continue);
        }
        let Some((release, rest)) = split_modules_path(path) else {
            return Ok(Walk::Continue);
        };
        if !header.entry_type().is_file() {
            return Ok(Walk::Continue);
        }
        if rest == "modules.builtin" {
            let bytes = deb::read_entry(deb, "data.tar", path, header, contents)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            scan.builtin.insert(release.to_string(), text);
        } else if rest.starts_with("kernel/") && modules::module_name_from_path(rest).is_some() {
            let bytes = read_module(deb, path, header, contents)?;
            let info = modules::parse_modinfo(path, &bytes)?;
            if required.contains(info.name.as_str()) {
                scan.module_bytes.insert(path.to_string(), bytes);
            }
            scan.modules
                .entry(release.to_string())
                .or_default()
                .insert(info.name.clone(), info);
        }
        Ok(Walk::Continue)
    })?;
    Ok(scan)
}

fn read_module(
    deb: &Path,
    path: &str,
    header: &tar::Header,
    contents: &mut dyn io::Read,
) -> Result<Vec<u8>, KernelError> {
    let bytes = deb::read_entry(deb, "data.tar", path, header, contents)?;
    modules::decompress_module(path, bytes).map_err(|err| KernelError::InvalidModule {
        module: path.to_string(),
        reason: format!("failed to decompress: {err}"),
    })
}

/// Reads, in a second pass, the modules the dependency closure added beyond
/// [`REQUIRED_MODULES`]. Most kernels need no second pass.
fn collect_missing_bytes(
    deb: &Path,
    selected: &[&ModuleInfo],
    module_bytes: &mut HashMap<String, Vec<u8>>,
) -> Result<(), KernelError> {
    let mut missing: HashSet<String> = selected
        .iter()
        .map(|info| info.package_path.clone())
        .filter(|path| !module_bytes.contains_key(path))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    deb::walk_data(deb, &mut |path, header, contents| {
        if missing.remove(path) {
            let bytes = read_module(deb, path, header, contents)?;
            module_bytes.insert(path.to_string(), bytes);
        }
        Ok(if missing.is_empty() {
            Walk::Stop
        } else {
            Walk::Continue
        })
    })?;
    match missing.into_iter().next() {
        Some(path) => Err(KernelError::NotDebianPackage {
            path: deb.to_path_buf(),
            reason: format!("{path} disappeared between two reads of the package"),
        }),
        None => Ok(()),
    }
}

/// Renames the staging directory to `final_dir`. When another import of the
/// same package published first, its result is kept; a directory left
/// without `kernel.json` is replaced.
fn publish_dir(staging: tempfile::TempDir, final_dir: &Path) -> Result<(), KernelError> {
    let staged: PathBuf = staging.path().to_path_buf();
    match store::publish(&staged, final_dir) {
        Ok(()) => {
            let _published = staging.keep();
            Ok(())
        }
        Err(err) if final_dir.join(METADATA_FILE).is_file() => {
            // A concurrent import won the rename; the staging copy is dropped.
            drop(err);
            Ok(())
        }
        Err(err) if final_dir.exists() => {
            drop(err);
            fs::remove_dir_all(final_dir).map_err(cache_error("remove incomplete", final_dir))?;
            store::publish(&staged, final_dir).map_err(cache_error("publish", final_dir))?;
            let _published = staging.keep();
            Ok(())
        }
        Err(source) => Err(cache_error("publish", final_dir)(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_path_split() {
        assert_eq!(
            split_modules_path("lib/modules/6.1.0-57-cloud-amd64/kernel/a.ko"),
            Some(("6.1.0-57-cloud-amd64", "kernel/a.ko"))
        );
        assert_eq!(
            split_modules_path("usr/lib/modules/6.12/modules.builtin"),
            Some(("6.12", "modules.builtin"))
        );
        assert_eq!(split_modules_path("boot/vmlinuz-6.1"), None);
    }

    #[test]
    fn corrupt_package_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("broken.deb");
        fs::write(&deb, b"!<arch>\nnot really").unwrap();
        let cache = dir.path().join("cache");
        let err = import_deb(&deb, &cache, &mut |_| {}).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("broken.deb"), "{message}");
        assert!(message.contains("not a Debian package"), "{message}");
        assert!(!cache.join("kernels").exists(), "nothing is published");
    }

    #[test]
    fn real_package_import() {
        let Some(deb) = banger_test_support::kernel_deb() else {
            banger_test_support::skip("no kernel .deb in BANGER_TEST_KERNEL_DIR");
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        let kernel =
            import_deb(&deb, cache.path(), &mut |line| lines.push(line.to_string())).unwrap();

        assert!(
            kernel.release.ends_with("-cloud-amd64"),
            "{}",
            kernel.release
        );
        assert_eq!(
            kernel.dir,
            cache.path().join("kernels").join(&kernel.sha256)
        );
        assert_eq!(kernel.sha256, store::sha256_file(&deb).unwrap());
        assert!(fs::read(&kernel.vmlinux).unwrap().starts_with(b"\x7fELF"));
        let names: Vec<String> = kernel
            .modules
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        for required in REQUIRED_MODULES {
            assert!(
                names.iter().any(|n| n == required),
                "{required} in {names:?}"
            );
        }
        let position = |name: &str| names.iter().position(|n| n == name).unwrap();
        assert!(position("virtio_ring") < position("virtio_mmio"));
        assert!(position("failover") < position("net_failover"));
        assert!(position("net_failover") < position("virtio_net"));
        assert!(position("vsock") < position("vmw_vsock_virtio_transport"));
        assert!(
            lines.iter().any(|l| l == "extracting data.tar.xz"),
            "{lines:?}"
        );
        let leftovers = fs::read_dir(cache.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "staging directory is gone");

        // A second import reuses the published directory.
        let mut second_lines = Vec::new();
        let again = import_deb(&deb, cache.path(), &mut |l| {
            second_lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(again, kernel);
        assert!(second_lines.iter().any(|l| l.contains("already imported")));
        assert_eq!(
            super::super::load(cache.path(), &kernel.sha256).unwrap(),
            kernel
        );
    }
}
