//! End-to-end tests that boot real guests through the CLI, as a user would.
//!
//! They need QEMU, apt-get (the kernel), mmdebstrap (the image) and the
//! binaries from `scripts/build.sh`; `scripts/test.sh` provides all of them
//! and sets BANGER_E2E=1. Guests run under TCG on machines whose KVM cannot
//! boot them, so each boot takes tens of seconds.

mod common;

use std::time::Duration;

use common::{UserEnv, skip_reason};

macro_rules! require_e2e {
    () => {
        if let Some(reason) = skip_reason() {
            banger_test_support::skip(reason);
            return;
        }
    };
}

#[test]
fn vm_run_reports_guest_kernel_and_exit_code() {
    require_e2e!();
    let env = UserEnv::shared();

    let run = env.ok(&["vm", "run", "--rm", "--name", "first", "--", "uname", "-r"]);
    let spec = run.stderr.find("spec: first · ").expect("no spec line");
    let first_progress = run.stderr.find("» ").unwrap_or(usize::MAX);
    assert!(spec < first_progress, "the spec line comes first:\n{run}");
    let guest_release = run.stdout.trim().to_string();
    let kernels = env.ok(&["kernel", "list", "--json"]);
    let kernels: Vec<serde_json::Value> = serde_json::from_str(&kernels.stdout).unwrap();
    assert_eq!(kernels.len(), 1, "the default kernel was pulled once");
    assert_eq!(kernels[0]["release"].as_str(), Some(guest_release.as_str()));
    assert!(guest_release.ends_with("-cloud-amd64"), "{run}");
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(guest_release, host_release.trim());

    // --rm leaves no record, no directory and no VMM process.
    assert!(env.vms_json().is_empty());
    assert!(env.vm_dirs().is_empty(), "{:?}", env.vm_dirs());
    assert!(env.vm_run_dirs().is_empty(), "{:?}", env.vm_run_dirs());
    let daemon_only: Vec<u32> = env.own_processes();
    assert!(
        daemon_only.iter().all(|pid| !is_vmm(*pid)),
        "a VMM process is left: {daemon_only:?}"
    );

    let run = env.run(&[
        "vm",
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(run.code, 7, "{run}");
    assert_eq!(run.stdout, "out\n", "{run}");
    assert!(run.stderr.contains("err\n"), "{run}");
    assert!(!run.stdout.contains("err"), "{run}");
    assert!(env.vms_json().is_empty());
}

#[test]
fn vm_lifecycle_keeps_files_and_survives_daemon_restart() {
    require_e2e!();
    let env = UserEnv::shared();
    env.ok(&[
        "vm", "create", "--name", "dev", "--vcpu", "2", "--memory", "1024",
    ]);
    let listed = env.ok(&["ps"]);
    let row = listed
        .stdout
        .lines()
        .find(|l| l.contains(" dev "))
        .expect("dev listed");
    assert!(
        row.contains("running") && row.contains("debian-bookworm"),
        "{listed}"
    );
    for column in ["NAME", "STATE", "IMAGE", "VCPU", "MEM", "CREATED"] {
        assert!(
            listed.stdout.lines().next().unwrap().contains(column),
            "{listed}"
        );
    }

    env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo kept > /root/note; echo sys > /etc/banger-note; sync",
    ]);

    // A command that does not exist in the guest: 127 and a message.
    let missing = env.run(&["vm", "exec", "dev", "--", "no-such-command", "x"]);
    assert_eq!(missing.code, 127, "{missing}");
    assert!(missing.stderr.contains("no-such-command"), "{missing}");

    // Death by signal comes back as 128 + signal.
    let killed = env.run(&["vm", "exec", "dev", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code, 137, "{killed}");

    // Standard input reaches the command.
    let mut cat = env.command(&["vm", "exec", "dev", "--", "cat"]);
    cat.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cat.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "through stdin\n");

    // The daemon restarts while the VM runs and finds it again.
    env.ok(&["daemon", "stop"]);
    let vms = env.vms_json();
    assert_eq!(vms[0]["state"], "running", "{vms:?}");
    let again = env.ok(&["vm", "exec", "dev", "--", "cat", "/root/note"]);
    assert_eq!(again.stdout, "kept\n");

    env.ok(&["vm", "stop", "dev"]);
    // Stopping and starting again are no-ops that succeed.
    let again = env.ok(&["vm", "stop", "dev"]);
    assert!(
        again.stderr.contains("VM dev is stopped, not running"),
        "{again}"
    );
    assert!(
        env.own_processes().iter().all(|pid| !is_vmm(*pid)),
        "VMM left after stop"
    );
    let stopped = env.run(&["vm", "exec", "dev", "--", "true"]);
    assert_ne!(stopped.code, 0, "{stopped}");
    assert!(stopped.stderr.contains("\"dev\" is stopped"), "{stopped}");
    assert!(stopped.stderr.contains("banger vm start dev"), "{stopped}");
    let stats = env.ok(&["vm", "stats", "dev"]);
    assert!(stats.stdout.starts_with("dev · stopped\n"), "{stats}");
    assert!(!stats.stdout.contains("vmm"), "{stats}");

    // A stopped VM takes a new size for its next boot; a running one refuses.
    let set = env.ok(&["vm", "set", "dev", "--vcpu", "1", "--memory", "1536"]);
    assert!(set.stderr.contains("1 vcpu · 1536 MiB"), "{set}");
    let bad = env.run(&["vm", "set", "dev", "--vcpu", "0"]);
    assert!(bad.stderr.contains("invalid vCPU count 0"), "{bad}");
    let backend = env.ok(&["vm", "set", "dev", "--vmm", "qemu"]);
    assert!(
        backend.stderr.contains("· qemu from its next boot"),
        "{backend}"
    );
    let bad = env.run(&["vm", "set", "dev", "--vmm", "bogus"]);
    assert!(
        bad.stderr.contains("invalid VMM backend \"bogus\""),
        "{bad}"
    );

    env.ok(&["vm", "start", "dev"]);
    let again = env.ok(&["vm", "start", "dev"]);
    assert!(
        again.stderr.contains("VM dev is already running"),
        "{again}"
    );
    let running = env.run(&["vm", "set", "dev", "--memory", "2048"]);
    assert_ne!(running.code, 0, "{running}");
    assert!(running.stderr.contains("banger vm stop dev"), "{running}");
    let size = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "nproc; grep MemTotal /proc/meminfo",
    ]);
    let mut lines = size.stdout.lines();
    assert_eq!(lines.next(), Some("1"), "{size}");
    let mem_kib: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1024 * 1024..=1536 * 1024).contains(&mem_kib),
        "the guest sees {mem_kib} KiB:\n{size}"
    );

    // Stats come from the VMM process and from inside the guest.
    let stats = env.ok(&["vm", "stats", "dev"]);
    assert!(stats.stdout.starts_with("dev · running\n"), "{stats}");
    for part in [
        "  vmm     pid ",
        "  guest   up ",
        "  /root   ",
        "allocated on the host",
    ] {
        assert!(stats.stdout.contains(part), "no {part:?} in:\n{stats}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["vm", "stats", "dev", "--json"]).stdout).unwrap();
    assert_eq!(
        json["guest"]["memory_total_bytes"].as_u64(),
        Some(mem_kib * 1024),
        "{json}"
    );
    assert!(
        json["vmm"]["rss_bytes"].as_u64().unwrap() > 64 << 20,
        "{json}"
    );

    // Restart keeps the disks; the guest boots again.
    let boot_id = |env: &UserEnv| {
        env.ok(&[
            "vm",
            "exec",
            "dev",
            "--",
            "cat",
            "/proc/sys/kernel/random/boot_id",
        ])
        .stdout
    };
    let before = boot_id(&env);
    env.ok(&["vm", "restart", "dev"]);
    assert_ne!(boot_id(&env), before, "restart did not reboot the guest");

    // Prune deletes stopped VMs only, and asks first unless forced.
    env.ok(&["vm", "create", "--no-start", "--name", "idle"]);
    let asked = env.run(&["vm", "prune"]);
    assert_ne!(asked.code, 0, "{asked}");
    assert!(
        asked.stderr.contains("idle") && asked.stderr.contains("--force"),
        "{asked}"
    );
    assert_eq!(env.vms_json().len(), 2);
    let pruned = env.ok(&["vm", "prune", "--force"]);
    assert!(pruned.stderr.contains("idle: deleted"), "{pruned}");
    let left = env.vms_json();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["name"], "dev");

    let files = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "cat",
        "/root/note",
        "/etc/banger-note",
    ]);
    assert_eq!(files.stdout, "kept\nsys\n");

    env.ok(&["vm", "delete", "dev"]);
    assert!(env.vms_json().is_empty());
    assert!(env.vm_dirs().is_empty());
    assert!(env.own_processes().iter().all(|pid| !is_vmm(*pid)));
}

