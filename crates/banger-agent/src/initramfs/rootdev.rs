//! Waiting for the root device named by `root=`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::cmdline::RootSpec;
use super::superblock::read_ext4_identity;

/// How long to wait for the root device, and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct WaitPolicy {
    pub timeout: Duration,
    pub interval: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            interval: Duration::from_millis(50),
        }
    }
}

/// Locations of the block device list and of the device nodes. Tests point
/// them at a temporary tree.
#[derive(Debug, Clone)]
pub struct DeviceDirs {
    /// `/sys/class/block`: one entry per block device and partition.
    pub sys_class_block: PathBuf,
    /// `/dev`: the device nodes, named like the entries above.
    pub dev: PathBuf,
}

impl Default for DeviceDirs {
    fn default() -> Self {
        Self {
            sys_class_block: PathBuf::from("/sys/class/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

#[derive(Debug, Error)]
pub enum RootDeviceError {
    #[error(
        "root device {spec} did not appear within {timeout:?}; block devices seen: {seen}. \
         Check root= on the kernel command line and that the disk driver module \
         (virtio_blk, virtio_mmio) is in the module list"
    )]
    TimedOut {
        spec: String,
        timeout: Duration,
        seen: String,
    },
}

/// Waits until the device named by `spec` exists and returns its path.
/// `LABEL=` and `UUID=` are matched against the ext superblock of every
/// block device listed in `dirs.sys_class_block`.
pub fn wait_for_root(
    spec: &RootSpec,
    dirs: &DeviceDirs,
    policy: WaitPolicy,
) -> Result<PathBuf, RootDeviceError> {
    let deadline = Instant::now() + policy.timeout;
    loop {
        if let Some(path) = find_root(spec, dirs) {
            return Ok(path);
        }
        if Instant::now() >= deadline {
            return Err(RootDeviceError::TimedOut {
                spec: spec.to_string(),
                timeout: policy.timeout,
                seen: describe_block_devices(dirs),
            });
        }
        thread::sleep(policy.interval);
    }
}

fn find_root(spec: &RootSpec, dirs: &DeviceDirs) -> Option<PathBuf> {
    match spec {
        RootSpec::Device(path) => path.exists().then(|| path.clone()),
        RootSpec::Label(label) => find_by(dirs, |identity| identity.label == *label),
        RootSpec::Uuid(uuid) => find_by(dirs, |identity| identity.uuid_string() == *uuid),
    }
}

fn find_by(
    dirs: &DeviceDirs,
    matches: impl Fn(&super::superblock::Ext4Identity) -> bool,
) -> Option<PathBuf> {
    block_device_names(&dirs.sys_class_block)
        .into_iter()
        .map(|name| dirs.dev.join(name))
        .find(|path| {
            // Devices that cannot be opened or read (an empty CD drive, a
            // node devtmpfs has not created yet) are skipped.
            let Ok(mut device) = File::open(path) else {
                return false;
            };
            matches!(read_ext4_identity(&mut device), Ok(Some(identity)) if matches(&identity))
        })
}

/// Names of the entries in `/sys/class/block`, sorted so that whole disks
/// come before their partitions.
fn block_device_names(sys_class_block: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sys_class_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Describes every block device for the timeout message, such as
/// `vda (ext4 label "root", UUID 0f3a...), vdb (no ext4 file system)`.
fn describe_block_devices(dirs: &DeviceDirs) -> String {
    let names = block_device_names(&dirs.sys_class_block);
    if names.is_empty() {
        return "none".to_owned();
    }
    let descriptions: Vec<String> = names
        .iter()
        .map(|name| {
            let path = dirs.dev.join(name);
            let description = match File::open(&path) {
                Err(error) => format!("cannot open {}: {error}", path.display()),
                Ok(mut device) => match read_ext4_identity(&mut device) {
                    Ok(Some(identity)) => format!(
                        "ext4 label {:?}, UUID {}",
                        identity.label,
                        identity.uuid_string()
                    ),
                    Ok(None) => "no ext4 file system".to_owned(),
                    Err(error) => format!("reading superblock failed: {error}"),
                },
            };
            format!("{name} ({description})")
        })
        .collect();
    descriptions.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Builds a fake `/sys/class/block` and `/dev` in which `vda` is an
    /// empty file and `vdb` an ext4 image with the given label and UUID.
    fn fake_devices(label: &str, uuid: &str) -> (tempfile::TempDir, DeviceDirs) {
        let root = tempfile::tempdir().unwrap();
        let dirs = DeviceDirs {
            sys_class_block: root.path().join("sys/class/block"),
            dev: root.path().join("dev"),
        };
        for name in ["vda", "vdb"] {
            fs::create_dir_all(dirs.sys_class_block.join(name)).unwrap();
        }
        fs::create_dir_all(&dirs.dev).unwrap();
        fs::write(dirs.dev.join("vda"), vec![0u8; 4096]).unwrap();
        let status = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-U", uuid])
            .arg(dirs.dev.join("vdb"))
            .arg("4M")
            .status()
            .expect("mkfs.ext4 must be installed (Debian package e2fsprogs)");
        assert!(status.success());
        (root, dirs)
    }

    const QUICK: WaitPolicy = WaitPolicy {
        timeout: Duration::from_millis(200),
        interval: Duration::from_millis(20),
    };

    #[test]
    fn finds_root_by_label_and_uuid() {
        let uuid = "0f3a2c4e-1b2d-4c5e-8f90-a1b2c3d4e5f6";
        let (_root, dirs) = fake_devices("rootfs", uuid);
        let expected = dirs.dev.join("vdb");

        let by_label = wait_for_root(&RootSpec::Label("rootfs".into()), &dirs, QUICK).unwrap();
        assert_eq!(by_label, expected);

        let by_uuid = wait_for_root(&RootSpec::Uuid(uuid.into()), &dirs, QUICK).unwrap();
        assert_eq!(by_uuid, expected);
    }

    #[test]
    fn missing_label_times_out_listing_devices() {
        let (_root, dirs) = fake_devices("rootfs", "0f3a2c4e-1b2d-4c5e-8f90-a1b2c3d4e5f6");
        let error = wait_for_root(&RootSpec::Label("other".into()), &dirs, QUICK).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("LABEL=other"), "{message}");
        assert!(message.contains("vda (no ext4 file system)"), "{message}");
        assert!(message.contains(r#"vdb (ext4 label "rootfs""#), "{message}");
    }

    #[test]
    fn device_path_appears_while_waiting() {
        let root = tempfile::tempdir().unwrap();
        let dirs = DeviceDirs {
            sys_class_block: root.path().join("sys"),
            dev: root.path().join("dev"),
        };
        let device = root.path().join("vda");
        let creator = {
            let device = device.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                fs::write(device, b"").unwrap();
            })
        };
        let policy = WaitPolicy {
            timeout: Duration::from_secs(5),
            interval: Duration::from_millis(10),
        };
        let found = wait_for_root(&RootSpec::Device(device.clone()), &dirs, policy).unwrap();
        assert_eq!(found, device);
        creator.join().unwrap();
    }
}
