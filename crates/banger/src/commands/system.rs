//! `banger system install|status|uninstall`: systemd units for banger-root
//! and bangerd.
//!
//! Both units use `KillMode=process`, so stopping or restarting a unit ends
//! only the main process; VMM processes run in their own sessions and keep
//! running. The helper also has `SendSIGKILL=no`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_process::CommandSpec;
use clap::{Args, Subcommand};

use super::Failure;
use crate::render::CliError;

pub use banger_api::units::{DAEMON_UNIT, ROOT_UNIT, UNIT_DIR};
const ROOT_CONFIG: &str = "etc/banger/root.toml";

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Install and start the banger-root and bangerd units (as root).
    Install(InstallArgs),
    /// Show whether the units run.
    Status,
    /// Stop and remove the units; running VMs keep running.
    Uninstall,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// User whose bangerd may use banger-root and who runs bangerd.
    #[arg(long)]
    owner: String,
    /// Directory of the banger binaries.
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
}

/// The account the units are written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

pub fn root_config(owner: &Owner) -> String {
    format!(
        "# Written by `banger system install`.\n# The only non-root user whose bangerd may use banger-root.\nowner_uid = {}\n",
        owner.uid
    )
}

pub fn root_unit(bin_dir: &Path) -> String {
    format!(
        "\
[Unit]
Description=banger privileged network helper
After=network.target

[Service]
ExecStart={bin}/banger-root --config /{ROOT_CONFIG}
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/run/banger
RuntimeDirectory=banger
RuntimeDirectoryPreserve=yes
RestrictSUIDSGID=yes
LockPersonality=yes
KillMode=process
SendSIGKILL=no
Restart=on-failure

[Install]
WantedBy=multi-user.target
",
        bin = bin_dir.display()
    )
}

pub fn daemon_unit(bin_dir: &Path, owner: &Owner) -> String {
    let home = owner.home.display();
    let runtime = format!("/run/user/{}", owner.uid);
    format!(
        "\
[Unit]
Description=banger daemon for {name}
After=network.target {ROOT_UNIT}
Wants={ROOT_UNIT}

[Service]
User={name}
ExecStart={bin}/bangerd
Environment=HOME={home}
Environment=XDG_RUNTIME_DIR={runtime}
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=-{home}/.local/state/banger -{home}/.cache/banger -{home}/.ssh -{runtime}
RestrictSUIDSGID=yes
LockPersonality=yes
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
",
        name = owner.name,
        bin = bin_dir.display(),
    )
}

/// Runs a command; tests pass a fake that records the argv.
pub trait Runner {
    fn run(&self, argv: &[&str]) -> Result<String, CliError>;
}

