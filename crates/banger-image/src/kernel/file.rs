//! `import_kernel_file`: a kernel given as a file (an ELF vmlinux or an x86
//! bzImage), with its modules read from a `/lib/modules/<release>` tree
//! when the virtio drivers are not built in.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::import::{StagedKernel, publish_kernel};
use super::modules::{self, ModuleInfo, REQUIRED_MODULES};
use super::{KernelArtifacts, KernelError, METADATA_FILE, elf, kernel_dir};
use crate::store;

/// Maximum size of a kernel file that banger reads.
const MAX_KERNEL_FILE: u64 = 1 << 30;
/// Directory levels searched for modules below `<modules dir>/kernel`.
const MAX_MODULE_DEPTH: usize = 12;

/// Imports a kernel file into `<cache>/kernels/<sha256>/`, where the
/// address covers the kernel and the selected modules. Without
/// `modules_dir` the kernel must have the virtio drivers built in.
pub fn import_kernel_file(
    kernel: &Path,
    modules_dir: Option<&Path>,
    cache_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<KernelArtifacts, KernelError> {
    let bytes = read_kernel(kernel)?;
    let (bzimage, vmlinux) = if elf::is_elf(&bytes) {
        (None, bytes)
    } else {
        if !super::bzimage::has_header_magic(&bytes) {
            return Err(KernelError::NotKernelImage {
                path: kernel.to_path_buf(),
                reason: None,
            });
        }
        // A bzImage header with a broken payload is named as such.
        super::bzimage::payload(&bytes).map_err(|error| KernelError::NotKernelImage {
            path: kernel.to_path_buf(),
            reason: Some(error.to_string()),
        })?;
        progress(&format!("extracting vmlinux from {}", kernel.display()));
        let vmlinux = super::extract_vmlinux(&bytes)?;
        (Some(bytes), vmlinux)
    };
    let release = elf::release_from_banner(&vmlinux).ok_or_else(|| KernelError::NoRelease {
        path: kernel.to_path_buf(),
    })?;
    if bzimage.is_none() {
        progress(&format!(
            "{} is the ELF vmlinux of Linux {release}",
            kernel.display()
        ));
    }

    let selected = match modules_dir {
        Some(dir) => {
            let selected = select_modules(dir, &release)?;
            let names: Vec<&str> = selected.iter().map(|(name, _)| name.as_str()).collect();
            progress(&format!("selected modules: {}", names.join(" ")));
            selected
        }
        None => {
            progress(
                "no modules directory given: the kernel must have the virtio-mmio, block, network, console and vsock drivers built in",
            );
            Vec::new()
        }
    };

    let mut address = format!(
        "banger-kernel-file\nkernel={}\n",
        store::sha256_bytes(bzimage.as_deref().unwrap_or(&vmlinux))
    );
    for (name, bytes) in &selected {
        address.push_str(&format!("module={name} {}\n", store::sha256_bytes(bytes)));
    }
    let sha256 = store::sha256_bytes(address.as_bytes());
    if kernel_dir(cache_root, &sha256)
        .join(METADATA_FILE)
        .is_file()
    {
        progress(&format!("kernel {sha256} already imported"));
        return super::load(cache_root, &sha256);
    }

    let modules: Vec<(String, &[u8])> = selected
        .iter()
        .map(|(name, bytes)| (name.clone(), bytes.as_slice()))
        .collect();
    let file_name = kernel
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = match modules_dir {
        Some(dir) => format!("{file_name} with modules from {}", dir.display()),
        None => file_name,
    };
    publish_kernel(
        cache_root,
        &StagedKernel {
            sha256: &sha256,
            release: &release,
            source,
            bzimage: bzimage.as_deref(),
            vmlinux: &vmlinux,
            modules: &modules,
        },
    )?;
    progress(&format!("kernel {release} imported as {sha256}"));
    super::load(cache_root, &sha256)
}

fn read_kernel(path: &Path) -> Result<Vec<u8>, KernelError> {
    let read_error = |source| KernelError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let metadata = fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() {
        return Err(KernelError::NotKernelImage {
            path: path.to_path_buf(),
            reason: Some("it is not a regular file".into()),
        });
    }
    if metadata.len() > MAX_KERNEL_FILE {
        return Err(KernelError::NotKernelImage {
            path: path.to_path_buf(),
            reason: Some(format!("it is larger than {MAX_KERNEL_FILE} bytes")),
        });
    }
    fs::read(path).map_err(read_error)
}

/// Reads the required modules and their dependencies from `dir`, a
/// `/lib/modules/<release>` tree, in load order. Only the modules in the
/// dependency closure are decompressed.
fn select_modules(dir: &Path, release: &str) -> Result<Vec<(String, Vec<u8>)>, KernelError> {
    let tree = dir.join("kernel");
    if !tree.is_dir() {
        return Err(KernelError::NotModulesDir {
            path: dir.to_path_buf(),
        });
    }
    let mut files = HashMap::new();
    index_modules(&tree, 0, &mut files)?;
    let builtin = match fs::read_to_string(dir.join("modules.builtin")) {
        Ok(text) => modules::builtin_names(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
        Err(source) => {
            return Err(KernelError::ReadFile {
                path: dir.join("modules.builtin"),
                source,
            });
        }
    };

    let mut available: HashMap<String, ModuleInfo> = HashMap::new();
    let mut bytes_by_name: HashMap<String, Vec<u8>> = HashMap::new();
    let mut pending: Vec<String> = REQUIRED_MODULES.iter().map(|n| n.to_string()).collect();
    while let Some(name) = pending.pop() {
        if builtin.contains(&name) || available.contains_key(&name) {
            continue;
        }
        // A module that is missing is reported by `load_order` with the
        // module that needs it.
        let Some(path) = files.get(&name) else {
            continue;
        };
        let display = path.display().to_string();
        let raw = fs::read(path).map_err(|source| KernelError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let elf = modules::decompress_module(&display, raw).map_err(|error| {
            KernelError::InvalidModule {
                module: display.clone(),
                reason: format!("failed to decompress: {error}"),
            }
        })?;
        let info = modules::parse_modinfo(&display, &elf)?;
        if let Some(module_release) = &info.release
            && module_release != release
        {
            return Err(KernelError::ModuleReleaseMismatch {
                module: info.name.clone(),
                dir: dir.to_path_buf(),
                module_release: module_release.clone(),
                release: release.to_string(),
            });
        }
        pending.extend(info.depends.iter().cloned());
        bytes_by_name.insert(name.clone(), elf);
        available.insert(name, info);
    }
    let order = modules::load_order(REQUIRED_MODULES, &available, &builtin)?;
    Ok(order
        .into_iter()
        .map(|name| {
            let bytes = bytes_by_name.remove(&name).unwrap_or_default();
            (name, bytes)
        })
        .collect())
}

/// Maps module names to their files below `dir`.
fn index_modules(
    dir: &Path,
    depth: usize,
    files: &mut HashMap<String, PathBuf>,
) -> Result<(), KernelError> {
    if depth > MAX_MODULE_DEPTH {
        return Ok(());
    }
    let read_error = |source| KernelError::ReadFile {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    // A stable order, so the same tree always yields the same files.
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_error)?;
        if file_type.is_dir() {
            index_modules(&path, depth + 1, files)?;
        } else if let Some(name) = modules::module_name_from_path(&path.to_string_lossy()) {
            files.entry(name).or_insert(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unpacks the test kernel package with dpkg-deb; None (and a note) when
    /// the package or dpkg-deb is missing.
    fn unpacked_test_kernel(into: &Path) -> Option<(PathBuf, PathBuf, String)> {
        let Some(deb) = banger_test_support::kernel_deb() else {
            banger_test_support::skip("no kernel .deb in BANGER_TEST_KERNEL_DIR");
            return None;
        };
        let status = std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(into)
            .status();
        if !status.is_ok_and(|status| status.success()) {
            banger_test_support::skip(format!("dpkg-deb -x failed on {}", deb.display()));
            return None;
        }
        let vmlinuz = fs::read_dir(into.join("boot"))
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })?;
        let release =
            vmlinuz.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
        let modules = into.join("lib/modules").join(&release);
        Some((vmlinuz, modules, release))
    }

    #[test]
    fn bzimage_with_modules_directory_imports() {
        let unpacked = tempfile::tempdir().unwrap();
        let Some((vmlinuz, modules_dir, release)) = unpacked_test_kernel(unpacked.path()) else {
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        let kernel = import_kernel_file(&vmlinuz, Some(&modules_dir), cache.path(), &mut |line| {
            lines.push(line.to_string())
        })
        .unwrap();
        assert_eq!(kernel.release, release);
        assert!(kernel.bzimage.is_some());
        assert_eq!(
            kernel.qemu_image().unwrap(),
            kernel.bzimage.as_deref().unwrap()
        );
        assert!(fs::read(&kernel.vmlinux).unwrap().starts_with(b"\x7fELF"));
        let names: Vec<String> = kernel
            .modules
            .iter()
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        for required in REQUIRED_MODULES {
            assert!(
                names.iter().any(|name| name == required),
                "{required} in {names:?}"
            );
        }
        let position = |name: &str| names.iter().position(|n| n == name).unwrap();
        assert!(position("virtio_ring") < position("virtio_blk"));
        assert!(position("vsock") < position("vmw_vsock_virtio_transport"));
        // Modules are stored decompressed, as ELF files.
        for module in &kernel.modules {
            assert!(fs::read(module).unwrap().starts_with(b"\x7fELF"));
        }

        // The same inputs give the same address; the second import reuses it.
        let mut again_lines = Vec::new();
        let again = import_kernel_file(&vmlinuz, Some(&modules_dir), cache.path(), &mut |line| {
            again_lines.push(line.to_string())
        })
        .unwrap();
        assert_eq!(again, kernel);
        assert!(
            again_lines
                .iter()
                .any(|line| line.contains("already imported"))
        );

        // The ELF vmlinux alone is a different kernel: no modules, no bzImage.
        let vmlinux = unpacked.path().join("vmlinux");
        fs::copy(&kernel.vmlinux, &vmlinux).unwrap();
        let bare = import_kernel_file(&vmlinux, None, cache.path(), &mut |_| {}).unwrap();
        assert_ne!(bare.sha256, kernel.sha256);
        assert_eq!(bare.release, release);
        assert!(bare.bzimage.is_none());
        assert!(bare.modules.is_empty());
        let pvh = elf::has_pvh_entry(&fs::read(&bare.vmlinux).unwrap());
        assert_eq!(bare.qemu_image().is_ok(), pvh);
    }

    #[test]
    fn non_kernel_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let text = dir.path().join("notes.txt");
        fs::write(
            &text,
            "just some text, long enough to hold a boot header? no",
        )
        .unwrap();
        let error = import_kernel_file(&text, None, &cache, &mut |_| {}).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("notes.txt"), "{message}");
        assert!(
            message.contains("neither an ELF vmlinux nor an x86 bzImage"),
            "{message}"
        );
        assert!(message.contains("/boot/vmlinuz-<release>"), "{message}");
        let short = dir.path().join("short.txt");
        fs::write(&short, "13 bytes long").unwrap();
        let message = import_kernel_file(&short, None, &cache, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("neither an ELF vmlinux nor an x86 bzImage;"),
            "{message}"
        );
        assert!(!message.contains("truncated"), "{message}");

        // An ELF file without a kernel banner has no release.
        let elf_file = dir.path().join("tool");
        fs::write(&elf_file, b"\x7fELF\x02\x01\x01 not a kernel").unwrap();
        let error = import_kernel_file(&elf_file, None, &cache, &mut |_| {}).unwrap_err();
        assert!(matches!(error, KernelError::NoRelease { .. }), "{error}");

        let error =
            import_kernel_file(&dir.path().join("missing"), None, &cache, &mut |_| {}).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        assert!(!cache.join("kernels").exists(), "nothing is published");
    }

    #[test]
    fn modules_directory_without_kernel_tree_is_rejected() {
        let unpacked = tempfile::tempdir().unwrap();
        let Some((vmlinuz, _, _)) = unpacked_test_kernel(unpacked.path()) else {
            return;
        };
        let empty = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let error = import_kernel_file(&vmlinuz, Some(empty.path()), cache.path(), &mut |_| {})
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("no kernel/ subdirectory"), "{message}");
        assert!(
            message.contains(&empty.path().display().to_string()),
            "{message}"
        );
        assert!(!cache.path().join("kernels").exists());
    }
}
