//! Finding and opening the byte stream that carries the protocol.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Directory where the kernel lists virtio-serial ports.
pub const VIRTIO_PORTS_DIR: &str = "/sys/class/virtio-ports";

/// How long to wait for the agent's virtio-serial port to appear.
pub const PORT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ChannelError {
    #[error(
        "no virtio-serial port named {name:?} appeared in {dir} within {timeout:?}; \
         ports seen: {seen}. Check that the VM has a virtserialport with name={name} \
         and that the virtio_console module is loaded"
    )]
    PortNotFound {
        name: String,
        dir: PathBuf,
        timeout: Duration,
        seen: String,
    },
    #[error("opening {path} for reading and writing failed")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("duplicating the file descriptor of {path} failed")]
    Clone {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Waits until a port in `ports_dir` (normally [`VIRTIO_PORTS_DIR`]) has the
/// name `name` and returns its device node under `/dev`.
pub fn find_virtio_port(
    ports_dir: &Path,
    name: &str,
    timeout: Duration,
) -> Result<PathBuf, ChannelError> {
    let deadline = Instant::now() + timeout;
    loop {
        let ports = list_ports(ports_dir);
        if let Some((device, _)) = ports.iter().find(|(_, port_name)| port_name == name) {
            return Ok(Path::new("/dev").join(device));
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = ports
                .iter()
                .map(|(device, port_name)| format!("{device} ({port_name:?})"))
                .collect();
            return Err(ChannelError::PortNotFound {
                name: name.to_owned(),
                dir: ports_dir.to_owned(),
                timeout,
                seen: if seen.is_empty() {
                    "none".to_owned()
                } else {
                    seen.join(", ")
                },
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Returns `(device, name)` for each port such as `vport0p1`; the name file
/// is empty for ports without a name.
fn list_ports(ports_dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = fs::read_dir(ports_dir) else {
        return Vec::new();
    };
    let mut ports: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let device = entry.file_name().into_string().ok()?;
            let name = fs::read_to_string(entry.path().join("name")).ok()?;
            Some((device, name.trim_end().to_owned()))
        })
        .collect();
    ports.sort();
    ports
}

/// Opens a character device for reading and writing and returns two handles
/// to it: one for the reader thread, one for the writer thread.
pub fn open_device(path: &Path) -> Result<(File, File), ChannelError> {
    let reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| ChannelError::Open {
            path: path.to_owned(),
            source,
        })?;
    let writer = reader.try_clone().map_err(|source| ChannelError::Clone {
        path: path.to_owned(),
        source,
    })?;
    Ok((reader, writer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (device, name) in [
            ("vport0p0", ""),
            ("vport0p1", "org.qemu.guest_agent.0"),
            ("vport0p2", "banger.agent"),
        ] {
            fs::create_dir_all(dir.path().join(device)).unwrap();
            fs::write(dir.path().join(device).join("name"), format!("{name}\n")).unwrap();
        }
        let found = find_virtio_port(dir.path(), "banger.agent", Duration::ZERO).unwrap();
        assert_eq!(found, Path::new("/dev/vport0p2"));
    }

    #[test]
    fn missing_port_lists_ports_seen() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("vport0p1")).unwrap();
        fs::write(dir.path().join("vport0p1/name"), "other\n").unwrap();
        let error =
            find_virtio_port(dir.path(), "banger.agent", Duration::from_millis(150)).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(r#"vport0p1 ("other")"#), "{message}");
        assert!(message.contains("virtio_console"), "{message}");
    }
}
