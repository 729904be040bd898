//! The initramfs for a kernel whose virtio drivers are modules: the agent as
//! `/init`, the modules, and `/etc/banger/modules` listing them in load order.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{KernelArtifacts, KernelError, cache_error};
use crate::cpio::{CpioError, CpioWriter};
use crate::store;

/// Version of the initramfs layout. It is part of the content address, so
/// changing the layout must change this number.
const INITRAMFS_FORMAT: u32 = 1;
/// Guest path of the module list the agent reads in initramfs mode.
pub const MODULE_LIST_PATH: &str = "/etc/banger/modules";
/// Guest directory containing the modules.
pub const MODULE_DIR: &str = "/lib/modules";

/// Builds (or reuses) `<cache>/initramfs/<key>.cpio`, where the key is the
/// sha256 of the kernel's sha256, the agent's sha256 and the layout version.
/// The archive is uncompressed, because a guest under software emulation
/// boots faster without decompressing it.
pub fn build_initramfs(
    kernel: &KernelArtifacts,
    agent_bin: &Path,
    cache_root: &Path,
) -> Result<PathBuf, KernelError> {
    let agent = fs::read(agent_bin).map_err(|source| KernelError::ReadAgent {
        path: agent_bin.to_path_buf(),
        source,
    })?;
    let key = store::sha256_bytes(
        format!(
            "banger-initramfs\nformat={INITRAMFS_FORMAT}\nkernel={}\nagent={}\n",
            kernel.sha256,
            store::sha256_bytes(&agent)
        )
        .as_bytes(),
    );
    let dir = cache_root.join("initramfs");
    let target = dir.join(format!("{key}.cpio"));
    if target.is_file() {
        return Ok(target);
    }
    fs::create_dir_all(&dir).map_err(cache_error("create", &dir))?;

    let mut modules = Vec::with_capacity(kernel.modules.len());
    for path in &kernel.modules {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| KernelError::InvalidMetadata {
                path: kernel.dir.clone(),
                reason: format!("module path {} has no file name", path.display()),
            })?;
        let bytes = fs::read(path).map_err(cache_error("read", path))?;
        modules.push((name, bytes));
    }

    let temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .map_err(cache_error("create a temporary file in", &dir))?;
    let write_error = |source| KernelError::Initramfs {
        path: target.clone(),
        source,
    };
    let writer =
        write_archive(BufWriter::new(temp.as_file()), &agent, &modules).map_err(write_error)?;
    writer
        .into_inner()
        .map_err(|err| cache_error("write", temp.path())(err.into_error()))?
        .sync_all()
        .map_err(cache_error("fsync", temp.path()))?;
    temp.persist(&target)
        .map_err(|err| cache_error("publish", &target)(err.error))?;
    store::fsync_path(&dir).map_err(cache_error("fsync", &dir))?;
    Ok(target)
}

fn write_archive<W: Write>(
    out: W,
    agent: &[u8],
    modules: &[(String, Vec<u8>)],
) -> Result<W, CpioError> {
    let mut cpio = CpioWriter::new(out);
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/newroot", 0o755),
        ("/etc", 0o755),
        ("/etc/banger", 0o755),
        ("/lib", 0o755),
        (MODULE_DIR, 0o755),
    ] {
        cpio.add_directory(dir, mode)?;
    }
    cpio.add_char_device("/dev/console", 0o600, 5, 1)?;
    cpio.add_char_device("/dev/null", 0o666, 1, 3)?;
    cpio.add_file("/init", 0o755, agent)?;

    let mut list = String::new();
    for (name, bytes) in modules {
        let guest_path = format!("{MODULE_DIR}/{name}");
        cpio.add_file(&guest_path, 0o644, bytes)?;
        list.push_str(&guest_path);
        list.push('\n');
    }
    cpio.add_file(MODULE_LIST_PATH, 0o644, list.as_bytes())?;
    cpio.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_kernel(cache: &Path, sha256: &str, modules: &[&str]) -> KernelArtifacts {
        let dir = cache.join("kernels").join(sha256);
        fs::create_dir_all(dir.join("modules")).unwrap();
        let modules = modules
            .iter()
            .map(|name| {
                let path = dir.join("modules").join(format!("{name}.ko"));
                fs::write(&path, format!("module {name}")).unwrap();
                path
            })
            .collect();
        KernelArtifacts {
            sha256: sha256.to_string(),
            release: "6.1.0-test".to_string(),
            bzimage: Some(dir.join("vmlinuz")),
            vmlinux: dir.join("vmlinux"),
            modules,
            dir,
        }
    }

    fn list_archive(path: &Path) -> Option<String> {
        let cpio = banger_process::find_in_path("cpio", std::env::var_os("PATH").as_deref())?;
        let output = std::process::Command::new(cpio)
            .args(["-itv", "-F"])
            .arg(path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        Some(String::from_utf8(output.stdout).unwrap())
    }

    #[test]
    fn initramfs_layout_and_reuse() {
        let cache = tempfile::tempdir().unwrap();
        let kernel = fake_kernel(cache.path(), &"a".repeat(64), &["virtio_ring", "virtio"]);
        let agent = cache.path().join("agent");
        fs::write(&agent, b"\x7fELF agent").unwrap();

        let first = build_initramfs(&kernel, &agent, cache.path()).unwrap();
        assert_eq!(first.parent().unwrap(), cache.path().join("initramfs"));
        assert_eq!(first.extension().unwrap(), "cpio");
        let bytes = fs::read(&first).unwrap();
        assert!(bytes.starts_with(b"070701"));

        let second = build_initramfs(&kernel, &agent, cache.path()).unwrap();
        assert_eq!(first, second, "same inputs reuse the archive");

        fs::write(&agent, b"\x7fELF agent v2").unwrap();
        let third = build_initramfs(&kernel, &agent, cache.path()).unwrap();
        assert_ne!(first, third, "a new agent gives a new archive");
        let entries = fs::read_dir(cache.path().join("initramfs"))
            .unwrap()
            .count();
        assert_eq!(entries, 2, "no temporary files remain");

        let Some(listing) = list_archive(&first) else {
            banger_test_support::skip_check("the cpio listing check", "`cpio` is not installed");
            return;
        };
        let expect = [
            ("crw-------", "dev/console"),
            ("crw-rw-rw-", "dev/null"),
            ("-rwxr-xr-x", "init"),
            ("drwxr-xr-x", "newroot"),
            ("dr-xr-xr-x", "proc"),
            ("dr-xr-xr-x", "sys"),
            ("-rw-r--r--", "lib/modules/virtio_ring.ko"),
            ("-rw-r--r--", "etc/banger/modules"),
        ];
        for (mode, name) in expect {
            assert!(
                listing
                    .lines()
                    .any(|line| line.starts_with(mode) && line.ends_with(&format!(" {name}"))),
                "{mode} {name} missing from:\n{listing}"
            );
        }
    }

    #[test]
    fn module_list_follows_load_order() {
        let modules = vec![
            ("virtio_ring.ko".to_string(), b"a".to_vec()),
            ("virtio.ko".to_string(), b"b".to_vec()),
        ];
        let archive = write_archive(Vec::new(), b"agent", &modules).unwrap();
        let text = String::from_utf8_lossy(&archive);
        let expected = "/lib/modules/virtio_ring.ko\n/lib/modules/virtio.ko\n";
        assert!(text.contains(expected), "module list in load order");
    }
}
