//! Selection of the kernel modules a guest needs on virtio-mmio, and their
//! load order from the `depends=` entries of each module's `.modinfo`.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use object::{Object, ObjectSection};

use super::KernelError;
use super::deb::MAX_MEMBER_FILE;

/// Modules the initramfs loads so the guest finds its disk, network, console
/// and vsock devices; their dependencies are added from `.modinfo`.
pub const REQUIRED_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// A module found in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: String,
    pub depends: Vec<String>,
    /// Path inside the package's `data.tar`, or in the modules directory.
    pub package_path: String,
    /// The kernel release from the module's `vermagic=` entry.
    pub release: Option<String>,
}

/// Returns the module name for a file name such as `virtio-blk.ko.xz`; the
/// kernel spells module names with `_` where file names may use `-`.
pub fn module_name_from_path(path: &str) -> Option<String> {
    let file_name = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// Returns the names of the modules listed in `modules.builtin`.
pub fn builtin_names(modules_builtin: &str) -> HashSet<String> {
    modules_builtin
        .lines()
        .filter_map(|line| module_name_from_path(line.trim()))
        .collect()
}

/// Decompresses a module file according to its suffix, up to
/// [`MAX_MEMBER_FILE`] bytes.
pub fn decompress_module(path: &str, bytes: Vec<u8>) -> Result<Vec<u8>, std::io::Error> {
    let decoder: Box<dyn Read + '_> = if path.ends_with(".ko.xz") {
        Box::new(xz2::read::XzDecoder::new(&bytes[..]))
    } else if path.ends_with(".ko.zst") {
        Box::new(zstd::stream::read::Decoder::new(&bytes[..])?)
    } else if path.ends_with(".ko.gz") {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        return Ok(bytes);
    };
    let mut output = Vec::new();
    decoder.take(MAX_MEMBER_FILE + 1).read_to_end(&mut output)?;
    if output.len() as u64 > MAX_MEMBER_FILE {
        return Err(std::io::Error::other(format!(
            "decompressed module exceeds {MAX_MEMBER_FILE} bytes"
        )));
    }
    Ok(output)
}

/// Reads the `name=` and `depends=` entries of an ELF module's `.modinfo`
/// section, a sequence of NUL-terminated `key=value` strings.
pub fn parse_modinfo(package_path: &str, elf: &[u8]) -> Result<ModuleInfo, KernelError> {
    let invalid = |reason: String| KernelError::InvalidModule {
        module: package_path.to_string(),
        reason,
    };
    let file =
        object::File::parse(elf).map_err(|err| invalid(format!("not an ELF file: {err}")))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| invalid("no .modinfo section".to_string()))?;
    let data = section
        .data()
        .map_err(|err| invalid(format!("unreadable .modinfo section: {err}")))?;

    let mut name = None;
    let mut release = None;
    let mut depends = Vec::new();
    for entry in data.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some(value) = entry.strip_prefix("name=") {
            name = Some(value.to_string());
        } else if let Some(value) = entry.strip_prefix("vermagic=") {
            release = value.split_whitespace().next().map(str::to_string);
        } else if let Some(value) = entry.strip_prefix("depends=") {
            depends = value
                .split(',')
                .map(str::trim)
                .filter(|dep| !dep.is_empty())
                .map(|dep| dep.replace('-', "_"))
                .collect();
        }
    }
    let name = match name {
        Some(name) => name,
        // Older kernels may not record `name=`. The file name is the
        // module name there.
        None => module_name_from_path(package_path)
            .ok_or_else(|| invalid("no name= entry and no .ko file name".to_string()))?,
    };
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        return Err(invalid(format!("invalid module name {name:?}")));
    }
    Ok(ModuleInfo {
        name,
        depends,
        package_path: package_path.to_string(),
        release,
    })
}

