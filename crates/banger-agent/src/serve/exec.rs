//! Turning an `ExecRequest` into a `Command`: environment, working
//! directory and program lookup.
//!
//! Problems the user should see as command output, such as a missing
//! program or working directory, become a [`StartFailure`]. The session
//! reports it as a shell would: a line on the stream's standard error and an
//! `Exit` frame with code 127 or 126. Requests that are malformed become an
//! [`InvalidRequest`], reported in an `Error` frame.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use banger_agent_proto::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, ExecRequest};
use nix::unistd::{AccessFlags, access};
use thiserror::Error;

/// Environment every command starts with; the request's `env` is applied on top.
pub const BASE_ENV: [(&str, &str); 5] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("USER", "root"),
    ("LOGNAME", "root"),
    ("LANG", "C.UTF-8"),
];

/// Working directory when the request names none; `/` when it does not exist.
pub const DEFAULT_CWD: &str = "/root";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidRequest {
    #[error("invalid ExecStart: argv is empty")]
    EmptyArgv,
    #[error("invalid ExecStart: argument {index} contains a NUL byte")]
    NulInArgument { index: usize },
    #[error("invalid ExecStart: environment variable name {0:?} is empty or contains '=' or NUL")]
    InvalidEnvName(String),
    #[error("invalid ExecStart: the value of environment variable {0} contains a NUL byte")]
    NulInEnvValue(String),
    #[error("invalid ExecStart: cwd {0:?} contains a NUL byte")]
    NulInCwd(String),
}

/// Reason a valid request could not start its command.
#[derive(Debug)]
pub enum StartFailure {
    /// The requested working directory does not exist or is no directory.
    Cwd { cwd: String, error: io::Error },
    /// The program is not on `PATH`, or a program path does not exist.
    NotFound { program: String },
    /// The program exists but cannot be executed.
    NotExecutable { program: String, reason: String },
    /// `fork`/`exec` failed after the program was found.
    Spawn { program: String, error: io::Error },
}

impl StartFailure {
    /// Exit code reported for the failure, as a shell would use it.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartFailure::NotFound { .. } => EXIT_NOT_FOUND,
            StartFailure::Spawn { error, .. } if error.kind() == io::ErrorKind::NotFound => {
                EXIT_NOT_FOUND
            }
            _ => EXIT_NOT_EXECUTABLE,
        }
    }

    /// Describes the failure, such as `ls: command not found`.
    pub fn message(&self) -> String {
        match self {
            StartFailure::Cwd { cwd, error } => {
                format!("cannot change to working directory {cwd}: {error}")
            }
            StartFailure::NotFound { program } => format!("{program}: command not found"),
            StartFailure::NotExecutable { program, reason } => format!("{program}: {reason}"),
            StartFailure::Spawn { program, error } => format!("{program}: {error}"),
        }
    }

    /// Returns the line written on the stream's standard error, without the newline.
    pub fn stderr_line(&self) -> String {
        format!("banger-agent: {}", self.message())
    }
}

/// Checks the parts of a request that the host got wrong.
pub fn validate(request: &ExecRequest) -> Result<(), InvalidRequest> {
    if request.argv.is_empty() {
        return Err(InvalidRequest::EmptyArgv);
    }
    if let Some(index) = request.argv.iter().position(|arg| arg.contains('\0')) {
        return Err(InvalidRequest::NulInArgument { index });
    }
    for (name, value) in &request.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(InvalidRequest::InvalidEnvName(name.clone()));
        }
        if value.contains('\0') {
            return Err(InvalidRequest::NulInEnvValue(name.clone()));
        }
    }
    if let Some(cwd) = request.cwd.as_ref().filter(|cwd| cwd.contains('\0')) {
        return Err(InvalidRequest::NulInCwd(cwd.clone()));
    }
    Ok(())
}

/// Returns the environment of the command: [`BASE_ENV`] with the request's
/// variables applied in order, so a later entry replaces an earlier one.
pub fn command_env(request: &ExecRequest) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BASE_ENV
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    for (name, value) in &request.env {
        env.insert(name.clone(), value.clone());
    }
    env
}

/// Returns the working directory of the command.
pub fn command_cwd(request: &ExecRequest) -> Result<PathBuf, StartFailure> {
    let Some(cwd) = &request.cwd else {
        let default = Path::new(DEFAULT_CWD);
        return Ok(if default.is_dir() {
            default.to_owned()
        } else {
            PathBuf::from("/")
        });
    };
    // A relative cwd is taken relative to the agent's own working directory
    // and made absolute, so program paths can be resolved against it.
    let absolute = std::path::absolute(cwd).map_err(|error| StartFailure::Cwd {
        cwd: cwd.clone(),
        error,
    })?;
    match std::fs::metadata(&absolute) {
        Ok(metadata) if metadata.is_dir() => Ok(absolute),
        Ok(_) => Err(StartFailure::Cwd {
            cwd: cwd.clone(),
            error: io::Error::from_raw_os_error(libc::ENOTDIR),
        }),
        Err(error) => Err(StartFailure::Cwd {
            cwd: cwd.clone(),
            error,
        }),
    }
}

