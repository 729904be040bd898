//! `banger vm ssh`, `banger vm ports` and `banger ssh-config`.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use banger_api::network::{ListeningPort, SshTarget};
use clap::Args;

use super::Failure;
use crate::client::Client;
use crate::render::{CliError, print_table};

#[derive(Args, Debug)]
pub struct SshArgs {
    /// VM to connect to.
    name: String,
    /// Command to run instead of a login shell, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SshConfigArgs {
    /// Add an `Include` of banger's ssh_config file to ~/.ssh/config, so
    /// `ssh NAME.vm` works.
    #[arg(long, conflicts_with = "uninstall")]
    install: bool,
    /// Remove that `Include` line and nothing else.
    #[arg(long)]
    uninstall: bool,
}

/// The arguments of the system `ssh` for `target`.
pub fn ssh_argv(target: &SshTarget, command: &[String]) -> Vec<String> {
    let mut argv = vec![
        "-i".to_owned(),
        target.identity_file.clone(),
        "-o".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", target.known_hosts),
        "-o".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        format!("{}@{}", target.user, target.ip),
    ];
    if !command.is_empty() {
        argv.push("--".to_owned());
        argv.extend(command.iter().cloned());
    }
    argv
}

/// Replaces this process with `ssh` into the VM, so the terminal is ssh's.
pub async fn ssh(args: SshArgs) -> Result<u8, Failure> {
    let client = Client::connect().await?;
    let target: SshTarget = client.get(&format!("/vms/{}/ssh", args.name)).await?;
    let error = std::process::Command::new("ssh")
        .args(ssh_argv(&target, &args.command))
        .exec();
    Err(CliError::local(format!("failed to run ssh: {error}"))
        .hint("install openssh-client (apt-get install openssh-client)")
        .into())
}

pub async fn ports(name: String) -> Result<u8, Failure> {
    let client = Client::connect().await?;
    let ports: Vec<ListeningPort> = client.get(&format!("/vms/{name}/ports")).await?;
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|port| {
            vec![
                format!("{name}.vm:{}", port.port),
                port.proto.clone(),
                port.process.clone().unwrap_or_else(|| "-".to_owned()),
                port.address.clone(),
            ]
        })
        .collect();
    print_table(&["PORT", "PROTO", "PROCESS", "ADDRESS"], &rows);
    Ok(0)
}

/// Leased addresses by VM id, for the IP column of `vm list`. An older
/// daemon without the route yields none.
pub async fn addresses(client: &Client) -> std::collections::HashMap<String, String> {
    match client
        .get::<banger_api::network::NetworkStatus>("/network")
        .await
    {
        Ok(status) => status.vms.into_iter().map(|vm| (vm.vm_id, vm.ip)).collect(),
        Err(_) => std::collections::HashMap::new(),
    }
}

/// The line `--install` adds to ~/.ssh/config.
pub fn include_line(banger_config: &Path) -> String {
    format!("Include \"{}\"", banger_config.display())
}

/// `text` with `line` first, unless it is already there. An `Include`
/// after a `Host` block would apply to that block only, so it goes on top.
pub fn with_include(text: &str, line: &str) -> Option<String> {
    if text.lines().any(|l| l.trim() == line) {
        return None;
    }
    Some(format!("{line}\n{text}"))
}

/// `text` without the lines equal to `line`.
pub fn without_include(text: &str, line: &str) -> Option<String> {
    if !text.lines().any(|l| l.trim() == line) {
        return None;
    }
    let mut out = String::new();
    for l in text.split_inclusive('\n') {
        if l.trim() != line {
            out.push_str(l);
        }
    }
    Some(out)
}

fn user_ssh_config() -> Result<PathBuf, CliError> {
    let home = std::env::var_os("HOME").ok_or_else(|| {
        CliError::local("HOME is not set").hint("set HOME to your home directory")
    })?;
    Ok(PathBuf::from(home).join(".ssh/config"))
}

fn io_failure(action: &str, path: &Path, error: io::Error) -> CliError {
    CliError::local(format!("failed to {action} {}: {error}", path.display()))
}

pub fn ssh_config(args: SshConfigArgs) -> Result<u8, Failure> {
    let paths = banger_api::paths::Paths::from_env();
    let banger_config = paths.state_dir.join("ssh/config");
    let line = include_line(&banger_config);
    if !args.install && !args.uninstall {
        println!("{}", banger_config.display());
        return Ok(0);
    }
    let user_config = user_ssh_config()?;
    let text = match std::fs::read_to_string(&user_config) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_failure("read", &user_config, e).into()),
    };
    let changed = if args.install {
        with_include(&text, &line)
    } else {
        without_include(&text, &line)
    };
    let Some(changed) = changed else {
        eprintln!("{} is already up to date", user_config.display());
        return Ok(0);
    };
    if let Some(dir) = user_config.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_failure("create", dir, e))?;
    }
    write_keeping_mode(&user_config, &changed)?;
    eprintln!(
        "{} {}",
        if args.install {
            "added to"
        } else {
            "removed from"
        },
        user_config.display()
    );
    Ok(0)
}

/// Replaces `path` through a temporary file; a new file gets mode 0600.
fn write_keeping_mode(path: &Path, text: &str) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let temp = path.with_extension("banger-tmp");
    std::fs::write(&temp, text).map_err(|e| io_failure("write", &temp, e))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_failure("set the mode of", &temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| io_failure("replace", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            name: "dev".into(),
            ip: "172.30.0.2".into(),
            user: "root".into(),
            identity_file: "/s/id_ed25519".into(),
            known_hosts: "/s/known_hosts".into(),
        }
    }

    #[test]
    fn argv_pins_known_hosts() {
        let argv = ssh_argv(&target(), &["hostname".into()]);
        assert_eq!(&argv[..2], ["-i", "/s/id_ed25519"]);
        assert!(argv.contains(&"UserKnownHostsFile=/s/known_hosts".to_owned()));
        assert!(argv.contains(&"StrictHostKeyChecking=yes".to_owned()));
        assert_eq!(
            &argv[argv.len() - 3..],
            ["root@172.30.0.2", "--", "hostname"]
        );
    }

    #[test]
    fn argv_without_command_logs_in() {
        let argv = ssh_argv(&target(), &[]);
        assert_eq!(argv.last().unwrap(), "root@172.30.0.2");
    }

    #[test]
    fn include_is_added_once_on_top() {
        let line = include_line(Path::new("/s/config"));
        let text = "Host a\n    User x\n";
        let added = with_include(text, &line).unwrap();
        assert_eq!(added, "Include \"/s/config\"\nHost a\n    User x\n");
        assert_eq!(with_include(&added, &line), None);
    }

    #[test]
    fn uninstall_removes_only_that_line() {
        let line = include_line(Path::new("/s/config"));
        let text = "# mine\nInclude \"/s/config\"\nInclude other\nHost a\n";
        let removed = without_include(text, &line).unwrap();
        assert_eq!(removed, "# mine\nInclude other\nHost a\n");
        assert_eq!(without_include(&removed, &line), None);
    }
}
