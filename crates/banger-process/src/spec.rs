use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// One program run: what to start and how to judge its result.
///
/// Build it with [`CommandSpec::new`] and the builder methods, then call
/// [`CommandSpec::run`], [`CommandSpec::run_async`] or
/// [`CommandSpec::spawn`]. The fields are public so that code which records
/// commands instead of running them can inspect them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program name, looked up on `PATH`, or a path when it contains `/`.
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Working directory of the child, or this process's when `None`.
    pub current_dir: Option<PathBuf>,
    /// Variables set in the child's environment, on top of this process's.
    pub env: Vec<(OsString, OsString)>,
    /// Bytes written to the child's standard input, or `/dev/null` when `None`.
    pub stdin: Option<Vec<u8>>,
    /// Time after which the child's process group is killed. `None` sets no
    /// limit.
    pub timeout: Option<Duration>,
    /// Exit codes other than 0 that count as success.
    pub accepted_exit_codes: Vec<i32>,
    /// `PATH`-style list searched for `program` instead of `$PATH`. It only
    /// affects the lookup, not the child's environment.
    pub search_path: Option<OsString>,
    /// File mode creation mask set in the child before it executes the
    /// program. The child inherits this process's mask when `None`.
    pub umask: Option<libc::mode_t>,
}

impl CommandSpec {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Kills the child and its process group when it runs longer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Treats these exit codes as success, besides 0. The caller reads the
    /// code from [`CommandOutput::status`].
    pub fn accept_exit_codes(mut self, codes: &[i32]) -> Self {
        self.accepted_exit_codes.extend_from_slice(codes);
        self
    }

    /// Looks the program up in this `PATH`-style list instead of `$PATH`.
    pub fn search_path(mut self, path_var: impl Into<OsString>) -> Self {
        self.search_path = Some(path_var.into());
        self
    }

    pub fn umask(mut self, mask: libc::mode_t) -> Self {
        self.umask = Some(mask);
        self
    }

    /// Returns the command line for messages, as [`describe`] formats it.
    pub fn describe(&self) -> String {
        describe(&self.program, &self.args)
    }

    /// Returns whether `status` counts as success for this command.
    pub(crate) fn accepts(&self, status: ExitStatus) -> bool {
        status.success()
            || status
                .code()
                .is_some_and(|code| self.accepted_exit_codes.contains(&code))
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Output of a command whose exit status counted as success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status: success, or one of the accepted exit codes.
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The last [`crate::STDERR_CAPTURE_BYTES`] bytes of standard error.
    pub stderr: Vec<u8>,
}

/// Returns a command line as text for messages, in the form a POSIX shell
/// reads back: arguments that contain anything but letters, digits and
/// `@%+=:,./_-` are put in single quotes.
pub fn describe<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> String {
    describe_parts(program.as_ref(), args.iter().map(AsRef::as_ref))
}

/// Returns a `std` command as text for messages, as [`describe`] formats it.
pub fn describe_std(command: &std::process::Command) -> String {
    describe_parts(command.get_program(), command.get_args())
}

fn describe_parts<'a>(program: &OsStr, args: impl Iterator<Item = &'a OsStr>) -> String {
    let mut line = quote_word(program);
    for arg in args {
        line.push(' ');
        line.push_str(&quote_word(arg));
    }
    line
}

fn quote_word(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_special_words() {
        let spec = CommandSpec::new("resolvectl").args(["dns", "banger0", "127.0.0.1:53"]);
        assert_eq!(spec.describe(), "resolvectl dns banger0 127.0.0.1:53");

        let spec = CommandSpec::new("nft").args(["-f", "a b", "", "~vm"]);
        assert_eq!(spec.describe(), "nft -f 'a b' '' '~vm'");

        let spec = CommandSpec::new("sh").args(["-c", "echo 'hi' >&2"]);
        assert_eq!(spec.describe(), r"sh -c 'echo '\''hi'\'' >&2'");
    }

    #[test]
    fn describe_std_matches_spec() {
        let mut command = std::process::Command::new("/usr/bin/qemu system");
        command.args(["-name", "vm one"]);
        assert_eq!(
            describe_std(&command),
            "'/usr/bin/qemu system' -name 'vm one'"
        );
    }

    #[test]
    fn accepts_zero_and_listed_codes() {
        use std::os::unix::process::ExitStatusExt;

        let spec = CommandSpec::new("git").accept_exit_codes(&[1]);
        assert!(spec.accepts(ExitStatus::from_raw(0)));
        assert!(spec.accepts(ExitStatus::from_raw(1 << 8)));
        assert!(!spec.accepts(ExitStatus::from_raw(2 << 8)));
        // Killed by SIGKILL: no exit code at all.
        assert!(!spec.accepts(ExitStatus::from_raw(9)));
    }
}
