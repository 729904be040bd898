//! SSH access to guests without trust on first use.
//!
//! banger keeps an ed25519 client key under `$XDG_STATE_HOME/banger/ssh`.
//! Before a VM's first boot it generates the VM's ed25519 host key, writes
//! it and an sshd drop-in into the root disk, and writes the client's public
//! key into the work disk (mounted on `/root`). The host key is pinned in
//! banger's own `known_hosts` under `NAME.vm` and the VM's address, and a
//! generated ssh_config file has one `Host NAME.vm` block per VM.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_api::ErrorKind;
use banger_api::network::SshTarget;
use banger_image::image::{ImageError, InjectFile, inject_files};
use banger_model::VmRecord;
use banger_process::{CommandError, CommandSpec};
use thiserror::Error;

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

const KEYGEN_TIMEOUT: Duration = Duration::from_secs(30);
const HOST_KEY: &str = "ssh_host_ed25519_key";

/// sshd settings written to `/etc/ssh/sshd_config.d/banger.conf`. Debian's
/// sshd_config includes the drop-ins first, and the first value of an
/// option wins, so these override the image's settings. Naming one HostKey
/// makes sshd offer only banger's ed25519 key.
pub const SSHD_DROP_IN: &str = "\
# Written by banger: the host key pinned in banger's known_hosts, key logins only.
HostKey /etc/ssh/ssh_host_ed25519_key
HostKeyAlgorithms ssh-ed25519
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
";

#[derive(Debug, Error)]
pub enum SshError {
    #[error("creating directory {path} failed")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "generating an ed25519 key at {path} failed; install openssh-client (apt-get install openssh-client)"
    )]
    Keygen {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the SSH files into the disk image {path} failed")]
    Inject {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("setting the mode of /root/.ssh in the work disk {path} failed")]
    DirMode {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
}

/// A VM's entry in known_hosts and the ssh_config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    pub name: String,
    pub ip: String,
    /// `ssh-ed25519 AAAA...` without a comment.
    pub host_key: String,
}

/// known_hosts lines pinning each VM's host key under `NAME.vm` and its address.
pub fn known_hosts_text(hosts: &[SshHost]) -> String {
    let mut text =
        String::from("# Written by bangerd; regenerated when VMs start or are deleted.\n");
    for host in hosts {
        text.push_str(&format!("{}.vm,{} {}\n", host.name, host.ip, host.host_key));
    }
    text
}

/// An ssh_config file with one `Host NAME.vm` block per VM.
pub fn ssh_config_text(hosts: &[SshHost], identity: &Path, known_hosts: &Path) -> String {
    let mut text =
        String::from("# Written by bangerd; regenerated when VMs start or are deleted.\n");
    for host in hosts {
        text.push_str(&format!(
            "\nHost {name}.vm\n    HostName {ip}\n    User root\n    IdentityFile \"{identity}\"\n    IdentitiesOnly yes\n    UserKnownHostsFile \"{known}\"\n    StrictHostKeyChecking yes\n",
            name = host.name,
            ip = host.ip,
            identity = identity.display(),
            known = known_hosts.display(),
        ));
    }
    text
}

/// The key type and base64 body of an OpenSSH public key line.
fn key_without_comment(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let kind = parts.next()?;
    let body = parts.next()?;
    Some(format!("{kind} {body}"))
}

fn create_dir(path: &Path, mode: u32) -> Result<(), SshError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| SshError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `ssh-keygen -t ed25519 -N ""` for `path` unless the key exists.
pub fn ensure_key(path: &Path, comment: &str) -> Result<(), SshError> {
    // Concurrent creates reach here together; one daemon runs per user (its
    // lock file), so a process-wide lock is enough to generate a key once.
    static KEYGEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = KEYGEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir(parent, 0o700)?;
    }
    // Generate under a temporary name and rename the public half first, so
    // the private key's path never exists without its `.pub`.
    let temp = path.with_extension("keygen-tmp");
    let temp_pub = public_key_path(&temp);
    let _ = std::fs::remove_file(&temp);
    let _ = std::fs::remove_file(&temp_pub);
    CommandSpec::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&temp)
        .timeout(KEYGEN_TIMEOUT)
        .run()
        .map_err(|source| SshError::Keygen {
            path: path.to_path_buf(),
            source,
        })?;
    for (from, to) in [
        (&temp_pub, &public_key_path(path)),
        (&temp, &path.to_path_buf()),
    ] {
        std::fs::rename(from, to).map_err(|source| SshError::Write {
            path: to.clone(),
            source,
        })?;
    }
    Ok(())
}