/// Runs commands for real, checking the exit status and keeping stderr.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[&str]) -> Result<String, CliError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(CliError::local(
                "no program to run because the argument vector is empty",
            ));
        };
        let output = CommandSpec::new(program)
            .args(args)
            .run()
            .map_err(|error| {
                let mut cli_error = CliError::local(error.to_string());
                if let Some(cause) = std::error::Error::source(&error) {
                    cli_error = cli_error.cause(cause.to_string());
                }
                cli_error
            })?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), CliError> {
    let fail = |e: io::Error| CliError::local(format!("failed to write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, text).map_err(fail)
}

/// Writes the configuration and units under `root` (`/` for real) and
/// starts them.
pub fn install(
    root: &Path,
    bin_dir: &Path,
    owner: &Owner,
    runner: &dyn Runner,
) -> Result<(), CliError> {
    write_file(&root.join(ROOT_CONFIG), &root_config(owner))?;
    write_file(&root.join(UNIT_DIR).join(ROOT_UNIT), &root_unit(bin_dir))?;
    write_file(
        &root.join(UNIT_DIR).join(DAEMON_UNIT),
        &daemon_unit(bin_dir, owner),
    )?;
    runner.run(&["systemctl", "daemon-reload"])?;
    runner.run(&["systemctl", "enable", "--now", ROOT_UNIT, DAEMON_UNIT])?;
    Ok(())
}

/// Stops and removes the units and the helper's configuration.
pub fn uninstall(root: &Path, runner: &dyn Runner) -> Result<(), CliError> {
    runner.run(&["systemctl", "disable", "--now", DAEMON_UNIT, ROOT_UNIT])?;
    for path in [
        root.join(UNIT_DIR).join(DAEMON_UNIT),
        root.join(UNIT_DIR).join(ROOT_UNIT),
        root.join(ROOT_CONFIG),
    ] {
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(CliError::local(format!(
                "failed to remove {}: {e}",
                path.display()
            )));
        }
    }
    runner.run(&["systemctl", "daemon-reload"])?;
    Ok(())
}

fn lookup_owner(name: &str) -> Result<Owner, CliError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| CliError::local(format!("failed to look up user {name:?}: {e}")))?
        .ok_or_else(|| {
            CliError::invalid(format!("user {name:?} not found"))
                .hint("pass an existing login name to --owner")
        })?;
    Ok(Owner {
        name: user.name,
        uid: user.uid.as_raw(),
        home: user.dir,
    })
}

fn require_root() -> Result<(), CliError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(
            CliError::local("this command changes systemd units and needs root")
                .hint("run it with sudo"),
        )
    }
}

pub async fn run(command: SystemCommand) -> Result<u8, Failure> {
    match command {
        SystemCommand::Install(args) => {
            require_root()?;
            let owner = lookup_owner(&args.owner)?;
            install(Path::new("/"), &args.bin_dir, &owner, &SystemRunner)?;
            eprintln!(
                "installed and started {ROOT_UNIT} and {DAEMON_UNIT} for {}",
                owner.name
            );
        }
        SystemCommand::Uninstall => {
            require_root()?;
            uninstall(Path::new("/"), &SystemRunner)?;
            eprintln!("removed {ROOT_UNIT} and {DAEMON_UNIT}; running VMs keep running");
        }
        SystemCommand::Status => {
            let client = crate::client::Client::connect().await?;
            let status: banger_api::network::NetworkStatus = client.get("/network").await?;
            for unit in [ROOT_UNIT, DAEMON_UNIT] {
                println!("{unit}: {}", unit_state(unit));
            }
            println!("network: {}", status.mode);
            if let Some(reason) = &status.unavailable_reason {
                println!("  {reason}");
            }
            println!("bridge: {} · pool: {}", status.bridge, status.pool);
            println!(
                "dns: {}",
                status.dns_addr.as_deref().unwrap_or("not listening")
            );
        }
    }
    Ok(0)
}

/// Returns the state of an installed unit as `systemctl is-active` reports
/// it, or why there is none.
fn unit_state(unit: &str) -> String {
    if !Path::new("/").join(UNIT_DIR).join(unit).exists() {
        return "not installed (`sudo banger system install --owner USER` installs it)".to_owned();
    }
    // `is-active` exits non-zero for inactive units and prints their state;
    // without a running systemd it prints nothing on stdout and the reason
    // on stderr.
    match Command::new("systemctl").args(["is-active", unit]).output() {
        Ok(output) => describe_is_active(&output.stdout, &output.stderr),
        Err(error) => format!("unknown (failed to run systemctl: {error})"),
    }
}