#[test]
fn boot_failure_leaves_error_record_and_no_files() {
    require_e2e!();
    let env = UserEnv::shared();
    // No guest boots in two seconds under emulation, so the boot times out.
    env.write_config("boot_timeout_secs = 2\n");
    let run = env.run(&["vm", "create", "--name", "slow"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("VM \"slow\" failed to boot"), "{run}");
    assert!(run.stderr.contains("did not answer within 2 s"), "{run}");
    assert!(run.stderr.contains("raise boot_timeout_secs in"), "{run}");
    let vms = env.vms_json();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["state"], "error");
    assert!(
        vms[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("did not answer"),
        "{vms:?}"
    );
    assert!(env.vm_dirs().is_empty(), "{:?}", env.vm_dirs());
    assert!(env.vm_run_dirs().is_empty(), "{:?}", env.vm_run_dirs());
    assert!(
        env.own_processes().iter().all(|pid| !is_vmm(*pid)),
        "VMM left behind"
    );

    // Starting it again explains that it has no disks.
    let start = env.run(&["vm", "start", "slow"]);
    assert_ne!(start.code, 0);
    assert!(start.stderr.contains("has no disks"), "{start}");
    env.ok(&["vm", "delete", "slow"]);

    // With --rm the failed VM is deleted instead of kept in `error`.
    let run = env.run(&["vm", "run", "--rm", "--name", "slow-rm", "--", "true"]);
    assert_eq!(run.code, 125, "{run}");
    assert!(
        run.stderr.contains("VM \"slow-rm\" failed to boot"),
        "{run}"
    );
    assert!(env.vms_json().is_empty(), "{:?}", env.vms_json());
    assert!(env.vm_dirs().is_empty(), "{:?}", env.vm_dirs());
    assert!(env.vm_run_dirs().is_empty(), "{:?}", env.vm_run_dirs());
    assert!(
        env.own_processes().iter().all(|pid| !is_vmm(*pid)),
        "VMM left behind"
    );
}

#[test]
fn interrupted_vm_run_rm_deletes_its_vm() {
    require_e2e!();
    let env = UserEnv::shared();
    let mut child = env
        .command(&["vm", "run", "--rm", "--name", "cut", "--", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Interrupt the CLI while the guest boots, as Ctrl-C on a terminal
    // would. The VM is recorded by then.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let booting = lines.find(|line| line.as_ref().is_ok_and(|line| line.contains("booting cut")));
    assert!(booting.is_some(), "no boot line before the CLI ended");
    assert_eq!(env.vms_json().len(), 1, "the VM is not recorded");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");

    // The daemon gives up the boot because the client is gone, and deletes the VM.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !env.vms_json().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "VM still recorded: {:?}",
            env.vms_json()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(env.vm_dirs().is_empty(), "{:?}", env.vm_dirs());
    assert!(env.vm_run_dirs().is_empty(), "{:?}", env.vm_run_dirs());
    assert!(
        env.own_processes().iter().all(|pid| !is_vmm(*pid)),
        "VMM left behind"
    );
}

fn is_vmm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.starts_with("qemu"))
        .unwrap_or(false)
}

#[test]
fn vm_run_without_command_on_a_terminal_opens_a_shell() {
    require_e2e!();
    let env = UserEnv::shared();
    let mut session = env.on_terminal(&["vm", "run", "--name", "shell"]);
    let at = session.expect("root@", 0, Duration::from_secs(300));
    session.send("echo in-$((6*7)) $(pwd); exit 3\r");
    let (code, screen) = session.finish(Duration::from_secs(60));
    assert_eq!(code, 3, "the shell's exit code comes back:\n{screen}");
    assert!(screen[at..].contains("in-42 /root"), "{screen}");
    assert!(
        screen.contains("VM shell is still running"),
        "no reminder that the VM runs on:\n{screen}"
    );
    let vms = env.vms_json();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["state"], "running");
    env.ok(&["vm", "delete", "shell"]);
}