fn public_key_path(key: &Path) -> PathBuf {
    let mut text = key.as_os_str().to_owned();
    text.push(".pub");
    PathBuf::from(text)
}

fn write_private(path: &Path, text: &str) -> Result<(), SshError> {
    let temp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        io::Write::write_all(&mut file, text.as_bytes())?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|source| SshError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the SSH files into a new VM's disks; see the module comment.
fn prepare_disks(
    vm_dir: &Path,
    vm_name: &str,
    client_key: &Path,
    root_disk: &Path,
    work_disk: &Path,
) -> Result<(), SshError> {
    ensure_key(client_key, "banger")?;
    let host_key = vm_dir.join(HOST_KEY);
    let _ = std::fs::remove_file(&host_key);
    let _ = std::fs::remove_file(public_key_path(&host_key));
    ensure_key(&host_key, &format!("{vm_name}.vm"))?;
    let drop_in = vm_dir.join("sshd-banger.conf");
    std::fs::write(&drop_in, SSHD_DROP_IN).map_err(|source| SshError::Write {
        path: drop_in.clone(),
        source,
    })?;
    let root_files = [
        (host_key.clone(), "/etc/ssh/ssh_host_ed25519_key", 0o600),
        (
            public_key_path(&host_key),
            "/etc/ssh/ssh_host_ed25519_key.pub",
            0o644,
        ),
        (drop_in.clone(), "/etc/ssh/sshd_config.d/banger.conf", 0o644),
    ];
    let inject = root_files.map(|(host_path, guest, mode)| InjectFile {
        host_path,
        guest_path: guest.into(),
        mode,
        uid: 0,
        gid: 0,
    });
    let result = inject_files(root_disk, &inject).map_err(|source| SshError::Inject {
        path: root_disk.to_path_buf(),
        source,
    });
    // The private host key lives on in the guest only.
    let _ = std::fs::remove_file(&host_key);
    let _ = std::fs::remove_file(&drop_in);
    result?;

    let authorized = InjectFile {
        host_path: public_key_path(client_key),
        guest_path: "/.ssh/authorized_keys".into(),
        mode: 0o600,
        uid: 0,
        gid: 0,
    };
    inject_files(work_disk, &[authorized]).map_err(|source| SshError::Inject {
        path: work_disk.to_path_buf(),
        source,
    })?;
    // inject_files creates missing directories with mode 0755; sshd wants
    // ~/.ssh private.
    CommandSpec::new("debugfs")
        .args(["-w", "-R", "sif /.ssh mode 040700"])
        .arg(work_disk)
        .timeout(KEYGEN_TIMEOUT)
        .run()
        .map_err(|source| SshError::DirMode {
            path: work_disk.to_path_buf(),
            source,
        })?;
    Ok(())
}

impl Daemon {
    pub fn ssh_dir(&self) -> PathBuf {
        self.paths.state_dir.join("ssh")
    }

    pub fn ssh_key_path(&self) -> PathBuf {
        self.config
            .ssh_key_path
            .clone()
            .unwrap_or_else(|| self.ssh_dir().join("id_ed25519"))
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    pub fn ssh_config_path(&self) -> PathBuf {
        self.ssh_dir().join("config")
    }

    /// Generates the VM's host key and writes it, the sshd drop-in and
    /// banger's public key into the VM's disks. Runs before the first boot.
    pub async fn prepare_ssh(&self, vm: &VmRecord) -> ApiResult<()> {
        let vm_dir = self.paths.vm_dir(&vm.id);
        let name = vm.name.clone();
        let key = self.ssh_key_path();
        let root = vm_dir.join(crate::vms::ROOT_DISK);
        let work = vm_dir.join(crate::vms::WORK_DISK);
        crate::artifacts::blocking(move || {
            prepare_disks(&vm_dir, &name, &key, &root, &work).map_err(|e| {
                ApiError::from_error(ErrorKind::Internal, &e).context("failed to set up SSH access")
            })
        })
        .await
    }

    /// Rewrites known_hosts and the ssh_config file from the VMs that have
    /// an address and a host key. Failures are logged.
    pub async fn refresh_ssh_files(&self) {
        let hosts = match self.ssh_hosts() {
            Ok(hosts) => hosts,
            Err(error) => {
                tracing::warn!(error = %error, "failed to list SSH hosts");
                return;
            }
        };
        let dir = self.ssh_dir();
        let known = self.known_hosts_path();
        let config = self.ssh_config_path();
        let key = self.ssh_key_path();
        let result = create_dir(&dir, 0o700)
            .and_then(|()| write_private(&known, &known_hosts_text(&hosts)))
            .and_then(|()| write_private(&config, &ssh_config_text(&hosts, &key, &known)));
        if let Err(error) = result {
            tracing::warn!(error = %banger_net::error_chain(&error), "failed to write the SSH files");
        }
    }

    fn ssh_hosts(&self) -> ApiResult<Vec<SshHost>> {
        let (vms, leases) = {
            let store = self.store();
            (store.list_vms()?, store.list_leases()?)
        };
        let mut hosts = Vec::new();
        for vm in vms {
            let Some(lease) = leases.iter().find(|l| l.vm_id == vm.id) else {
                continue;
            };
            let path = public_key_path(&self.paths.vm_dir(&vm.id).join(HOST_KEY));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Some(host_key) = key_without_comment(&text) {
                hosts.push(SshHost {
                    name: vm.name.clone(),
                    ip: lease.ip.to_string(),
                    host_key,
                });
            }
        }
        Ok(hosts)
    }

    /// What `banger vm ssh NAME` connects to.
    pub fn ssh_target(&self, name: &str) -> ApiResult<SshTarget> {
        let vm = self.running_vm(name)?;
        let lease = self.store().get_lease(&vm.id)?.ok_or_else(|| {
            ApiError::conflict(format!("VM {name:?} has no network address"))
                .hint("see `banger system status`; VMs get an address when banger-root runs or bangerd runs as root")
        })?;
        Ok(SshTarget {
            name: vm.name,
            ip: lease.ip.to_string(),
            user: "root".to_owned(),
            identity_file: self.ssh_key_path().display().to_string(),
            known_hosts: self.known_hosts_path().display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> SshHost {
        SshHost {
            name: "dev".into(),
            ip: "172.30.0.2".into(),
            host_key: "ssh-ed25519 AAAAC3Nza".into(),
        }
    }

    #[test]
    fn known_hosts_pins_name_and_address() {
        let text = known_hosts_text(&[host()]);
        assert!(
            text.contains("\ndev.vm,172.30.0.2 ssh-ed25519 AAAAC3Nza\n"),
            "{text}"
        );
    }

    #[test]
    fn ssh_config_has_block_per_vm() {
        let text = ssh_config_text(
            &[host()],
            Path::new("/s/id_ed25519"),
            Path::new("/s/known hosts"),
        );
        assert!(
            text.contains("Host dev.vm\n    HostName 172.30.0.2\n"),
            "{text}"
        );
        assert!(text.contains("IdentityFile \"/s/id_ed25519\""), "{text}");
        assert!(
            text.contains("UserKnownHostsFile \"/s/known hosts\""),
            "{text}"
        );
        assert!(text.contains("StrictHostKeyChecking yes"), "{text}");
    }

    #[test]
    fn comment_is_dropped_from_key() {
        assert_eq!(
            key_without_comment("ssh-ed25519 AAAA dev.vm\n").as_deref(),
            Some("ssh-ed25519 AAAA")
        );
        assert_eq!(key_without_comment("garbage"), None);
    }

    #[test]
    fn key_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sub/id_ed25519");
        ensure_key(&key, "test").unwrap();
        let first = std::fs::read(&key).unwrap();
        ensure_key(&key, "test").unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), first);
        let public = std::fs::read_to_string(public_key_path(&key)).unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
    }

    #[test]
    fn disks_receive_keys_and_drop_in() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.ext4");
        let work = dir.path().join("work.ext4");
        for image in [&root, &work] {
            banger_image::disk::create_work_disk(image, 16 << 20).unwrap();
        }
        let key = dir.path().join("ssh/id_ed25519");
        prepare_disks(dir.path(), "dev", &key, &root, &work).unwrap();

        let stat = |image: &Path, path: &str| {
            let out = std::process::Command::new("debugfs")
                .args(["-R", &format!("stat {path}")])
                .arg(image)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(
            stat(&work, "/.ssh").contains("Mode:  0700"),
            "{}",
            stat(&work, "/.ssh")
        );
        assert!(stat(&work, "/.ssh/authorized_keys").contains("Mode:  0600"));
        assert!(stat(&root, "/etc/ssh/ssh_host_ed25519_key").contains("Mode:  0600"));
        assert!(stat(&root, "/etc/ssh/sshd_config.d/banger.conf").contains("Mode:  0644"));
        assert!(
            !dir.path().join(HOST_KEY).exists(),
            "the private host key stays in the guest only"
        );
        assert!(public_key_path(&dir.path().join(HOST_KEY)).exists());
    }
}
