//! Checks on a [`LaunchSpec`] before any process starts.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::types::{LaunchSpec, NicSpec};

/// Maximum length of a VM id.
pub const MAX_VM_ID_LEN: usize = 64;

/// Maximum kernel command line length on x86 in bytes: `COMMAND_LINE_SIZE` is
/// 2048 in Linux `arch/x86/include/uapi/asm/setup.h`, including the NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;

/// Maximum length of a Unix socket path in bytes: `sun_path` is 108 bytes
/// on Linux, including the NUL.
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// Maximum tap device name length: `IFNAMSIZ` is 16 bytes, including the NUL.
pub const MAX_TAP_NAME_LEN: usize = 15;

/// Invalid launch specification or host file.
#[derive(Debug, Error)]
pub enum SpecError {
    #[error(
        "invalid VM id {value:?}: use 1 to {MAX_VM_ID_LEN} ASCII letters, digits, '.', '_' or '-'"
    )]
    InvalidVmId { value: String },

    #[error("invalid vCPU count 0 for VM {vm_id}: give at least 1")]
    ZeroVcpus { vm_id: String },

    #[error("invalid memory size 0 MiB for VM {vm_id}: give the guest memory in MiB")]
    ZeroMemory { vm_id: String },

    #[error(
        "kernel command line for VM {vm_id} is {len} bytes, over the x86 maximum of {MAX_CMDLINE_LEN}: shorten it"
    )]
    CmdlineTooLong { vm_id: String, len: usize },

    #[error("kernel command line for VM {vm_id} contains a NUL byte: remove it")]
    CmdlineNul { vm_id: String },

    #[error(
        "invalid tap device name {value:?}: use 1 to {MAX_TAP_NAME_LEN} ASCII letters, digits, '.', '_' or '-'"
    )]
    InvalidTapName { value: String },

    #[error(
        "invalid MAC address {value:?}: use six colon-separated hex octets of a unicast address, such as 02:00:00:00:00:01"
    )]
    InvalidMac { value: String },

    #[error(
        "socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH_LEN} bytes a Unix socket address holds: use a shorter run directory",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf, len: usize },

    #[error("{role} {} is not accessible: check that the file exists and is readable", path.display())]
    MissingFile {
        role: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{role} {} is not a regular file or block device", path.display())]
    NotAFile { role: &'static str, path: PathBuf },

    #[error("run directory {} is not accessible: the caller must create it with mode 0700", path.display())]
    RunDirMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("run directory {} is not a directory", path.display())]
    RunDirNotDirectory { path: PathBuf },

    #[error(
        "run directory {} has mode {mode:03o}, open to group or others: run `chmod 700` on it",
        path.display()
    )]
    RunDirOpen { path: PathBuf, mode: u32 },
}

/// Validates the values of a launch spec that need no file system access.
pub fn validate_spec(spec: &LaunchSpec) -> Result<(), SpecError> {
    if !is_valid_name(&spec.vm_id, MAX_VM_ID_LEN) {
        return Err(SpecError::InvalidVmId {
            value: spec.vm_id.clone(),
        });
    }
    if spec.vcpus == 0 {
        return Err(SpecError::ZeroVcpus {
            vm_id: spec.vm_id.clone(),
        });
    }
    if spec.memory_mib == 0 {
        return Err(SpecError::ZeroMemory {
            vm_id: spec.vm_id.clone(),
        });
    }
    if spec.cmdline.contains('\0') {
        return Err(SpecError::CmdlineNul {
            vm_id: spec.vm_id.clone(),
        });
    }
    for nic in &spec.nics {
        validate_nic(nic)?;
    }
    Ok(())
}

/// Checks the full kernel command line, after the backend added its own arguments.
pub fn validate_cmdline(vm_id: &str, cmdline: &str) -> Result<(), SpecError> {
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(SpecError::CmdlineTooLong {
            vm_id: vm_id.to_owned(),
            len: cmdline.len(),
        });
    }
    Ok(())
}

