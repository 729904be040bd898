use std::ffi::OsString;
use std::path::PathBuf;

use super::*;
use crate::types::{DiskSpec, NicSpec};

fn spec(accel: Accel) -> LaunchSpec {
    LaunchSpec {
        vm_id: "vm1".to_owned(),
        vcpus: 2,
        memory_mib: 1024,
        kernel: PathBuf::from("/k/vmlinuz"),
        initrd: Some(PathBuf::from("/k/initrd.img")),
        cmdline: "root=/dev/vda rw".to_owned(),
        disks: vec![
            DiskSpec {
                path: PathBuf::from("/vms/vm1/root.img"),
                read_only: false,
            },
            DiskSpec {
                path: PathBuf::from("/vms/vm1/seed.img"),
                read_only: true,
            },
        ],
        nics: vec![NicSpec {
            tap: "bgtap0".to_owned(),
            mac: "02:00:00:00:00:01".to_owned(),
        }],
        run_dir: PathBuf::from("/run/vm1"),
        console_log: PathBuf::from("/vms/vm1/console.log"),
        accel,
    }
}

fn to_strings(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|arg| arg.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn tcg_argument_vector() {
    let spec = spec(Accel::Tcg);
    let args = qemu_args(&spec, &RunPaths::new(&spec.run_dir), None).unwrap();
    let expected = [
        "-name",
        "guest=vm1,debug-threads=on",
        "-machine",
        "microvm,acpi=on,x-option-roms=off,pic=off",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "1024M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        "/k/vmlinuz",
        "-initrd",
        "/k/initrd.img",
        "-append",
        "console=ttyS0 pci=off root=/dev/vda rw",
        "-chardev",
        "file,id=console,append=on,path=/vms/vm1/console.log",
        "-serial",
        "chardev:console",
        "-drive",
        "if=none,id=disk0,format=raw,file=/vms/vm1/root.img,cache=writeback,discard=unmap",
        "-device",
        "virtio-blk-device,drive=disk0,serial=disk0",
        "-drive",
        "if=none,id=disk1,format=raw,file=/vms/vm1/seed.img,cache=writeback,discard=unmap,readonly=on",
        "-device",
        "virtio-blk-device,drive=disk1,serial=disk1",
        "-netdev",
        "tap,id=net0,ifname=bgtap0,script=no,downscript=no",
        "-device",
        "virtio-net-device,netdev=net0,mac=02:00:00:00:00:01",
        "-chardev",
        "socket,id=agent,server=on,wait=off,path=/run/vm1/agent.sock",
        "-device",
        "virtio-serial-device",
        "-device",
        "virtserialport,chardev=agent,name=banger.agent",
        "-chardev",
        "socket,id=qmp,server=on,wait=off,path=/run/vm1/qmp.sock",
        "-mon",
        "chardev=qmp,mode=control",
        "-pidfile",
        "/run/vm1/qemu.pid",
        "-D",
        "/run/vm1/vmm.log",
        "-msg",
        "timestamp=on",
        "-daemonize",
    ];
    assert_eq!(to_strings(&args), expected);
}

#[test]
fn kvm_uses_host_cpu() {
    let spec = spec(Accel::Kvm);
    let args = to_strings(&qemu_args(&spec, &RunPaths::new(&spec.run_dir), None).unwrap());
    let accel = args.iter().position(|arg| arg == "-accel").unwrap();
    assert_eq!(args[accel + 1], "kvm");
    let cpu = args.iter().position(|arg| arg == "-cpu").unwrap();
    assert_eq!(args[cpu + 1], "host");
    assert!(!args.iter().any(|arg| arg == "tcg"));
}

#[test]
fn no_initrd_disks_or_nics() {
    let mut spec = spec(Accel::Tcg);
    spec.initrd = None;
    spec.disks.clear();
    spec.nics.clear();
    spec.cmdline = "  ".to_owned();
    let args = to_strings(&qemu_args(&spec, &RunPaths::new(&spec.run_dir), None).unwrap());
    assert!(!args.iter().any(|arg| arg == "-initrd"));
    assert!(!args.iter().any(|arg| arg == "-drive" || arg == "-netdev"));
    let append = args.iter().position(|arg| arg == "-append").unwrap();
    assert_eq!(args[append + 1], "console=ttyS0 pci=off");
}

#[test]
fn commas_in_paths_are_doubled() {
    let mut spec = spec(Accel::Tcg);
    spec.disks[0].path = PathBuf::from("/vms/a,b/root.img");
    spec.console_log = PathBuf::from("/vms/a,b/console.log");
    spec.kernel = PathBuf::from("/k/a,b");
    let args = to_strings(&qemu_args(&spec, &RunPaths::new(&spec.run_dir), None).unwrap());
    assert!(args.contains(&"file,id=console,append=on,path=/vms/a,,b/console.log".to_owned()));
    assert!(
        args.iter()
            .any(|arg| arg.starts_with("if=none,id=disk0,format=raw,file=/vms/a,,b/root.img,"))
    );
    // -kernel takes its value verbatim.
    assert!(args.contains(&"/k/a,b".to_owned()));
}

#[test]
fn long_run_dir_is_rejected() {
    let mut spec = spec(Accel::Tcg);
    spec.run_dir = PathBuf::from(format!("/{}", "r".repeat(100)));
    let error = qemu_args(&spec, &RunPaths::new(&spec.run_dir), None).unwrap_err();
    assert!(
        matches!(error, SpecError::SocketPathTooLong { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&spec.run_dir.display().to_string()),
        "{message}"
    );
    assert!(message.contains("shorter run directory"), "{message}");
}

#[test]
fn invalid_values_are_rejected() {
    type Change = fn(&mut LaunchSpec);
    let cases: [(&str, Change); 7] = [
        ("vm id with comma", |spec| spec.vm_id = "a,b".to_owned()),
        ("empty vm id", |spec| spec.vm_id.clear()),
        ("zero vcpus", |spec| spec.vcpus = 0),
        ("zero memory", |spec| spec.memory_mib = 0),
        ("long cmdline", |spec| spec.cmdline = "x".repeat(2040)),
        ("tap with comma", |spec| {
            spec.nics[0].tap = "tap,0".to_owned()
        }),
        ("multicast mac", |spec| {
            spec.nics[0].mac = "01:00:5e:00:00:01".to_owned()
        }),
    ];
    for (name, change) in cases {
        let mut spec = spec(Accel::Tcg);
        change(&mut spec);
        let result = qemu_args(&spec, &RunPaths::new(&spec.run_dir), None);
        assert!(result.is_err(), "{name} was accepted");
    }
}

#[test]
fn tcg_gets_host_tsc_frequency() {
    let spec = spec(Accel::Tcg);
    let args =
        to_strings(&qemu_args(&spec, &RunPaths::new(&spec.run_dir), Some(2_596_000)).unwrap());
    let append = args.iter().position(|arg| arg == "-append").unwrap();
    assert_eq!(
        args[append + 1],
        "console=ttyS0 pci=off tsc_early_khz=2596000 root=/dev/vda rw"
    );

    let spec = LaunchSpec {
        accel: Accel::Kvm,
        ..spec
    };
    let args =
        to_strings(&qemu_args(&spec, &RunPaths::new(&spec.run_dir), Some(2_596_000)).unwrap());
    let append = args.iter().position(|arg| arg == "-append").unwrap();
    assert_eq!(
        args[append + 1],
        "console=ttyS0 pci=off root=/dev/vda rw",
        "tsc_early_khz is added only under TCG"
    );
}