fn describe_is_active(stdout: &[u8], stderr: &[u8]) -> String {
    let state = String::from_utf8_lossy(stdout).trim().to_owned();
    if !state.is_empty() {
        return state;
    }
    let stderr = String::from_utf8_lossy(stderr);
    match stderr.lines().map(str::trim).find(|line| !line.is_empty()) {
        Some(reason) => format!("unknown ({reason})"),
        None => "unknown (systemctl printed nothing)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn is_active_output_is_described() {
        assert_eq!(describe_is_active(b"active\n", b""), "active");
        assert_eq!(describe_is_active(b"inactive\n", b""), "inactive");
        assert_eq!(
            describe_is_active(b"", b"System has not been booted with systemd.\n"),
            "unknown (System has not been booted with systemd.)"
        );
        assert_eq!(
            describe_is_active(b"", b""),
            "unknown (systemctl printed nothing)"
        );
    }

    struct FakeRunner(RefCell<Vec<String>>);

    impl Runner for FakeRunner {
        fn run(&self, argv: &[&str]) -> Result<String, CliError> {
            self.0.borrow_mut().push(argv.join(" "));
            Ok(String::new())
        }
    }

    fn owner() -> Owner {
        Owner {
            name: "dev".into(),
            uid: 1000,
            home: "/home/dev".into(),
        }
    }

    #[test]
    fn root_unit_keeps_vms_on_restart() {
        let unit = root_unit(Path::new("/usr/local/bin"));
        for line in [
            "ExecStart=/usr/local/bin/banger-root --config /etc/banger/root.toml",
            "KillMode=process",
            "SendSIGKILL=no",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/run/banger",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "missing {line:?} in\n{unit}"
            );
        }
    }

    #[test]
    fn daemon_unit_runs_as_owner() {
        let unit = daemon_unit(Path::new("/opt/b"), &owner());
        for line in [
            "User=dev",
            "ExecStart=/opt/b/bangerd",
            "KillMode=process",
            "Environment=XDG_RUNTIME_DIR=/run/user/1000",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "missing {line:?} in\n{unit}"
            );
        }
        assert!(unit.contains("-/home/dev/.local/state/banger"), "{unit}");
        assert!(!unit.contains("SendSIGKILL"), "{unit}");
    }

    #[test]
    fn written_units_pass_the_doctor_check() {
        let root = root_unit(Path::new("/usr/local/bin"));
        assert_eq!(
            banger_api::units::missing_settings(ROOT_UNIT, &root),
            Vec::<String>::new()
        );
        let daemon = daemon_unit(Path::new("/usr/local/bin"), &owner());
        assert_eq!(
            banger_api::units::missing_settings(DAEMON_UNIT, &daemon),
            Vec::<String>::new()
        );
    }

    #[test]
    fn root_config_names_owner() {
        assert!(root_config(&owner()).contains("\nowner_uid = 1000\n"));
    }

    #[test]
    fn install_writes_files_then_starts() {
        let dir = tempfile::tempdir().unwrap();
        let runner = FakeRunner(RefCell::default());
        install(dir.path(), Path::new("/usr/local/bin"), &owner(), &runner).unwrap();
        assert!(dir.path().join("etc/banger/root.toml").is_file());
        assert!(
            dir.path()
                .join("etc/systemd/system/banger-root.service")
                .is_file()
        );
        assert!(
            dir.path()
                .join("etc/systemd/system/bangerd.service")
                .is_file()
        );
        assert_eq!(
            *runner.0.borrow(),
            [
                "systemctl daemon-reload",
                "systemctl enable --now banger-root.service bangerd.service"
            ]
        );
    }

    #[test]
    fn uninstall_stops_then_removes() {
        let dir = tempfile::tempdir().unwrap();
        let runner = FakeRunner(RefCell::default());
        install(dir.path(), Path::new("/usr/local/bin"), &owner(), &runner).unwrap();
        runner.0.borrow_mut().clear();
        uninstall(dir.path(), &runner).unwrap();
        assert!(
            !dir.path()
                .join("etc/systemd/system/bangerd.service")
                .exists()
        );
        assert!(!dir.path().join("etc/banger/root.toml").exists());
        assert_eq!(
            *runner.0.borrow(),
            [
                "systemctl disable --now bangerd.service banger-root.service",
                "systemctl daemon-reload"
            ]
        );
    }
}
