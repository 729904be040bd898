use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use crate::{CommandError, describe_std};

/// Starts `command` as a daemon that no process of this program has to reap,
/// and returns the daemon's pid once it has executed the program.
///
/// The child forks again at once and exits: the grandchild calls `setsid`,
/// so it leads its own session and process group, sets umask 077 and
/// executes the program. The intermediate child writes the grandchild's pid
/// into a pipe before it exits. This function reaps the intermediate child,
/// and the grandchild is re-parented to init (or the nearest subreaper).
///
/// Blocks for as long as fork and exec take, so call it from a blocking
/// thread. The caller sets stdin, stdout and stderr of `command`.
pub fn spawn_detached(mut command: std::process::Command) -> Result<u32, CommandError> {
    let (pid_reader, pid_writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| CommandError::Pipe {
            command: describe_std(&command),
            source: io::Error::from(errno),
        })?;
    let pid_writer_fd = pid_writer.as_raw_fd();

    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called. It calls fork, setsid,
    // umask, write and _exit, which all are, and it allocates nothing:
    // io::Error::last_os_error only stores the errno value. The pipe's write
    // end is open in the child, because fork copied it, and it is closed on
    // exec (O_CLOEXEC) or by _exit.
    unsafe {
        command.pre_exec(move || match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                libc::umask(0o077);
                Ok(())
            }
            grandchild => {
                let bytes = grandchild.to_le_bytes();
                let written = libc::write(pid_writer_fd, bytes.as_ptr().cast(), bytes.len());
                let status = if written == bytes.len() as isize {
                    0
                } else {
                    1
                };
                libc::_exit(status)
            }
        });
    }

    // std's spawn returns once the grandchild executed the program or
    // reported why it could not: its error pipe stays open until the exec.
    let mut intermediate = command.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            CommandError::NotFound {
                program: command.get_program().to_string_lossy().into_owned(),
                package: None,
                source: Some(source),
            }
        } else {
            CommandError::Spawn {
                command: describe_std(&command),
                source,
            }
        }
    })?;
    drop(pid_writer);
    let status = intermediate.wait().map_err(|source| CommandError::Wait {
        command: describe_std(&command),
        source,
    })?;
    if !status.success() {
        return Err(CommandError::DaemonPid {
            command: describe_std(&command),
            reason: format!("the intermediate child exited with {status}"),
        });
    }

    let mut bytes = Vec::with_capacity(4);
    std::fs::File::from(pid_reader)
        .read_to_end(&mut bytes)
        .map_err(|error| CommandError::DaemonPid {
            command: describe_std(&command),
            reason: format!("reading the pipe failed: {error}"),
        })?;
    let pid = <[u8; 4]>::try_from(bytes.as_slice())
        .map(i32::from_le_bytes)
        .ok()
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
        .ok_or_else(|| CommandError::DaemonPid {
            command: describe_std(&command),
            reason: format!(
                "expected a 4-byte process id, received {} bytes",
                bytes.len()
            ),
        })?;
    Ok(pid)
}
