use std::collections::VecDeque;

/// Bytes of standard error that a runner keeps. Earlier output is dropped.
pub const STDERR_CAPTURE_BYTES: usize = 64 * 1024;

/// Lines of output that [`quote_output`] returns at most.
const QUOTED_LINES: usize = 20;

/// Bytes of output that [`quote_output`] returns at most.
const QUOTED_BYTES: usize = 4096;

/// Returns the end of a process's output as text for an error message: the
/// last 20 lines, trimmed and at most 4 KiB, or "(no output)".
pub fn quote_output(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim().lines().collect();
    let start = lines.len().saturating_sub(QUOTED_LINES);
    let tail = lines[start..].join("\n");

    let mut cut = tail.len().saturating_sub(QUOTED_BYTES);
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    let tail = tail[cut..].trim_start();
    if tail.is_empty() {
        "(no output)".to_owned()
    } else {
        tail.to_owned()
    }
}

/// The last `max_bytes` bytes written to it.
#[derive(Debug)]
pub(crate) struct TailBuffer {
    bytes: VecDeque<u8>,
    max_bytes: usize,
}

impl TailBuffer {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            bytes: VecDeque::with_capacity(max_bytes.min(8192)),
            max_bytes,
        }
    }

    pub(crate) fn extend(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        if self.bytes.len() > self.max_bytes {
            let excess = self.bytes.len() - self.max_bytes;
            self.bytes.drain(..excess);
        }
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.bytes.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_output_marks_empty_output() {
        assert_eq!(quote_output(b""), "(no output)");
        assert_eq!(quote_output(b"  \n"), "(no output)");
    }

    #[test]
    fn quote_output_keeps_last_lines() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let quoted = quote_output(text.as_bytes());

        assert!(quoted.starts_with("line 30\n"), "{quoted}");
        assert!(quoted.ends_with("line 49"), "{quoted}");
        assert_eq!(quoted.lines().count(), QUOTED_LINES);
    }

    #[test]
    fn quote_output_caps_bytes() {
        let long = vec![b'x'; QUOTED_BYTES + 10];
        assert_eq!(quote_output(&long).len(), QUOTED_BYTES);

        // A multi-byte character across the cut is dropped whole.
        let mut text = "é".repeat(QUOTED_BYTES);
        text.push('!');
        let quoted = quote_output(text.as_bytes());
        assert!(quoted.len() <= QUOTED_BYTES, "{}", quoted.len());
        assert!(quoted.ends_with("é!"));
    }

    #[test]
    fn tail_buffer_drops_earlier_bytes() {
        let mut tail = TailBuffer::new(4);
        tail.extend(b"abc");
        tail.extend(b"def");
        assert_eq!(tail.into_vec(), b"cdef");
    }
}
