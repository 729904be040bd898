//! Command-line parsing. The guest binary keeps its dependencies to std,
//! nix and serde_json, and it has few arguments, so they are parsed by hand.

use std::ffi::OsString;
use std::path::PathBuf;

use thiserror::Error;

/// Usage text printed by `banger-agent help` and after argument errors.
pub const USAGE: &str = "\
usage:
  banger-agent serve [--device PATH | --unix-socket PATH | --vsock-port PORT]
      Serve the banger agent protocol. Without options the agent listens on
      vsock port 10789 (Firecracker) when the machine has vsock, and serves
      the virtio-serial port named banger.agent (QEMU) once it appears; after
      30 s without that port it serves vsock alone.
      --device PATH       serve an already known character device instead
      --unix-socket PATH  listen on a Unix socket and serve one connection at
                          a time (for tests on a host; Shutdown requests are
                          acknowledged but do not power off the machine)
      --vsock-port PORT   listen on this vsock port only, for any CID, and
                          serve each connection on its own thread
  banger-agent net-setup [--cmdline-file PATH] [--etc-dir DIR]
      Configure the network from the banger.ip=, banger.gw=, banger.dns=,
      banger.hostname= and banger.iface= kernel parameters: the interface's
      address, the default route, the loopback, resolv.conf and the host
      name. Serve mode does the same at start. Without banger.* parameters
      it changes nothing.
      --cmdline-file PATH  read the parameters from PATH (default /proc/cmdline)
      --etc-dir DIR        write resolv.conf and hostname in DIR (default /etc)
  banger-agent version
      Print the agent version.

As /init of an initramfs (PID 1), the agent loads kernel modules, mounts the
root file system given by root= on the kernel command line and runs its init.";

/// Action requested on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve(ServeTarget),
    NetSetup(NetSetupOptions),
    Version,
    Help,
}

/// Channel on which serve mode reads and writes frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeTarget {
    /// Find the virtio-serial port named `banger_agent_proto::SERIAL_PORT_NAME`.
    VirtioPort,
    /// A character device given by path.
    Device(PathBuf),
    /// A Unix socket to listen on.
    UnixSocket(PathBuf),
    /// A vsock port to listen on, for any CID.
    Vsock(u32),
}

/// Options of `net-setup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSetupOptions {
    /// File with the kernel command line.
    pub cmdline_file: PathBuf,
    /// Directory of `resolv.conf` and `hostname`.
    pub etc_dir: PathBuf,
}

