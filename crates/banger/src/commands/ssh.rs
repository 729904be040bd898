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
    /// Command and arguments to run instead of a login shell, after `--`.
    /// Each argument reaches the command unchanged, as with `vm exec`; use
    /// `sh -c '...'` for pipes and other shell syntax.
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
        // ssh joins its arguments with spaces into one line for the remote
        // shell, so each argument is quoted to arrive as it was given.
        let line: Vec<String> = command.iter().map(|arg| shell_quote(arg)).collect();
        argv.push("--".to_owned());
        argv.push(line.join(" "));
    }
    argv
}

/// Quotes `arg` for a POSIX shell: unchanged when it has only characters
/// that no shell treats specially, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
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
    print_table(
        &["PORT", "PROTO", "PROCESS", "ADDRESS"],
        &port_rows(&name, &ports),
    );
    Ok(0)
}

/// Builds one row per port, protocol and process, with the addresses it listens on
/// joined. A port that listens on loopback only is shown with that address,
/// because `NAME.vm` does not reach it.
fn port_rows(name: &str, ports: &[ListeningPort]) -> Vec<Vec<String>> {
    let mut grouped: Vec<(&ListeningPort, Vec<&str>)> = Vec::new();
    for port in ports {
        let same = grouped.iter_mut().find(|(first, _)| {
            first.port == port.port && first.proto == port.proto && first.process == port.process
        });
        match same {
            Some((_, addresses)) => addresses.push(&port.address),
            None => grouped.push((port, vec![&port.address])),
        }
    }
    grouped
        .into_iter()
        .map(|(port, addresses)| {
            let loopback_only = addresses.iter().all(|address| {
                address
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
            });
            let reach = if loopback_only {
                let address = addresses[0];
                if address.contains(':') {
                    format!("[{address}]:{}", port.port)
                } else {
                    format!("{address}:{}", port.port)
                }
            } else {
                format!("{name}.vm:{}", port.port)
            };
            vec![
                reach,
                port.proto.clone(),
                port.process.clone().unwrap_or_else(|| "-".to_owned()),
                addresses.join(","),
            ]
        })
        .collect()
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
    fn command_arguments_are_quoted_for_the_remote_shell() {
        let command = ["sh", "-c", "echo out; exit 7"].map(String::from);
        let argv = ssh_argv(&target(), &command);
        assert_eq!(argv.last().unwrap(), "sh -c 'echo out; exit 7'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a/b.c=d"), "a/b.c=d");
    }

    #[test]
    fn quoted_arguments_survive_a_real_shell() {
        let args = [
            "a   b",
            "$HOME",
            "it's",
            "",
            "*",
            "x\ny",
            "--flag",
            "back\\slash",
            "ü",
        ]
        .map(String::from);
        let line: Vec<String> = args.iter().map(|arg| shell_quote(arg)).collect();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '<%s>' {}", line.join(" ")))
            .output()
            .unwrap();
        let expected: String = args.iter().map(|arg| format!("<{arg}>")).collect();
        assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
    }

    fn listening(proto: &str, address: &str, port: u16, process: &str) -> ListeningPort {
        ListeningPort {
            proto: proto.into(),
            address: address.into(),
            port,
            process: Some(process.into()),
        }
    }

    #[test]
    fn port_rows_join_addresses_and_mark_loopback() {
        let ports = [
            listening("tcp", "0.0.0.0", 22, "sshd"),
            listening("tcp", "*", 22, "sshd"),
            listening("udp", "127.0.0.1", 5353, "resolver"),
            listening("tcp", "::1", 8080, "web"),
            listening("tcp", "127.0.0.1", 9000, "app"),
            listening("tcp", "192.0.2.7", 9000, "app"),
        ];
        let rows = port_rows("dev", &ports);
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert_eq!(rows[0], ["dev.vm:22", "tcp", "sshd", "0.0.0.0,*"]);
        assert_eq!(rows[1], ["127.0.0.1:5353", "udp", "resolver", "127.0.0.1"]);
        assert_eq!(rows[2], ["[::1]:8080", "tcp", "web", "::1"]);
        assert_eq!(
            rows[3],
            ["dev.vm:9000", "tcp", "app", "127.0.0.1,192.0.2.7"]
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
