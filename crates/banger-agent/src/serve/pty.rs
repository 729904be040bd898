//! Pseudo-terminals for commands started with `ExecRequest::tty`.
//!
//! The command gets the terminal's slave side as standard input, output and
//! error, in a new session whose controlling terminal it is, so job control,
//! Ctrl-C (as a byte on standard input) and `SIGWINCH` work as on a login
//! terminal. The agent keeps the master side: it writes the host's `Stdin`
//! bytes there and forwards what it reads as `Stdout` frames, since a
//! terminal merges standard output and error.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use banger_agent_proto::TtySize;
use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

/// Opens a pseudo-terminal of `size` and makes it the standard input,
/// output and controlling terminal of `command`. Returns the master side.
///
/// Both sides are opened with `O_CLOEXEC`, so commands that other streams
/// start concurrently do not inherit them. The parent's copies of the slave
/// side live only in `command` and close when it is dropped, after the
/// spawn, so reading the master fails with `EIO` once the command and its
/// children have closed the terminal.
pub fn attach(command: &mut Command, size: TtySize) -> io::Result<OwnedFd> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let master = master.as_fd().try_clone_to_owned()?;
    set_size(master.as_fd(), size)?;

    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: the closure runs in the forked child before exec and calls
    // only ioctl, which is async-signal-safe. It runs after the setsid of
    // `exec::build_command` and after standard input was set to the slave
    // side, so TIOCSCTTY makes that terminal the new session's controlling
    // terminal.
    unsafe {
        command.pre_exec(|| {
            if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(master)
}

/// Sets the terminal size; the kernel sends `SIGWINCH` to the terminal's
/// foreground process group.
pub fn set_size(master: BorrowedFd<'_>, size: TtySize) -> io::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points
    // to a live local value of that type, and `master` is an open descriptor.
    let result = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;

    fn read_all_until_eio(master: OwnedFd) -> Vec<u8> {
        let mut file = File::from(master);
        let mut output = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(len) => output.extend_from_slice(&buffer[..len]),
                Err(error) if error.raw_os_error() == Some(libc::EIO) => break,
                Err(error) => panic!("reading the pty failed: {error}"),
            }
        }
        output
    }

    fn new_session(command: &mut Command) {
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    #[test]
    fn command_sees_a_terminal_of_the_given_size() {
        let mut command = Command::new("/bin/sh");
        command.args([
            "-c",
            "stty size; test -t 0 && test -t 1 && test -t 2 && echo tty",
        ]);
        new_session(&mut command);
        let master = attach(
            &mut command,
            TtySize {
                rows: 33,
                cols: 101,
            },
        )
        .unwrap();
        let mut child = command.spawn().unwrap();
        drop(command);
        let output = read_all_until_eio(master);
        assert!(child.wait().unwrap().success());
        let text = String::from_utf8_lossy(&output);
        assert!(text.contains("33 101"), "{text:?}");
        assert!(text.contains("tty\r\n"), "{text:?}");
    }

    #[test]
    fn resize_reaches_the_command() {
        let mut command = Command::new("/bin/sh");
        // The shell prints the size after the first SIGWINCH.
        command.args([
            "-c",
            "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done",
        ]);
        new_session(&mut command);
        let master = attach(&mut command, TtySize { rows: 10, cols: 20 }).unwrap();
        let mut child = command.spawn().unwrap();
        drop(command);
        let mut reader = File::from(master.try_clone().unwrap());
        let mut seen = Vec::new();
        let mut buffer = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("ready") {
            let len = reader.read(&mut buffer).unwrap();
            seen.extend_from_slice(&buffer[..len]);
        }
        set_size(
            master.as_fd(),
            TtySize {
                rows: 50,
                cols: 132,
            },
        )
        .unwrap();
        drop(master);
        let output = read_all_until_eio(reader.into());
        assert!(child.wait().unwrap().success());
        let text = String::from_utf8_lossy(&output);
        assert!(text.contains("50 132"), "{text:?}");
    }
}