/// Orders `required` and their dependencies so every module follows the ones
/// it depends on. Built-in modules are left out. Among independent modules
/// the order of `required`, then of `depends=`, is kept.
pub fn load_order(
    required: &[&str],
    available: &HashMap<String, ModuleInfo>,
    builtin: &HashSet<String>,
) -> Result<Vec<String>, KernelError> {
    let mut order = Vec::new();
    let mut done = HashSet::new();
    let mut stack = Vec::new();
    for name in required {
        visit(
            name, None, available, builtin, &mut done, &mut stack, &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    required_by: Option<&str>,
    available: &HashMap<String, ModuleInfo>,
    builtin: &HashSet<String>,
    done: &mut HashSet<String>,
    stack: &mut Vec<String>,
    order: &mut Vec<String>,
) -> Result<(), KernelError> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if let Some(position) = stack.iter().position(|entry| entry == name) {
        let mut cycle = stack[position..].to_vec();
        cycle.push(name.to_string());
        return Err(KernelError::ModuleCycle {
            cycle: cycle.join(" -> "),
        });
    }
    let info = available
        .get(name)
        .ok_or_else(|| KernelError::ModuleNotFound {
            module: name.to_string(),
            required_by: required_by.map(str::to_string),
        })?;
    stack.push(name.to_string());
    for dependency in &info.depends {
        visit(
            dependency,
            Some(name),
            available,
            builtin,
            done,
            stack,
            order,
        )?;
    }
    stack.pop();
    done.insert(name.to_string());
    order.push(name.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str]) -> (String, ModuleInfo) {
        (
            name.to_string(),
            ModuleInfo {
                name: name.to_string(),
                depends: depends.iter().map(|d| d.to_string()).collect(),
                package_path: format!("lib/modules/6.1.0/kernel/{name}.ko"),
                release: None,
            },
        )
    }

    /// Returns the dependency graph of Debian's 6.1 cloud kernel modules.
    fn debian_cloud_graph() -> HashMap<String, ModuleInfo> {
        HashMap::from([
            module("virtio_ring", &[]),
            module("virtio", &[]),
            module("virtio_mmio", &["virtio", "virtio_ring"]),
            module("virtio_blk", &["virtio", "virtio_ring"]),
            module("failover", &[]),
            module("net_failover", &["failover"]),
            module("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
            module("virtio_console", &["virtio", "virtio_ring"]),
            module("vsock", &[]),
            module(
                "vmw_vsock_virtio_transport_common",
                &["vsock", "virtio", "virtio_ring"],
            ),
            module(
                "vmw_vsock_virtio_transport",
                &[
                    "virtio",
                    "vmw_vsock_virtio_transport_common",
                    "virtio_ring",
                    "vsock",
                ],
            ),
        ])
    }

    fn assert_dependencies_first(order: &[String], graph: &HashMap<String, ModuleInfo>) {
        for (index, name) in order.iter().enumerate() {
            for dependency in &graph[name].depends {
                if let Some(dep_index) = order.iter().position(|n| n == dependency) {
                    assert!(dep_index < index, "{dependency} must precede {name}");
                }
            }
        }
    }

    #[test]
    fn order_puts_dependencies_first() {
        let graph = debian_cloud_graph();
        let order = load_order(REQUIRED_MODULES, &graph, &HashSet::new()).unwrap();

        assert_eq!(order.len(), REQUIRED_MODULES.len());
        assert_eq!(order[..3], ["virtio_ring", "virtio", "virtio_mmio"]);
        assert_dependencies_first(&order, &graph);
    }

    #[test]
    fn order_pulls_in_unlisted_dependencies() {
        let graph = HashMap::from([
            module("virtio_net", &["net_failover"]),
            module("net_failover", &["failover"]),
            module("failover", &[]),
        ]);
        let order = load_order(&["virtio_net"], &graph, &HashSet::new()).unwrap();
        assert_eq!(order, ["failover", "net_failover", "virtio_net"]);
    }

    #[test]
    fn order_skips_builtin_modules() {
        let graph = debian_cloud_graph();
        let builtin = HashSet::from(["virtio".to_string(), "virtio_ring".to_string()]);
        let order = load_order(REQUIRED_MODULES, &graph, &builtin).unwrap();

        assert!(!order.iter().any(|n| n == "virtio" || n == "virtio_ring"));
        assert_eq!(order[0], "virtio_mmio");
        assert_dependencies_first(&order, &graph);
    }

    #[test]
    fn order_reports_missing_dependency() {
        let graph = HashMap::from([module("virtio_blk", &["virtio"])]);
        let err = load_order(&["virtio_blk"], &graph, &HashSet::new()).unwrap_err();
        match err {
            KernelError::ModuleNotFound {
                module,
                required_by,
            } => {
                assert_eq!(module, "virtio");
                assert_eq!(required_by.as_deref(), Some("virtio_blk"));
            }
            other => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn order_reports_cycle() {
        let graph = HashMap::from([
            module("a", &["b"]),
            module("b", &["c"]),
            module("c", &["a"]),
        ]);
        let err = load_order(&["a"], &graph, &HashSet::new()).unwrap_err();
        assert!(
            matches!(err, KernelError::ModuleCycle { ref cycle } if cycle == "a -> b -> c -> a")
        );
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name_from_path("kernel/drivers/block/virtio_blk.ko").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(
            module_name_from_path("kernel/arch/x86/crypto/aegis128-aesni.ko.xz").as_deref(),
            Some("aegis128_aesni")
        );
        assert_eq!(module_name_from_path("modules.order"), None);
        let builtin =
            builtin_names("kernel/fs/binfmt_script.ko\nkernel/drivers/virtio/virtio.ko\n");
        assert!(builtin.contains("binfmt_script"));
        assert!(builtin.contains("virtio"));
    }

    #[test]
    fn compressed_modules_are_decompressed() {
        use std::io::Write;

        let module = b"\x7fELF module".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&module).unwrap();
        let xz = {
            let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
            encoder.write_all(&module).unwrap();
            encoder.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&module[..], 3).unwrap();

        assert_eq!(
            decompress_module("a.ko.gz", gz.finish().unwrap()).unwrap(),
            module
        );
        assert_eq!(decompress_module("a.ko.xz", xz).unwrap(), module);
        assert_eq!(decompress_module("a.ko.zst", zst).unwrap(), module);
        assert_eq!(decompress_module("a.ko", module.clone()).unwrap(), module);
        assert!(decompress_module("a.ko.xz", b"garbage".to_vec()).is_err());
    }

    #[test]
    fn modinfo_rejects_non_elf() {
        let err = parse_modinfo("x.ko", b"not an elf").unwrap_err();
        assert!(err.to_string().contains("x.ko"), "{err}");
    }
}