/// Finds the file to execute for `program` as `execvp` would: a name with a
/// `/` is taken as a path, any other name is looked up in `path_var`.
/// Relative paths are resolved against `cwd`, the command's working directory.
pub fn resolve_program(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, StartFailure> {
    let not_executable = |reason: &str| StartFailure::NotExecutable {
        program: program.to_owned(),
        reason: reason.to_owned(),
    };
    if program.contains('/') {
        let path = cwd.join(program);
        return match check_executable(&path) {
            Candidate::Executable => Ok(path),
            Candidate::Missing => Err(StartFailure::NotFound {
                program: program.to_owned(),
            }),
            Candidate::Directory => Err(not_executable("Is a directory")),
            Candidate::NoPermission => Err(not_executable("Permission denied")),
        };
    }

    let mut found_without_permission = false;
    for dir in path_var.split(':') {
        // An empty PATH entry means the current directory.
        let path = cwd.join(dir).join(program);
        match check_executable(&path) {
            Candidate::Executable => return Ok(path),
            Candidate::NoPermission => found_without_permission = true,
            Candidate::Missing | Candidate::Directory => {}
        }
    }
    if found_without_permission {
        Err(not_executable("Permission denied"))
    } else {
        Err(StartFailure::NotFound {
            program: program.to_owned(),
        })
    }
}

enum Candidate {
    Executable,
    Missing,
    Directory,
    NoPermission,
}

fn check_executable(path: &Path) -> Candidate {
    match std::fs::metadata(path) {
        Err(_) => Candidate::Missing,
        Ok(metadata) if metadata.is_dir() => Candidate::Directory,
        Ok(_) if access(path, AccessFlags::X_OK).is_ok() => Candidate::Executable,
        Ok(_) => Candidate::NoPermission,
    }
}

/// Builds the command for a validated request: its own session and process
/// group, the environment from [`command_env`], the working directory from
/// [`command_cwd`], piped standard output and error, and standard input
/// piped when `request.stdin` is set, `/dev/null` otherwise.
pub fn build_command(request: &ExecRequest) -> Result<Command, StartFailure> {
    let env = command_env(request);
    let cwd = command_cwd(request)?;
    let program = &request.argv[0];
    let path_var = env.get("PATH").map(String::as_str).unwrap_or_default();
    let executable = resolve_program(program, path_var, &cwd)?;

    let mut command = Command::new(executable);
    command
        .arg0(program)
        .args(&request.argv[1..])
        .env_clear()
        .envs(&env)
        .current_dir(&cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setsid, which is async-signal-safe. The new session makes the
    // child the leader of a process group whose id is its pid, so a signal
    // can reach the whole group with kill(-pid).
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn request(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|arg| arg.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn env_starts_from_base_and_request_overrides() {
        let mut req = request(&["true"]);
        req.env = vec![
            ("PATH".into(), "/opt/bin".into()),
            ("FOO".into(), "1".into()),
            ("FOO".into(), "2".into()),
        ];
        let env = command_env(&req);
        assert_eq!(env["PATH"], "/opt/bin");
        assert_eq!(env["FOO"], "2");
        assert_eq!(env["HOME"], "/root");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert_eq!(env.len(), BASE_ENV.len() + 1);
    }

    #[test]
    fn validate_rejects_malformed_requests() {
        assert_eq!(validate(&request(&[])), Err(InvalidRequest::EmptyArgv));
        assert_eq!(
            validate(&request(&["echo", "a\0b"])),
            Err(InvalidRequest::NulInArgument { index: 1 })
        );
        let mut bad_env = request(&["true"]);
        bad_env.env = vec![("A=B".into(), "x".into())];
        assert_eq!(
            validate(&bad_env),
            Err(InvalidRequest::InvalidEnvName("A=B".into()))
        );
        assert_eq!(validate(&request(&["true"])), Ok(()));
    }

    #[test]
    fn resolve_searches_path_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        fs::create_dir_all(&first).unwrap();
        fs::create_dir_all(&second).unwrap();
        fs::write(first.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(first.join("tool"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(second.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(second.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path_var = format!("{}:{}", first.display(), second.display());

        let found = resolve_program("tool", &path_var, Path::new("/")).unwrap();
        assert_eq!(found, second.join("tool"));
    }

    #[test]
    fn resolve_reports_missing_and_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data"), b"x").unwrap();
        fs::set_permissions(dir.path().join("data"), fs::Permissions::from_mode(0o644)).unwrap();
        let path_var = dir.path().display().to_string();

        let missing =
            resolve_program("banger-no-such-tool", &path_var, Path::new("/")).unwrap_err();
        assert_eq!(missing.exit_code(), 127);
        assert_eq!(
            missing.stderr_line(),
            "banger-agent: banger-no-such-tool: command not found"
        );

        // As root every file with an execute bit is executable, and a file
        // without one is not, so this holds for root and other users.
        let denied = resolve_program("data", &path_var, Path::new("/")).unwrap_err();
        assert_eq!(denied.exit_code(), 126);
        assert_eq!(
            denied.stderr_line(),
            "banger-agent: data: Permission denied"
        );

        let directory = resolve_program("./", &path_var, dir.path()).unwrap_err();
        assert_eq!(directory.exit_code(), 126);
    }

    #[test]
    fn relative_program_path_uses_cwd() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let found = resolve_program("./run.sh", "", dir.path()).unwrap();
        assert_eq!(found, dir.path().join("./run.sh"));
    }

    #[test]
    fn explicit_missing_cwd_fails_and_default_exists() {
        let mut req = request(&["true"]);
        req.cwd = Some("/nonexistent/banger-cwd".into());
        let failure = command_cwd(&req).unwrap_err();
        assert_eq!(failure.exit_code(), 126);
        assert!(failure.stderr_line().contains("/nonexistent/banger-cwd"));

        let default = command_cwd(&request(&["true"])).unwrap();
        assert!(default == Path::new("/root") || default == Path::new("/"));
    }
}