/// Unpacks the test kernel package, or returns None when
/// BANGER_TEST_KERNEL_DIR contains none (scripts/test.sh downloads it).
fn unpacked_kernel_package(into: &std::path::Path) -> Option<(std::path::PathBuf, String)> {
    let deb = banger_test_support::kernel_deb()?;
    let status = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(into)
        .status()
        .ok()?;
    assert!(status.success(), "dpkg-deb -x {} failed", deb.display());
    let modules = std::fs::read_dir(into.join("lib/modules"))
        .ok()?
        .filter_map(Result::ok)
        .next()?
        .path();
    let release = modules.file_name()?.to_string_lossy().into_owned();
    Some((modules, release))
}

#[test]
fn kernel_imported_as_vmlinux_with_modules_boots() {
    require_e2e!();
    let unpacked = tempfile::tempdir().unwrap();
    let Some((modules, release)) = unpacked_kernel_package(unpacked.path()) else {
        banger_test_support::skip("no kernel package in BANGER_TEST_KERNEL_DIR");
        return;
    };
    let env = UserEnv::shared();
    env.ok(&["kernel", "pull"]);
    let kernels: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["kernel", "list", "--json"]).stdout).unwrap();
    let sha = kernels[0]["sha256"].as_str().unwrap();
    // The ELF vmlinux banger extracted from the package: QEMU boots it
    // through its PVH entry point, and the modules come from the tree.
    let vmlinux = env
        .cache_home
        .join("banger/kernels")
        .join(sha)
        .join("vmlinux");
    assert!(vmlinux.is_file(), "{}", vmlinux.display());

    let import = env.ok(&[
        "kernel",
        "import",
        "--vmlinux",
        vmlinux.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
        "--name",
        "custom",
    ]);
    assert_eq!(
        import.stdout.trim(),
        format!("custom {release}"),
        "{import}"
    );
    assert!(import.stderr.contains("selected modules: "), "{import}");

    let run = env.ok(&[
        "vm", "run", "--rm", "--kernel", "custom", "--", "uname", "-r",
    ]);
    assert_eq!(run.stdout.trim(), release, "{run}");
    env.ok(&["kernel", "rm", "custom"]);
}
