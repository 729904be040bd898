//! The files of a Firecracker run directory: the API and vsock sockets,
//! which Firecracker 1.12.1 leaves behind when it exits, and the log files,
//! readable only by their owner.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use tokio::net::UnixStream;

use super::RunPaths;
use crate::qemu::read_log_tail;
use crate::types::LaunchSpec;
use crate::vmm::VmmError;

/// Rejects a run directory whose Firecracker still serves its API socket,
/// then removes the sockets a previous Firecracker left behind.
pub(super) async fn prepare_run_dir(spec: &LaunchSpec, paths: &RunPaths) -> Result<(), VmmError> {
    if let Some(pid) = socket_owner(&paths.api_socket).await {
        return Err(VmmError::AlreadyRunning {
            run_dir: spec.run_dir.clone(),
            pid,
        });
    }
    remove_sockets(paths)
}

/// Returns the pid of the process that accepts connections on the Unix
/// socket at `path` (`SO_PEERCRED`), or `None` when nothing listens there.
pub(super) async fn socket_owner(path: &Path) -> Option<i32> {
    if !is_socket(path) {
        return None;
    }
    let stream = UnixStream::connect(path).await.ok()?;
    stream.peer_cred().ok()?.pid()
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket())
}

/// Removes the API and vsock sockets. Only sockets are removed, so a file
/// put there by someone else stays.
pub(super) fn remove_sockets(paths: &RunPaths) -> Result<(), VmmError> {
    for socket in [&paths.api_socket, &paths.vsock_socket] {
        if !is_socket(socket) {
            continue;
        }
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(VmmError::RemoveFile {
                    path: socket.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub(super) enum OpenMode {
    Append,
    Truncate,
}

/// Opens `path` for writing, creating it with mode 0600 when missing.
pub(super) fn open_private(path: &Path, mode: OpenMode) -> Result<File, VmmError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).mode(0o600);
    match mode {
        OpenMode::Append => options.append(true),
        OpenMode::Truncate => options.write(true).truncate(true),
    };
    options.open(path).map_err(|source| VmmError::CreateFile {
        path: path.to_owned(),
        source,
    })
}

/// Returns the ends of Firecracker's log and of its standard error, which
/// together give the reason it exited.
pub(super) fn log_tail(paths: &RunPaths) -> String {
    let log = read_log_tail(&paths.log);
    let stderr = read_log_tail(&paths.stderr);
    format!(
        "{log}; standard error ({}): {stderr}",
        paths.stderr.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_private_creates_mode_0600() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        drop(open_private(&path, OpenMode::Truncate).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"");

        let appended = dir.path().join("console");
        std::fs::write(&appended, b"kept\n").unwrap();
        io::Write::write_all(
            &mut open_private(&appended, OpenMode::Append).unwrap(),
            b"more\n",
        )
        .unwrap();
        assert_eq!(std::fs::read(&appended).unwrap(), b"kept\nmore\n");

        let fresh = dir.path().join("fresh");
        drop(open_private(&fresh, OpenMode::Append).unwrap());
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
