//! Running host programs (git) with their exit status checked and their
//! standard error captured for the error message.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

/// A host program that failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{program}` not found on PATH; install it (Debian: `apt-get install {program}`)")]
    Missing {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Standard output and exit code of a finished program.
pub struct ToolOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
}

/// Runs `program args...` in `dir` and returns its standard output. Exit
/// codes other than 0 and those in `accepted` are errors that name the
/// command and carry its standard error.
pub fn run_tool(
    program: &str,
    args: &[&OsStr],
    dir: &Path,
    accepted: &[i32],
) -> Result<ToolOutput, ToolError> {
    let command_line = || {
        let mut text = program.to_string();
        for arg in args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    };
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ToolError::Missing {
                    program: program.to_string(),
                    source,
                }
            } else {
                ToolError::Spawn {
                    command: command_line(),
                    source,
                }
            }
        })?;
    let code = output.status.code().unwrap_or(-1);
    if output.status.success() || accepted.contains(&code) {
        return Ok(ToolOutput {
            code,
            stdout: output.stdout,
        });
    }
    Err(ToolError::Failed {
        command: command_line(),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run_tool(
            "sh",
            &[OsStr::new("-c"), OsStr::new("echo broken >&2; exit 3")],
            Path::new("/"),
            &[],
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("`sh -c echo broken >&2; exit 3` failed"),
            "{text}"
        );
        assert!(text.contains("broken"), "{text}");
    }

    #[test]
    fn accepted_code_is_returned() {
        let output = run_tool(
            "sh",
            &[OsStr::new("-c"), OsStr::new("printf x; exit 1")],
            Path::new("/"),
            &[1],
        )
        .unwrap();
        assert_eq!(output.code, 1);
        assert_eq!(output.stdout, b"x");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run_tool("banger-no-such-tool", &[], Path::new("/"), &[])
            .err()
            .unwrap();
        assert!(matches!(err, ToolError::Missing { .. }), "{err}");
    }
}