/// Rejects a socket path that does not fit in `sockaddr_un.sun_path`.
pub fn check_socket_path(path: &Path) -> Result<(), SpecError> {
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_SOCKET_PATH_LEN {
        return Err(SpecError::SocketPathTooLong {
            path: path.to_owned(),
            len,
        });
    }
    Ok(())
}

/// Checks that the kernel, initrd and disks exist and that the run directory
/// exists and is private to its owner.
pub fn check_host_files(spec: &LaunchSpec) -> Result<(), SpecError> {
    check_input_file("kernel", &spec.kernel)?;
    if let Some(initrd) = &spec.initrd {
        check_input_file("initrd", initrd)?;
    }
    for disk in &spec.disks {
        check_input_file("disk image", &disk.path)?;
    }

    let metadata = std::fs::metadata(&spec.run_dir).map_err(|source| SpecError::RunDirMissing {
        path: spec.run_dir.clone(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(SpecError::RunDirNotDirectory {
            path: spec.run_dir.clone(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SpecError::RunDirOpen {
            path: spec.run_dir.clone(),
            mode,
        });
    }
    Ok(())
}

fn check_input_file(role: &'static str, path: &Path) -> Result<(), SpecError> {
    let metadata = std::fs::metadata(path).map_err(|source| SpecError::MissingFile {
        role,
        path: path.to_owned(),
        source,
    })?;
    let file_type = metadata.file_type();
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(SpecError::NotAFile {
            role,
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn validate_nic(nic: &NicSpec) -> Result<(), SpecError> {
    if !is_valid_name(&nic.tap, MAX_TAP_NAME_LEN) {
        return Err(SpecError::InvalidTapName {
            value: nic.tap.clone(),
        });
    }
    if !is_valid_unicast_mac(&nic.mac) {
        return Err(SpecError::InvalidMac {
            value: nic.mac.clone(),
        });
    }
    Ok(())
}

fn is_valid_name(value: &str, max_len: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_valid_unicast_mac(value: &str) -> bool {
    let octets: Vec<&str> = value.split(':').collect();
    if octets.len() != 6 {
        return false;
    }
    let mut parsed = [0u8; 6];
    for (slot, octet) in parsed.iter_mut().zip(&octets) {
        if octet.len() != 2 || !octet.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        match u8::from_str_radix(octet, 16) {
            Ok(byte) => *slot = byte,
            Err(_) => return false,
        }
    }
    // Bit 0 of the first octet marks a multicast address.
    parsed[0] & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_validation_cases() {
        assert!(is_valid_unicast_mac("02:00:00:00:00:01"));
        assert!(is_valid_unicast_mac("aa:BB:cc:00:11:22"));
        assert!(!is_valid_unicast_mac("01:00:00:00:00:01"), "multicast");
        assert!(!is_valid_unicast_mac("02:00:00:00:00"), "five octets");
        assert!(!is_valid_unicast_mac("02:00:00:00:00:1"), "short octet");
        assert!(!is_valid_unicast_mac("02:00:00:00:00:zz"), "not hex");
        assert!(!is_valid_unicast_mac("02:00:00:00:00:+1"), "sign");
    }

    #[test]
    fn name_validation_cases() {
        assert!(is_valid_name("vm-1.test_a", 64));
        assert!(!is_valid_name("", 64));
        assert!(!is_valid_name("a,b", 64));
        assert!(!is_valid_name("a b", 64));
        assert!(!is_valid_name(&"a".repeat(65), 64));
        assert!(is_valid_name(&"a".repeat(64), 64));
    }

    #[test]
    fn socket_path_length_limit() {
        let dir = "/".to_owned() + &"d".repeat(90);
        let fits = PathBuf::from(format!(
            "{dir}/{}",
            "s".repeat(MAX_SOCKET_PATH_LEN - dir.len() - 1)
        ));
        assert_eq!(fits.as_os_str().len(), MAX_SOCKET_PATH_LEN);
        assert!(check_socket_path(&fits).is_ok());

        let too_long = PathBuf::from(format!("{}s", fits.display()));
        let error = check_socket_path(&too_long).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&too_long.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("108") || message.contains("107"),
            "{message}"
        );
        assert!(message.contains("shorter run directory"), "{message}");
    }
}
