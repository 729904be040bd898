//! The QEMU `microvm` command line.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::types::{Accel, LaunchSpec};
use crate::validate::{self, SpecError};

/// Machine options, checked with QEMU 7.2 and the Debian 6.1 cloud kernel:
/// `acpi=on` lets the kernel find the virtio-mmio devices in ACPI tables and
/// gives the guest a power button. The PIT stays on because under TCG the
/// kernel calibrates the TSC with it and stalls at boot with `pit=off`. The
/// RTC stays on because without it the guest clock starts at 1970. The legacy
/// PIC is not needed with ACPI and the IO-APIC, and no option ROMs are loaded.
pub const MACHINE: &str = "microvm,acpi=on,x-option-roms=off,pic=off";

/// Arguments that the backend puts before the caller's kernel command line.
/// microvm has no PCI bus, so `pci=off` spares the guest a failed probe and
/// its alarming console line.
pub const CONSOLE_CMDLINE: &str = "console=ttyS0 pci=off";

/// Disk cache mode. `writeback` honours guest flushes, so a guest `sync`
/// reaches the host file, and works on every host file system (unlike
/// `none`, which needs `O_DIRECT`).
const DISK_CACHE: &str = "writeback";

/// Paths of the per-VM files inside the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub qmp_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path) -> Self {
        RunPaths {
            qmp_socket: run_dir.join(super::QMP_SOCKET),
            agent_socket: run_dir.join(super::AGENT_SOCKET),
            pid_file: run_dir.join(super::PID_FILE),
            log: run_dir.join(super::LOG_FILE),
        }
    }
}

/// Returns the `-accel` and `-cpu` arguments: the host CPU model under KVM,
/// and under TCG the `max` model, which emulates every feature TCG supports.
pub fn accel_args(accel: Accel) -> [&'static str; 4] {
    match accel {
        Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
    }
}

/// Builds the arguments (without the program name) that start the VM of
/// `spec` as a daemon. `host_tsc_khz` is passed to TCG guests, see
/// [`full_cmdline`].
pub fn qemu_args(
    spec: &LaunchSpec,
    paths: &RunPaths,
    host_tsc_khz: Option<u64>,
) -> Result<Vec<OsString>, SpecError> {
    validate::validate_spec(spec)?;
    let cmdline = full_cmdline(&spec.cmdline, spec.accel, host_tsc_khz);
    validate::validate_cmdline(&spec.vm_id, &cmdline)?;
    validate::check_socket_path(&paths.qmp_socket)?;
    validate::check_socket_path(&paths.agent_socket)?;

    let mut args = ArgList::default();
    args.push_all(["-name", &format!("guest={},debug-threads=on", spec.vm_id)]);
    args.push_all(["-machine", MACHINE]);
    args.push_all(accel_args(spec.accel));
    args.push_all(["-smp", &spec.vcpus.to_string()]);
    args.push_all(["-m", &format!("{}M", spec.memory_mib)]);
    args.push_all([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);

    // -kernel, -initrd and -append take their value verbatim, without
    // QEMU's comma-separated option parsing.
    args.push("-kernel");
    args.push(spec.kernel.as_os_str());
    if let Some(initrd) = &spec.initrd {
        args.push("-initrd");
        args.push(initrd.as_os_str());
    }
    args.push_all(["-append", &cmdline]);

    args.push("-chardev");
    args.push(option_with_path(
        "file,id=console,append=on,path=",
        &spec.console_log,
    ));
    args.push_all(["-serial", "chardev:console"]);

    for (index, disk) in spec.disks.iter().enumerate() {
        let id = format!("disk{index}");
        let mut drive = option_with_path(&format!("if=none,id={id},format=raw,file="), &disk.path);
        drive.push(format!(",cache={DISK_CACHE},discard=unmap"));
        if disk.read_only {
            drive.push(",readonly=on");
        }
        args.push("-drive");
        args.push(drive);
        args.push_all([
            "-device",
            &format!("virtio-blk-device,drive={id},serial={id}"),
        ]);
    }

    for (index, nic) in spec.nics.iter().enumerate() {
        let id = format!("net{index}");
        args.push_all([
            "-netdev",
            &format!("tap,id={id},ifname={},script=no,downscript=no", nic.tap),
            "-device",
            &format!("virtio-net-device,netdev={id},mac={}", nic.mac),
        ]);
    }

    args.push("-chardev");
    args.push(option_with_path(
        "socket,id=agent,server=on,wait=off,path=",
        &paths.agent_socket,
    ));
    args.push_all([
        "-device",
        "virtio-serial-device",
        "-device",
        &format!(
            "virtserialport,chardev=agent,name={}",
            banger_agent_proto::SERIAL_PORT_NAME
        ),
    ]);

    args.push("-chardev");
    args.push(option_with_path(
        "socket,id=qmp,server=on,wait=off,path=",
        &paths.qmp_socket,
    ));
    args.push_all(["-mon", "chardev=qmp,mode=control"]);

    // With -daemonize, QEMU 7.2 sends its stderr to the -D file (truncated at
    // start), so the log keeps startup errors and later warnings.
    args.push("-pidfile");
    args.push(paths.pid_file.as_os_str());
    args.push("-D");
    args.push(paths.log.as_os_str());
    args.push_all(["-msg", "timestamp=on", "-daemonize"]);

    Ok(args.0)
}

/// Returns the kernel command line: the backend's console argument, under
/// TCG `tsc_early_khz` with the host TSC frequency, then `cmdline`.
///
/// Under TCG the guest TSC runs at the host's rate, and giving the kernel
/// that rate avoids its PIT calibration, which fails on a busy host and then
/// hangs the boot. The caller's arguments come last, so a `tsc_early_khz` in
/// `cmdline` wins.
pub fn full_cmdline(cmdline: &str, accel: Accel, host_tsc_khz: Option<u64>) -> String {
    let mut full = CONSOLE_CMDLINE.to_owned();
    if let (Accel::Tcg, Some(khz)) = (accel, host_tsc_khz) {
        full.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let cmdline = cmdline.trim();
    if !cmdline.is_empty() {
        full.push(' ');
        full.push_str(cmdline);
    }
    full
}

/// Returns `prefix` followed by `path` with each comma doubled, which is how
/// QEMU's option parser escapes a comma inside a value.
fn option_with_path(prefix: &str, path: &Path) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    for &byte in path.as_os_str().as_bytes() {
        bytes.push(byte);
        if byte == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

#[derive(Default)]
struct ArgList(Vec<OsString>);

impl ArgList {
    fn push(&mut self, arg: impl AsRef<OsStr>) {
        self.0.push(arg.as_ref().to_owned());
    }

    fn push_all<const N: usize>(&mut self, args: [&str; N]) {
        self.0.extend(args.iter().map(OsString::from));
    }
}

#[cfg(test)]
mod tests;