impl Default for NetSetupOptions {
    fn default() -> Self {
        Self {
            cmdline_file: PathBuf::from("/proc/cmdline"),
            etc_dir: PathBuf::from("/etc"),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    #[error("missing command; expected `serve`, `net-setup` or `version`")]
    MissingCommand,
    #[error("unknown command `{0}`; expected `serve`, `net-setup` or `version`")]
    UnknownCommand(String),
    #[error("unknown option `{0}` for `{1}`")]
    UnknownOption(String, &'static str),
    #[error("option `{0}` needs a path argument")]
    MissingValue(String),
    #[error("`--device`, `--unix-socket` and `--vsock-port` cannot be used together")]
    ConflictingTargets,
    #[error("invalid vsock port `{0}`: expected a number from 0 to 4294967294")]
    InvalidPort(String),
    #[error("argument `{0}` is not valid UTF-8")]
    NotUtf8(String),
    #[error("unexpected argument `{0}` after `{1}`")]
    UnexpectedArgument(String, String),
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    let mut args = args.into_iter().map(|arg| {
        arg.into_string()
            .map_err(|raw| CliError::NotUtf8(raw.to_string_lossy().into_owned()))
    });
    let command = args.next().transpose()?.ok_or(CliError::MissingCommand)?;
    match command.as_str() {
        "serve" => parse_serve(args),
        "net-setup" => parse_net_setup(args),
        "version" | "--version" | "-V" => {
            reject_extra(args, &command)?;
            Ok(Command::Version)
        }
        "help" | "--help" | "-h" => Ok(Command::Help),
        _ => Err(CliError::UnknownCommand(command)),
    }
}

fn parse_serve(
    mut args: impl Iterator<Item = Result<String, CliError>>,
) -> Result<Command, CliError> {
    let mut target = ServeTarget::VirtioPort;
    while let Some(option) = args.next().transpose()? {
        let value = |args: &mut dyn Iterator<Item = Result<String, CliError>>| {
            args.next()
                .transpose()?
                .map(PathBuf::from)
                .ok_or_else(|| CliError::MissingValue(option.clone()))
        };
        let next = match option.as_str() {
            "--device" => ServeTarget::Device(value(&mut args)?),
            "--unix-socket" => ServeTarget::UnixSocket(value(&mut args)?),
            "--vsock-port" => {
                let text = value(&mut args)?.to_string_lossy().into_owned();
                ServeTarget::Vsock(parse_vsock_port(&text)?)
            }
            "--help" | "-h" => return Ok(Command::Help),
            _ => return Err(CliError::UnknownOption(option, "serve")),
        };
        if target != ServeTarget::VirtioPort {
            return Err(CliError::ConflictingTargets);
        }
        target = next;
    }
    Ok(Command::Serve(target))
}

/// Parses a vsock port. `u32::MAX` is rejected because it is
/// `VMADDR_PORT_ANY`, which makes the kernel pick any free port.
fn parse_vsock_port(text: &str) -> Result<u32, CliError> {
    match text.parse::<u32>() {
        Ok(port) if port != u32::MAX => Ok(port),
        _ => Err(CliError::InvalidPort(text.to_owned())),
    }
}

fn parse_net_setup(
    mut args: impl Iterator<Item = Result<String, CliError>>,
) -> Result<Command, CliError> {
    let mut options = NetSetupOptions::default();
    while let Some(option) = args.next().transpose()? {
        let mut value = || {
            args.next()
                .transpose()?
                .map(PathBuf::from)
                .ok_or_else(|| CliError::MissingValue(option.clone()))
        };
        match option.as_str() {
            "--cmdline-file" => options.cmdline_file = value()?,
            "--etc-dir" => options.etc_dir = value()?,
            "--help" | "-h" => return Ok(Command::Help),
            _ => return Err(CliError::UnknownOption(option, "net-setup")),
        }
    }
    Ok(Command::NetSetup(options))
}

fn reject_extra(
    mut args: impl Iterator<Item = Result<String, CliError>>,
    command: &str,
) -> Result<(), CliError> {
    match args.next().transpose()? {
        Some(extra) => Err(CliError::UnexpectedArgument(extra, command.to_owned())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn serve_without_options_uses_virtio_port() {
        assert_eq!(
            parse(&["serve"]),
            Ok(Command::Serve(ServeTarget::VirtioPort))
        );
    }

    #[test]
    fn serve_with_device() {
        assert_eq!(
            parse(&["serve", "--device", "/dev/vport1p1"]),
            Ok(Command::Serve(ServeTarget::Device("/dev/vport1p1".into())))
        );
    }

    #[test]
    fn serve_with_unix_socket() {
        assert_eq!(
            parse(&["serve", "--unix-socket", "/tmp/a.sock"]),
            Ok(Command::Serve(ServeTarget::UnixSocket(
                "/tmp/a.sock".into()
            )))
        );
    }

    #[test]
    fn serve_rejects_two_targets() {
        assert_eq!(
            parse(&["serve", "--device", "/a", "--unix-socket", "/b"]),
            Err(CliError::ConflictingTargets)
        );
    }

    #[test]
    fn serve_with_vsock_port() {
        assert_eq!(
            parse(&["serve", "--vsock-port", "10789"]),
            Ok(Command::Serve(ServeTarget::Vsock(10_789)))
        );
    }

    #[test]
    fn serve_rejects_invalid_vsock_ports() {
        for port in ["", "x", "-1", "4294967295", "4294967296"] {
            assert_eq!(
                parse(&["serve", "--vsock-port", port]),
                Err(CliError::InvalidPort(port.into())),
                "{port:?}"
            );
        }
        assert_eq!(
            parse(&["serve", "--vsock-port"]),
            Err(CliError::MissingValue("--vsock-port".into()))
        );
        assert_eq!(
            parse(&["serve", "--vsock-port", "5", "--device", "/a"]),
            Err(CliError::ConflictingTargets)
        );
    }

    #[test]
    fn serve_option_without_value() {
        assert_eq!(
            parse(&["serve", "--device"]),
            Err(CliError::MissingValue("--device".into()))
        );
    }

    #[test]
    fn serve_unknown_option() {
        assert_eq!(
            parse(&["serve", "--port", "3"]),
            Err(CliError::UnknownOption("--port".into(), "serve"))
        );
    }

    #[test]
    fn net_setup_defaults() {
        assert_eq!(
            parse(&["net-setup"]),
            Ok(Command::NetSetup(NetSetupOptions::default()))
        );
    }

    #[test]
    fn net_setup_with_options() {
        assert_eq!(
            parse(&[
                "net-setup",
                "--cmdline-file",
                "/tmp/c",
                "--etc-dir",
                "/tmp/etc"
            ]),
            Ok(Command::NetSetup(NetSetupOptions {
                cmdline_file: "/tmp/c".into(),
                etc_dir: "/tmp/etc".into(),
            }))
        );
    }

    #[test]
    fn net_setup_rejects_unknown_and_missing() {
        assert_eq!(
            parse(&["net-setup", "--iface", "eth0"]),
            Err(CliError::UnknownOption("--iface".into(), "net-setup"))
        );
        assert_eq!(
            parse(&["net-setup", "--etc-dir"]),
            Err(CliError::MissingValue("--etc-dir".into()))
        );
    }

    #[test]
    fn version_and_help() {
        assert_eq!(parse(&["version"]), Ok(Command::Version));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(
            parse(&["version", "extra"]),
            Err(CliError::UnexpectedArgument(
                "extra".into(),
                "version".into()
            ))
        );
    }

    #[test]
    fn missing_and_unknown_command() {
        assert_eq!(parse(&[]), Err(CliError::MissingCommand));
        assert_eq!(parse(&["run"]), Err(CliError::UnknownCommand("run".into())));
    }
}
