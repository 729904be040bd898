//! The one place where this crate starts child processes (`nft`,
//! `resolvectl`). Programs are started directly with an argument vector,
//! never through a shell.
//!
//! Code that runs commands takes a [`CommandRunner`], so tests can record
//! the commands instead of running them. [`SystemRunner`] runs them with
//! [`banger_process`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use banger_process::{CommandError, CommandOutput, CommandSpec};

/// Time a command gets before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns the spec of `program args...` with [`DEFAULT_TIMEOUT`] and
/// `LC_ALL=C`, so that messages quoted in errors stay in English whatever
/// the locale.
pub fn spec<I, S>(program: &str, args: I) -> CommandSpec
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    CommandSpec::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .timeout(DEFAULT_TIMEOUT)
}

/// Future returned by [`CommandRunner::run`].
pub type RunFuture<'a> =
    Pin<Box<dyn Future<Output = Result<CommandOutput, CommandError>> + Send + 'a>>;

/// Runs commands to completion. An exit status other than 0 and the
/// spec's accepted codes is an error.
pub trait CommandRunner: Send + Sync {
    fn run<'a>(&'a self, spec: &'a CommandSpec) -> RunFuture<'a>;
}

/// Runs commands as child processes of this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run<'a>(&'a self, spec: &'a CommandSpec) -> RunFuture<'a> {
        Box::pin(spec.run_async())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_sets_timeout_and_locale() {
        let spec = spec("resolvectl", ["revert", "banger0"]);
        assert_eq!(spec.describe(), "resolvectl revert banger0");
        assert_eq!(spec.timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(spec.env, [("LC_ALL".into(), "C".into())]);
    }

    #[tokio::test]
    async fn system_runner_runs_spec() {
        let spec = spec("sh", ["-c", "cat; printf %s \"$LC_ALL\""]).stdin("table ");
        let output = SystemRunner.run(&spec).await.unwrap();
        assert_eq!(output.stdout, b"table C");
    }

    #[tokio::test]
    async fn system_runner_reports_status_and_stderr() {
        let spec = spec("sh", ["-c", "echo bad >&2; exit 3"]);
        let error = SystemRunner.run(&spec).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, CommandError::Failed { .. }), "{message}");
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.ends_with(": bad"), "{message}");
    }
}

/// A runner for unit tests: it records every command and returns a
/// closure's result instead of starting a process.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;

    use super::*;

    type Responder = dyn Fn(&CommandSpec) -> Result<CommandOutput, CommandError> + Send + Sync;

    pub(crate) struct FakeRunner {
        pub(crate) calls: Mutex<Vec<CommandSpec>>,
        respond: Box<Responder>,
    }

    impl FakeRunner {
        pub(crate) fn new(
            respond: impl Fn(&CommandSpec) -> Result<CommandOutput, CommandError>
            + Send
            + Sync
            + 'static,
        ) -> Self {
            Self {
                calls: Mutex::new(Vec::new()),
                respond: Box::new(respond),
            }
        }

        /// Returns a runner whose commands all succeed with empty output.
        pub(crate) fn succeeding() -> Self {
            Self::new(|_| Ok(CommandOutput::default()))
        }

        pub(crate) fn calls(&self) -> Vec<CommandSpec> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl CommandRunner for FakeRunner {
        fn run<'a>(&'a self, spec: &'a CommandSpec) -> RunFuture<'a> {
            self.calls.lock().unwrap().push(spec.clone());
            let result = (self.respond)(spec);
            Box::pin(async move { result })
        }
    }

    /// Builds the `Failed` error of a command that exited with `code`.
    pub(crate) fn failed(spec: &CommandSpec, code: i32, stderr: &str) -> CommandError {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        CommandError::Failed {
            command: spec.describe(),
            status: ExitStatus::from_raw(code << 8),
            stderr_tail: stderr.to_owned(),
        }
    }
}
