//! Child processes for banger.
//!
//! A [`CommandSpec`] describes one program run: program, arguments, working
//! directory, environment, standard input bytes, timeout, accepted exit
//! codes and an optional `PATH` for the program lookup. [`CommandSpec::run`]
//! runs it from synchronous code and [`CommandSpec::run_async`] from tokio
//! tasks. Both share one implementation, so they report failures with the
//! same [`CommandError`]: the command line, the exit status, the end of
//! standard error and, for a missing program, the Debian package that ships
//! it. [`CommandSpec::spawn`] starts a child whose pipes the caller reads,
//! and [`spawn_detached`] starts a daemon that no process here has to reap.
//!
//! Programs are started directly with an argument vector, never through a
//! shell.

mod detached;
mod error;
mod output;
mod path;
mod run;
mod spec;

pub use detached::spawn_detached;
pub use error::CommandError;
pub use output::{STDERR_CAPTURE_BYTES, quote_output};
pub use path::{debian_package_for, find_in_path};
pub use run::PIPE_GRACE;
pub use spec::{CommandOutput, CommandSpec, describe, describe_std};
