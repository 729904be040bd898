//! The local terminal of an interactive `vm exec`: raw mode and window size.

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, BorrowedFd};

use banger_agent_proto::TtySize;

/// Size used when neither standard output nor standard input is a terminal
/// but a pty was requested with `-t`.
pub const FALLBACK_SIZE: TtySize = TtySize { rows: 24, cols: 80 };

/// Puts a terminal in raw mode and restores its previous settings when
/// dropped, which happens on every return and on unwinding. The process
/// ends only through such paths while the guard lives: the CLI forwards
/// SIGINT, SIGTERM and SIGHUP to the guest instead of dying of them.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    /// Switches the terminal on `fd` to raw mode: no echo, no line editing,
    /// no signal keys (Ctrl-C reaches the guest as a byte), no output
    /// processing.
    pub fn enable(fd: BorrowedFd<'_>) -> std::io::Result<Self> {
        let fd = fd.as_raw_fd();
        // SAFETY: termios is plain data for which all-zero bytes are valid;
        // tcgetattr fills it in.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open for the guard's lifetime (it is standard
        // input), and `saved` points to a live termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only changes the fields of the termios it points to.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: as above; `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `fd` is still open and `saved` contains the settings read in
        // `enable`. A failure leaves nothing better to do.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Returns the window size of the first of standard output and standard
/// input that is a terminal.
pub fn window_size() -> Option<TtySize> {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    if stdout.is_terminal() {
        return size_of(stdout.as_raw_fd());
    }
    if stdin.is_terminal() {
        return size_of(stdin.as_raw_fd());
    }
    None
}

fn size_of(fd: i32) -> Option<TtySize> {
    // SAFETY: winsize is plain data for which all-zero bytes are valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which
    // points to a live local value of that type.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == -1 || size.ws_row == 0 {
        return None;
    }
    Some(TtySize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}
