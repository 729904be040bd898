//! Log lines on standard error.
//!
//! In serve mode systemd sends standard error to the journal and the console,
//! which adds timestamps. In initramfs mode standard error is `/dev/console`.

use std::error::Error;
use std::fmt::Write as _;

/// Writes one line prefixed with `banger-agent: ` to standard error.
macro_rules! log_line {
    ($($arg:tt)*) => {
        eprintln!("banger-agent: {}", format_args!($($arg)*))
    };
}

/// Formats an error and all its sources as `outer: inner: innermost`.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening /x failed")]
    struct Outer {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn error_chain_joins_sources() {
        let error = Outer {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(error_chain(&error), "opening /x failed: no such file");
    }
}
