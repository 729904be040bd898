//! Errors and tables as the user sees them.

use std::io::Write;

use banger_api::{ErrorBody, ErrorKind};

/// A failure, from the daemon or from the CLI itself, in one shape.
#[derive(Debug)]
pub enum CliError {
    Remote(ErrorBody),
    Local(ErrorBody),
}

impl CliError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CliError::Local(ErrorBody::new(kind, message))
    }

    pub fn local(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn body(&self) -> &ErrorBody {
        match self {
            CliError::Remote(body) | CliError::Local(body) => body,
        }
    }

    fn body_mut(&mut self) -> &mut ErrorBody {
        match self {
            CliError::Remote(body) | CliError::Local(body) => body,
        }
    }

    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        self.body_mut().causes.push(cause.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.body_mut().hint = Some(hint.into());
        self
    }
}

/// Renders an error on stderr:
///
/// ```text
/// error: VM "dev" is stopped, not running
///   caused by: ...
/// hint: start it with `banger vm start dev`
/// ```
///
/// The daemon's operation id follows (`operation: 1f3a9c0e`) only for
/// failures of banger or the host, because the daemon log has more on
/// those. The message explains bad input, unknown names and conflicts in
/// full.
pub fn print_error(error: &CliError) {
    let body = error.body();
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "error: {}", body.message);
    for cause in &body.causes {
        let mut lines = cause.lines();
        if let Some(first) = lines.next() {
            let _ = writeln!(out, "  caused by: {first}");
        }
        for line in lines {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(hint) = &body.hint {
        let _ = writeln!(out, "hint: {hint}");
    }
    let explained = matches!(
        body.kind,
        ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Conflict
    );
    if let Some(operation) = body.operation.as_ref().filter(|_| !explained) {
        let _ = writeln!(out, "operation: {operation} (search the daemon log for it)");
    }
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| -> String {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(headers.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// A progress line on stderr.
pub fn progress(message: &str) {
    eprintln!("» {message}");
}

/// Formats a byte count with a binary unit and one decimal.
pub fn human_bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod byte_tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_scale_by_1024() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
