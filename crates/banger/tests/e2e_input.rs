//! Bad input through the CLI: each case gets a clear error naming the value
//! and the fix, and changes nothing. No guest boots here.

mod common;

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
fn invalid_names_and_sizes_are_rejected() {
    require_e2e!();
    let env = UserEnv::with_private_cache();
    let run = env.run(&["vm", "create", "--name", "My_VM"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("invalid VM name \"My_VM\""), "{run}");
    assert!(run.stderr.contains("hint: use 1 to 63 lowercase"), "{run}");
    assert!(
        !run.stderr.contains("spec:"),
        "spec line for a rejected VM:\n{run}"
    );

    let run = env.run(&["vm", "create", "--name", "ok", "--disk-size", "8"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("invalid size \"8\""), "{run}");

    let run = env.run(&["vm", "run", "--name", "ok", "--vcpu", "0", "--", "true"]);
    assert_eq!(run.code, 125, "{run}");
    assert!(run.stderr.contains("invalid vCPU count 0"), "{run}");
    assert!(
        !run.stderr.contains("spec:"),
        "spec line for a rejected VM:\n{run}"
    );
    let run = env.run(&["vm", "create", "--name", "ok", "--memory", "99999999"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .contains("memory size 99999999 MiB is more than this host's"),
        "{run}"
    );
    assert!(run.stderr.contains("hint: use at most"), "{run}");
    // Bad input is explained in full, without a pointer into the daemon log.
    assert!(!run.stderr.contains("operation:"), "{run}");
    let too_many = std::thread::available_parallelism().unwrap().get() + 1;
    let vcpus = too_many.to_string();
    let run = env.run(&["vm", "create", "--name", "ok", "--vcpu", &vcpus]);
    assert_ne!(run.code, 0, "{run}");
    let expected = if too_many > 64 {
        format!("invalid vCPU count {too_many}")
    } else {
        format!("{too_many} vCPUs are more than this host's")
    };
    assert!(run.stderr.contains(&expected), "{run}");
    let run = env.run(&["vm", "run", "--rm", "--disk-size", "100T", "--", "true"]);
    assert_eq!(run.code, 125, "{run}");
    assert!(run.stderr.contains("invalid disk size 100T"), "{run}");
    assert!(run.stderr.contains("hint: use at most 16T"), "{run}");
    assert!(env.vms_json().is_empty(), "{:?}", env.vms_json());

    // A command without its `--` reads as a repository path.
    for args in [&["vm", "run", "uname"][..], &["vm", "run", "--rm", "uname"]] {
        let run = env.run(args);
        assert_eq!(run.code, 125, "{run}");
        assert!(run.stderr.contains("uname not found"), "{run}");
        assert!(
            run.stderr
                .contains("hint: to run a command, put it after `--`: banger vm run -- uname"),
            "{run}"
        );
    }

    // `--rm` without a command and without a terminal would boot a VM only
    // to delete it.
    let run = env.run(&["vm", "run", "--rm"]);
    assert_eq!(run.code, 125, "{run}");
    assert!(run.stderr.contains("without a command"), "{run}");
    assert!(env.vms_json().is_empty());
    assert!(env.vm_dirs().is_empty());
}

#[test]
fn unknown_image_and_kernel_are_rejected() {
    require_e2e!();
    let env = UserEnv::with_private_cache();
    let run = env.run(&["vm", "create", "--image", "no-such-image"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("image \"no-such-image\" not found"),
        "{run}"
    );
    assert!(run.stderr.contains("banger image list"), "{run}");

    let run = env.run(&["vm", "run", "--kernel", "no-such-kernel", "--", "true"]);
    assert_eq!(run.code, 125, "{run}");
    assert!(
        run.stderr.contains("kernel \"no-such-kernel\" not found"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("spec:"),
        "spec line for a rejected VM:\n{run}"
    );
    assert!(env.vms_json().is_empty());
    assert!(env.vm_dirs().is_empty());
}

#[test]
fn bad_kernel_files_are_rejected() {
    require_e2e!();
    let env = UserEnv::with_private_cache();
    let text = env.root.path().join("notes.txt");
    std::fs::write(&text, "these are notes, not a kernel\n".repeat(40)).unwrap();
    let run = env.run(&["kernel", "import", "--vmlinux", text.to_str().unwrap()]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("notes.txt"), "{run}");
    assert!(
        run.stderr
            .contains("neither an ELF vmlinux nor an x86 bzImage"),
        "{run}"
    );

    let run = env.run(&["kernel", "import", "--vmlinux", "/nonexistent/vmlinux"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .contains("kernel file /nonexistent/vmlinux not found"),
        "{run}"
    );

    let dir = env.root.path().to_str().unwrap();
    let run = env.run(&["kernel", "import", "--vmlinux", dir]);
    assert!(run.stderr.contains("is not a regular file"), "{run}");
    let run = env.run(&[
        "kernel",
        "import",
        "--vmlinux",
        text.to_str().unwrap(),
        "--modules",
        "/nonexistent",
    ]);
    assert!(
        run.stderr
            .contains("modules directory /nonexistent not found"),
        "{run}"
    );
    let run = env.run(&[
        "kernel",
        "import",
        "--vmlinux",
        text.to_str().unwrap(),
        "--modules",
        dir,
    ]);
    assert_ne!(run.code, 0, "{run}");

    // Usage errors: --modules needs --vmlinux, and a package excludes a file.
    let run = env.run(&["kernel", "import", "--deb", "x.deb", "--modules", dir]);
    assert_eq!(run.code, 2, "{run}");
    let run = env.run(&["kernel", "import", "--deb", "x.deb", "--vmlinux", "vmlinux"]);
    assert_eq!(run.code, 2, "{run}");

    assert_eq!(env.ok(&["kernel", "list", "--json"]).stdout.trim(), "[]");
    let cache = env.cache_home.join("banger/kernels");
    let published = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(published, 0, "nothing entered {}", cache.display());
}

#[test]
fn corrupt_kernel_package_is_rejected() {
    require_e2e!();
    let env = UserEnv::with_private_cache();
    let junk = env.root.path().join("junk.deb");
    std::fs::write(&junk, b"this is not a Debian package").unwrap();
    let run = env.run(&["kernel", "import", "--deb", junk.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("junk.deb"), "{run}");

    // A real package cut short.
    let download = env.root.path().join("dl");
    std::fs::create_dir_all(&download).unwrap();
    let fetched = std::process::Command::new("apt-get")
        .args(["download", "linux-image-cloud-amd64"])
        .current_dir(&download)
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let meta = std::fs::read_dir(&download)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let bytes = std::fs::read(&meta).unwrap();
    let truncated = env.root.path().join("truncated.deb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let run = env.run(&["kernel", "import", "--deb", truncated.to_str().unwrap()]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("truncated.deb"), "{run}");

    let run = env.run(&["kernel", "import", "--deb", "/nonexistent/k.deb"]);
    assert!(run.stderr.contains("/nonexistent/k.deb not found"), "{run}");

    let kernels = env.ok(&["kernel", "list", "--json"]);
    assert_eq!(kernels.stdout.trim(), "[]");
}

#[test]
fn missing_host_tools_are_named_with_their_package() {
    require_e2e!();
    let mut env = UserEnv::with_private_cache();
    // A PATH with the basics but without apt-get and mmdebstrap.
    let bin = env.root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "mkfs.ext4", "debugfs", "qemu-system-x86_64"] {
        for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
            let source = std::path::Path::new(dir).join(tool);
            if source.exists() {
                let _ = std::os::unix::fs::symlink(&source, bin.join(tool));
                break;
            }
        }
    }
    env.path_var = bin.display().to_string();

    let run = env.run(&["kernel", "pull"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("`apt-get` not found"), "{run}");
    assert!(run.stderr.contains("apt-get install apt"), "{run}");

    let run = env.run(&["image", "build"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("`mmdebstrap` not found"), "{run}");
    assert!(run.stderr.contains("apt-get install mmdebstrap"), "{run}");

    assert_eq!(env.ok(&["kernel", "list", "--json"]).stdout.trim(), "[]");
    assert_eq!(env.ok(&["image", "list", "--json"]).stdout.trim(), "[]");
}

#[test]
fn unreachable_daemon_is_reported() {
    require_e2e!();
    let env = UserEnv::with_private_cache();
    let mut command = env.command(&["vm", "list"]);
    command.env("BANGER_DAEMON_BIN", "/nonexistent/bangerd");
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("failed to start the daemon /nonexistent/bangerd"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn duplicate_name_and_image_in_use_are_rejected() {
    require_e2e!();
    let env = UserEnv::shared();
    env.ok(&["vm", "create", "--no-start", "--name", "twin"]);
    let run = env.run(&["vm", "create", "--no-start", "--name", "twin"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("a VM named \"twin\" already exists"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("spec:"),
        "spec line for a rejected VM:\n{run}"
    );
    assert_eq!(env.vms_json().len(), 1);
    assert_eq!(env.vm_dirs().len(), 1);

    let run = env.run(&["image", "rm", "debian-bookworm"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("used by VM(s) twin"), "{run}");

    let run = env.run(&["vm", "exec", "twin", "--", "true"]);
    assert_eq!(run.code, 125);
    assert!(run.stderr.contains("\"twin\" is stopped"), "{run}");

    env.ok(&["vm", "delete", "twin"]);
    env.ok(&["image", "rm", "debian-bookworm"]);
    assert_eq!(env.ok(&["image", "list", "--json"]).stdout.trim(), "[]");
}

#[test]
fn invalid_config_names_the_file() {
    require_e2e!();
    let env = UserEnv::with_private_cache();
    env.write_config("memory_mb = 1024\n");
    let run = env.run(&["vm", "list"]);
    assert_ne!(run.code, 0, "{run}");
    let config = env.root.path().join("config/banger/config.toml");
    assert!(
        run.stderr.contains("the daemon exited during startup"),
        "{run}"
    );
    assert!(run.stderr.contains("unknown field `memory_mb`"), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "hint: correct or remove the setting in {}",
            config.display()
        )),
        "{run}"
    );
}
