//! QEMU's `-pidfile`: QEMU 7.2 writes its pid there and holds a POSIX record
//! lock (`lockf`) on the file for as long as it runs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::vmm::VmmError;

/// Returns the pid of the process that holds the lock on `path`, or `None`
/// when the file is missing or unlocked.
pub fn lock_holder(path: &Path) -> io::Result<Option<i32>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };

    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a
    // valid value; the fields that F_GETLK reads are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    // SAFETY: the descriptor is open for the whole call (owned by `file`) and
    // `lock` is a valid, exclusively borrowed flock that F_GETLK fills in.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    if lock.l_type == libc::F_UNLCK as libc::c_short {
        Ok(None)
    } else {
        Ok(Some(lock.l_pid))
    }
}

/// Reads the pid that QEMU wrote to `path`; `Ok(None)` while the file is
/// missing or still empty.
pub fn read_pid(path: &Path) -> Result<Option<u32>, VmmError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(VmmError::ReadPidFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(Some(pid)),
        _ => Err(VmmError::InvalidPidFile {
            path: path.to_owned(),
            content: text.chars().take(40).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_pid_cases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qemu.pid");
        assert_eq!(read_pid(&path).unwrap(), None, "missing file");
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_pid(&path).unwrap(), None, "empty file");
        std::fs::write(&path, "1234\n").unwrap();
        assert_eq!(read_pid(&path).unwrap(), Some(1234));
        std::fs::write(&path, "12x\n").unwrap();
        assert!(matches!(
            read_pid(&path),
            Err(VmmError::InvalidPidFile { .. })
        ));
        std::fs::write(&path, "0\n").unwrap();
        assert!(matches!(
            read_pid(&path),
            Err(VmmError::InvalidPidFile { .. })
        ));
    }

    #[test]
    fn lock_holder_sees_other_process_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qemu.pid");
        assert_eq!(lock_holder(&path).unwrap(), None, "missing file");
        std::fs::write(&path, "1\n").unwrap();
        assert_eq!(lock_holder(&path).unwrap(), None, "unlocked file");

        // flock(1) from util-linux takes a BSD lock, which F_GETLK does not
        // see, so a child process takes the POSIX lock with Python instead.
        let Ok(mut child) = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            banger_test_support::skip("python3 is not installed");
            return;
        };
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert_eq!(line.trim(), "locked");

        let holder = lock_holder(&path);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(holder.unwrap(), Some(child.id() as i32));
    }
}
