use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// Failure to run a child process. Every variant names the command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not on `PATH`, or starting it failed with ENOENT: the
    /// path given or the script's interpreter does not exist.
    #[error("{}", not_found_message(program, *package))]
    NotFound {
        program: String,
        /// Debian package that ships the program, when known.
        package: Option<&'static str>,
        /// The error from starting the program; `None` when the `PATH`
        /// lookup found no executable file of that name.
        #[source]
        source: Option<io::Error>,
    },

    /// The working directory set for the command does not exist.
    #[error("cannot run `{command}` in {}: the directory does not exist", dir.display())]
    MissingDirectory {
        command: String,
        dir: std::path::PathBuf,
    },

    #[error("failed to start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to write the standard input of `{command}`")]
    WriteStdin {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to read the output of `{command}`")]
    ReadOutput {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },

    /// The program exited with a status that is neither 0 nor accepted.
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    Failed {
        command: String,
        status: ExitStatus,
        /// End of standard error, as [`crate::quote_output`] formats it.
        stderr_tail: String,
    },

    #[error(
        "`{command}` timed out after {} s and its process group was killed (stderr: {stderr_tail})",
        timeout.as_secs_f64()
    )]
    TimedOut {
        command: String,
        timeout: Duration,
        /// End of standard error, as [`crate::quote_output`] formats it.
        stderr_tail: String,
    },

    #[error("failed to create the tokio runtime that runs `{command}`")]
    Runtime {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to create a pipe to receive the process id of `{command}`")]
    Pipe {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to receive the process id of `{command}` from its parent: {reason}")]
    DaemonPid { command: String, reason: String },
}

fn not_found_message(program: &str, package: Option<&str>) -> String {
    if program.contains('/') {
        return format!("program {program} not found");
    }
    match package {
        Some(package) => {
            format!("`{program}` not found on PATH (install it with `apt-get install {package}`)")
        }
        None => format!("`{program}` not found on PATH (install it or add its directory to PATH)"),
    }
}
