//! Workspaces end to end: real git repositories on the host, copied into
//! real guests with the real binaries. Two VMs boot in all: `dev` for the
//! workspace life cycle and `vm exec`, and `tiny` (64M work disk) for
//! `vm run PATH` and a disk that runs out of space.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{UserEnv, skip_reason};

macro_rules! require_e2e {
    () => {
        if let Some(reason) = skip_reason() {
            banger_test_support::skip(reason);
            return;
        }
    };
}

/// Runs git in `dir` and fails the test when it fails.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A new repository on branch `main` with a local identity.
fn new_repo(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["config", "user.name", "Host User"]);
    git(&dir, &["config", "user.email", "host@example.com"]);
    dir
}

fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Files and symlinks of the guest directory, without `.git`, sorted.
fn guest_files(env: &UserEnv, vm: &str, dir: &str) -> Vec<String> {
    let run = env.ok(&[
        "vm",
        "exec",
        vm,
        "--guest-path",
        dir,
        "--",
        "sh",
        "-c",
        "find . -path ./.git -prune -o \\( -type f -o -type l \\) -print | sed 's|^./||'",
    ]);
    lines(&run.stdout)
}

fn workspace_of(env: &UserEnv, vm: &str) -> serde_json::Value {
    env.vms_json()
        .into_iter()
        .find(|v| v["name"] == vm)
        .map(|v| v["workspace"].clone())
        .expect("VM listed")
}

fn short(commit: &str) -> &str {
    &commit[..7]
}

/// The project repository of the life-cycle test: a tracked file, a path
/// with a space and unicode, a symlink, an untracked and an ignored file.
fn project_repo(parent: &Path) -> (PathBuf, String) {
    let repo = new_repo(parent, "my proj");
    std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    std::fs::write(repo.join("tracked.txt"), "tracked v1\n").unwrap();
    std::fs::create_dir(repo.join("sp ace")).unwrap();
    std::fs::write(repo.join("sp ace/ünï cödé.txt"), "unicode\n").unwrap();
    std::os::unix::fs::symlink("tracked.txt", repo.join("link")).unwrap();
    let head = commit_all(&repo, "first");
    std::fs::write(repo.join("untracked.txt"), "untracked\n").unwrap();
    std::fs::write(repo.join("debug.log"), "ignored\n").unwrap();
    (repo, head)
}

#[test]
fn workspace_life_cycle_in_one_vm() {
    require_e2e!();
    let env = UserEnv::shared();
    let (repo, head) = project_repo(env.root.path());
    let repo_arg = repo.to_str().unwrap();
    env.ok(&["vm", "create", "--name", "dev", "--memory", "1024"]);

    // --dry-run prints the exact list and records nothing.
    let dry = env.ok(&["vm", "workspace", "prepare", "dev", repo_arg, "--dry-run"]);
    let tracked = [".gitignore", "link", "sp ace/ünï cödé.txt", "tracked.txt"];
    assert_eq!(lines(&dry.stdout), tracked, "{dry}");
    let dry = env.ok(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        repo_arg,
        "--dry-run",
        "--include-untracked",
    ]);
    let with_untracked = [
        ".gitignore",
        "link",
        "sp ace/ünï cödé.txt",
        "tracked.txt",
        "untracked.txt",
    ];
    assert_eq!(lines(&dry.stdout), with_untracked, "{dry}");
    assert!(workspace_of(&env, "dev").is_null());
    let absent = env.run(&["vm", "exec", "dev", "--", "test", "-e", "/root/repo"]);
    assert_eq!(absent.code, 1, "dry run created the target:\n{absent}");

    // Tracked files only by default, from a subdirectory of the repository.
    let mut prepare = env.command(&["vm", "workspace", "prepare", "dev"]);
    prepare.current_dir(repo.join("sp ace"));
    let output = prepare.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(guest_files(&env, "dev", "/root/repo"), tracked);
    let guest_head = env.ok(&["vm", "exec", "dev", "--", "git", "rev-parse", "HEAD"]);
    assert_eq!(guest_head.stdout.trim(), head);

    // With untracked files; ignored ones never.
    env.ok(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        repo_arg,
        "--include-untracked",
    ]);
    assert_eq!(guest_files(&env, "dev", "/root/repo"), with_untracked);
    let status = env.ok(&["vm", "exec", "dev", "--", "git", "status", "--porcelain"]);
    assert_eq!(status.stdout, "?? untracked.txt\n", "{status}");
    let branch = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "git",
        "symbolic-ref",
        "--short",
        "HEAD",
    ]);
    assert_eq!(branch.stdout.trim(), "main");
    let identity = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "git config user.name; git config user.email",
    ]);
    assert_eq!(identity.stdout, "Host User\nhost@example.com\n");
    let log = env.ok(&["vm", "exec", "dev", "--", "git", "log", "--format=%s"]);
    assert_eq!(log.stdout, "first\n");
    let link = env.ok(&["vm", "exec", "dev", "--", "readlink", "link"]);
    assert_eq!(link.stdout, "tracked.txt\n");

    // The record: `ps` column and JSON.
    let recorded = workspace_of(&env, "dev");
    assert_eq!(recorded["head"], head.as_str());
    assert_eq!(recorded["branch"], "main");
    assert_eq!(recorded["guest_path"], "/root/repo");
    assert!(recorded["prepared_at"].as_str().unwrap().ends_with('Z'));
    let ps = env.ok(&["ps"]);
    assert!(
        ps.stdout.lines().next().unwrap().contains("WORKSPACE"),
        "{ps}"
    );
    assert!(
        ps.stdout.contains(&format!("~/my proj@{}", short(&head))),
        "{ps}"
    );

    // A host commit makes the workspace stale: a warning, then a re-sync.
    std::fs::write(repo.join("tracked.txt"), "tracked v2\n").unwrap();
    let second = commit_all(&repo, "second");
    let warned = env.ok(&["vm", "exec", "dev", "--", "git", "rev-parse", "HEAD"]);
    assert_eq!(warned.stdout.trim(), head, "{warned}");
    assert!(
        warned.stderr.contains("warning: workspace dev:/root/repo"),
        "{warned}"
    );
    assert!(warned.stderr.contains(short(&head)), "{warned}");
    assert!(warned.stderr.contains(short(&second)), "{warned}");
    let synced = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--auto-prepare",
        "--",
        "git",
        "rev-parse",
        "HEAD",
    ]);
    assert_eq!(synced.stdout.trim(), second, "{synced}");
    // Only the commit after the recorded one travelled.
    assert!(
        synced
            .stderr
            .contains(&format!("of commits after {}", short(&head))),
        "{synced}"
    );
    let count = env.ok(&[
        "vm", "exec", "dev", "--", "git", "rev-list", "--count", "HEAD",
    ]);
    assert_eq!(count.stdout.trim(), "2", "{count}");
    env.ok(&["vm", "exec", "dev", "--", "git", "fsck", "--no-progress"]);
    let quiet = env.ok(&["vm", "exec", "dev", "--", "cat", "tracked.txt"]);
    assert_eq!(quiet.stdout, "tracked v2\n");
    assert!(!quiet.stderr.contains("warning"), "{quiet}");
    // The re-sync kept --include-untracked from the record.
    let untracked = env.ok(&["vm", "exec", "dev", "--", "cat", "untracked.txt"]);
    assert_eq!(untracked.stdout, "untracked\n");

    let third = guest_work_guard(&env, &repo);
    exit_codes_and_streams(&env);
    pseudo_terminal(&env);
    export_round_trip(&env, &repo, &third);
    edge_cases(&env);

    // Files written in the workspace survive stop and start, and so does
    // the record, also across a daemon restart.
    let last = workspace_of(&env, "dev");
    env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo kept > survivor.txt",
    ]);
    env.ok(&["vm", "stop", "dev"]);
    let stopped = env.run(&["vm", "exec", "dev", "--", "true"]);
    assert_eq!(stopped.code, 125, "{stopped}");
    assert!(stopped.stderr.contains("\"dev\" is stopped"), "{stopped}");
    let prepare = env.run(&["vm", "workspace", "prepare", "dev", "/nonexistent-repo"]);
    assert_ne!(prepare.code, 0, "{prepare}");
    // The VM's state is checked before the repository is read.
    assert!(
        prepare.stderr.contains("\"dev\" is stopped, not running"),
        "{prepare}"
    );
    env.ok(&["daemon", "stop"]);
    assert_eq!(workspace_of(&env, "dev"), last);
    env.ok(&["vm", "start", "dev"]);
    let kept = env.ok(&["vm", "exec", "dev", "--", "cat", "survivor.txt"]);
    assert_eq!(kept.stdout, "kept\n");
    env.ok(&["vm", "delete", "dev"]);
}

/// Checks that a prepare that would discard work done in the guest is
/// rejected and changes nothing, unless --force is passed. Returns the
/// host's new HEAD, which the workspace is at afterwards.
fn guest_work_guard(env: &UserEnv, repo: &Path) -> String {
    let repo_arg = repo.to_str().unwrap();
    env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo guest work > tracked.txt",
    ]);
    let rejected = env.run(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        repo_arg,
        "--include-untracked",
    ]);
    assert_eq!(rejected.code, 1, "{rejected}");
    assert!(
        rejected.stderr.contains(
            "workspace /root/repo in VM \"dev\" has work that is not exported: 1 changed file"
        ),
        "{rejected}"
    );
    assert!(
        rejected
            .stderr
            .contains("banger vm workspace export dev --since-prepare --output FILE"),
        "{rejected}"
    );
    assert!(rejected.stderr.contains("--force"), "{rejected}");
    let unchanged = env.ok(&["vm", "exec", "dev", "--", "cat", "tracked.txt"]);
    assert_eq!(unchanged.stdout, "guest work\n", "{unchanged}");

    // Another repository into the same directory is rejected the same way.
    let other = new_repo(env.root.path(), "other");
    std::fs::write(other.join("other.txt"), "other\n").unwrap();
    commit_all(&other, "other");
    let rejected = env.run(&["vm", "workspace", "prepare", "dev", other.to_str().unwrap()]);
    assert_eq!(rejected.code, 1, "{rejected}");
    assert!(rejected.stderr.contains("1 changed file"), "{rejected}");

    let dry = env.ok(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        repo_arg,
        "--include-untracked",
        "--dry-run",
    ]);
    assert!(
        dry.stderr
            .contains("dry run: the prepare would be rejected"),
        "{dry}"
    );
    assert!(dry.stderr.contains("1 changed file"), "{dry}");

    // A commit in the guest, then a host commit that makes the workspace
    // stale: --auto-prepare fails before it runs the command.
    env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "git",
        "commit",
        "-q",
        "-a",
        "-m",
        "guest commit",
    ]);
    std::fs::write(repo.join("tracked.txt"), "tracked v3\n").unwrap();
    let third = commit_all(repo, "third");
    let rejected = env.run(&[
        "vm",
        "exec",
        "dev",
        "--auto-prepare",
        "--",
        "touch",
        "/root/ran",
    ]);
    assert_eq!(rejected.code, 125, "{rejected}");
    assert!(
        rejected
            .stderr
            .contains("1 changed file, 1 commit made in the guest"),
        "{rejected}"
    );
    let ran = env.run(&["vm", "exec", "dev", "--", "test", "-e", "/root/ran"]);
    assert_eq!(ran.code, 1, "the rejected command ran:\n{ran}");
    let log = env.ok(&["vm", "exec", "dev", "--", "git", "log", "-1", "--format=%s"]);
    assert_eq!(log.stdout, "guest commit\n", "{log}");

    let usage = env.run(&["vm", "exec", "dev", "--force", "--", "true"]);
    assert_eq!(usage.code, 2, "{usage}");
    assert!(usage.stderr.contains("--auto-prepare"), "{usage}");

    // --force discards the guest's work and copies the host again.
    let forced = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--auto-prepare",
        "--force",
        "--",
        "git",
        "log",
        "--format=%H %s",
    ]);
    assert!(
        forced.stdout.starts_with(&format!("{third} third\n")),
        "{forced}"
    );
    assert!(!forced.stdout.contains("guest commit"), "{forced}");
    let replaced = env.ok(&["vm", "exec", "dev", "--", "cat", "tracked.txt"]);
    assert_eq!(replaced.stdout, "tracked v3\n");
    let status = env.ok(&["vm", "exec", "dev", "--", "git", "status", "--porcelain"]);
    assert_eq!(status.stdout, "", "{status}");
    third
}

fn exit_codes_and_streams(env: &UserEnv) {
    for code in [0, 1, 7] {
        let run = env.run(&[
            "vm",
            "exec",
            "dev",
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(run.code, code, "{run}");
    }
    let missing = env.run(&["vm", "exec", "dev", "--", "no-such-command"]);
    assert_eq!(missing.code, 127, "{missing}");
    assert!(missing.stderr.contains("no-such-command"), "{missing}");
    for (signal, code) in [("KILL", 137), ("TERM", 143)] {
        let run = env.run(&[
            "vm",
            "exec",
            "dev",
            "--",
            "sh",
            "-c",
            &format!("kill -{signal} $$"),
        ]);
        assert_eq!(run.code, code, "{run}");
    }
    // SIGTERM to the CLI reaches a command that never reads the endless
    // stdin piped to it: the signal does not wait behind that input.
    let mut child = env
        .command(&["vm", "exec", "dev", "--", "sleep", "600"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(5));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("vm exec did not end within 60 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(143), "{status:?}");

    let split = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; echo out2",
    ]);
    assert_eq!(split.stdout, "out\nout2\n", "{split}");
    assert!(split.stderr.ends_with("err\n"), "{split}");

    // Several megabytes of binary output arrive intact.
    let made = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "head -c 6000000 /dev/urandom > /root/blob && sha256sum < /root/blob",
    ]);
    let guest_sum = made.stdout.split_whitespace().next().unwrap().to_string();
    let output = env
        .command(&["vm", "exec", "dev", "--", "cat", "/root/blob"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout.len(), 6_000_000);
    assert_eq!(host_sha256(&output.stdout), guest_sum);

    // And so does binary standard input, larger than the relay's stdin
    // window, so it flows only as the agent acknowledges it.
    let input: Vec<u8> = (0..12_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut child = env
        .command(&["vm", "exec", "dev", "--", "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&data).unwrap();
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with(&host_sha256(&input)), "{text}");
    env.ok(&["vm", "exec", "dev", "--", "rm", "/root/blob"]);
}

fn pseudo_terminal(env: &UserEnv) {
    // -t without local terminals: a pty of the fallback size.
    let forced = env.ok(&[
        "vm",
        "exec",
        "-t",
        "dev",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && stty size",
    ]);
    assert_eq!(forced.stdout, "24 80\r\n", "{forced}");
    let plain = env.run(&["vm", "exec", "-T", "dev", "--", "test", "-t", "1"]);
    assert_eq!(plain.code, 1, "{plain}");

    // Terminals on both ends (script(1) provides one): a pty by default,
    // and the local terminal's settings are restored afterwards.
    let banger = env.bin_dir.join("banger");
    let inner = format!(
        "stty -g > before; '{}' vm exec dev -- sh -c 'tty; exit 3'; echo \"code=$?\"; stty -g > after; cmp -s before after && echo restored",
        banger.display()
    );
    let dir = env.root.path().join("tty");
    std::fs::create_dir_all(&dir).unwrap();
    let user = env.command(&[]);
    let output = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .current_dir(&dir)
        .env_clear()
        .envs(user.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("code=3"), "{text}");
    assert!(text.contains("restored"), "{text}");
}

fn export_round_trip(env: &UserEnv, repo: &Path, base: &str) {
    env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo guest edit > tracked.txt; rm link; echo new > 'new file.txt'; \
         head -c 3000 /dev/urandom > blob.bin; git add blob.bin",
    ]);
    let index_before = env.ok(&["vm", "exec", "dev", "--", "git", "ls-files", "--stage"]);
    let patch = env.root.path().join("work.diff");
    let exported = env.ok(&[
        "vm",
        "workspace",
        "export",
        "dev",
        "--output",
        patch.to_str().unwrap(),
    ]);
    assert!(
        exported
            .stderr
            .contains(&format!("against {}", short(base))),
        "{exported}"
    );
    let index_after = env.ok(&["vm", "exec", "dev", "--", "git", "ls-files", "--stage"]);
    assert_eq!(
        index_before.stdout, index_after.stdout,
        "export changed the index"
    );
    let to_stdout = env
        .command(&["vm", "workspace", "export", "dev"])
        .output()
        .unwrap();
    assert_eq!(to_stdout.stdout, std::fs::read(&patch).unwrap());

    let clones = env.root.path().join("clones");
    std::fs::create_dir_all(&clones).unwrap();
    git(&clones, &["clone", "-q", repo.to_str().unwrap(), "clean"]);
    let clean = clones.join("clean");
    git(&clean, &["checkout", "-q", base]);
    git(&clean, &["apply", patch.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(clean.join("tracked.txt")).unwrap(),
        "guest edit\n"
    );
    assert!(!clean.join("link").exists());
    assert_eq!(
        std::fs::read_to_string(clean.join("new file.txt")).unwrap(),
        "new\n"
    );
    let blob = env
        .command(&["vm", "exec", "dev", "--", "cat", "blob.bin"])
        .output()
        .unwrap();
    assert_eq!(std::fs::read(clean.join("blob.bin")).unwrap(), blob.stdout);
    // untracked.txt was copied into the guest, so the diff has it too.
    assert_eq!(
        std::fs::read_to_string(clean.join("untracked.txt")).unwrap(),
        "untracked\n"
    );

    // Against the tree as prepared, only the guest's work remains, and it
    // applies to the host checkout that still has untracked.txt.
    let since = env.root.path().join("since.diff");
    let exported = env.ok(&[
        "vm",
        "workspace",
        "export",
        "dev",
        "--since-prepare",
        "--output",
        since.to_str().unwrap(),
    ]);
    assert!(
        exported.stderr.contains("against the tree as prepared"),
        "{exported}"
    );
    let diff = String::from_utf8_lossy(&std::fs::read(&since).unwrap()).into_owned();
    assert!(!diff.contains("untracked.txt"), "{diff}");
    git(repo, &["apply", "--check", since.to_str().unwrap()]);

    let bad = env.run(&[
        "vm",
        "workspace",
        "export",
        "dev",
        "--base-commit",
        "nosuch",
    ]);
    assert_ne!(bad.code, 0, "{bad}");
    assert!(
        bad.stderr
            .contains("pass a commit that exists in the guest workspace"),
        "{bad}"
    );
}

fn edge_cases(env: &UserEnv) {
    let parent = env.root.path().join("edge");
    std::fs::create_dir_all(&parent).unwrap();

    // An empty repository, into a guest path with a space.
    let empty = new_repo(&parent, "empty");
    let run = env.ok(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        empty.to_str().unwrap(),
        "--guest-path",
        "/root/empty repo",
    ]);
    assert!(run.stderr.contains("no commit yet"), "{run}");
    let branch = env.ok(&[
        "vm",
        "exec",
        "dev",
        "--",
        "git",
        "symbolic-ref",
        "--short",
        "HEAD",
    ]);
    assert_eq!(branch.stdout.trim(), "main");
    let pwd = env.ok(&["vm", "exec", "dev", "--", "pwd"]);
    assert_eq!(pwd.stdout, "/root/empty repo\n");
    let ps = env.ok(&["ps"]);
    assert!(ps.stdout.contains("~/edge/empty@empty"), "{ps}");

    // A detached HEAD.
    let detached = new_repo(&parent, "detached");
    std::fs::write(detached.join("a"), "a\n").unwrap();
    let first = commit_all(&detached, "one");
    std::fs::write(detached.join("a"), "b\n").unwrap();
    commit_all(&detached, "two");
    git(&detached, &["checkout", "-q", "--detach", &first]);
    env.ok(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        detached.to_str().unwrap(),
        "--guest-path",
        "/root/detached",
    ]);
    let head = env.ok(&["vm", "exec", "dev", "--", "git", "rev-parse", "HEAD"]);
    assert_eq!(head.stdout.trim(), first);
    let symbolic = env.run(&[
        "vm",
        "exec",
        "dev",
        "--",
        "git",
        "symbolic-ref",
        "-q",
        "HEAD",
    ]);
    assert_eq!(symbolic.code, 1, "{symbolic}");
    let status = env.ok(&["vm", "exec", "dev", "--", "git", "status", "--porcelain"]);
    assert_eq!(status.stdout, "");
    let before = workspace_of(env, "dev");

    // Rejected inputs leave the record as it was.
    let bare = parent.join("bare.git");
    git(&parent, &["init", "-q", "--bare", "bare.git"]);
    let run = env.run(&["vm", "workspace", "prepare", "dev", bare.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("is a bare repository"), "{run}");

    let outer = new_repo(&parent, "outer");
    git(
        &outer,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            detached.to_str().unwrap(),
            "lib",
        ],
    );
    let run = env.run(&["vm", "workspace", "prepare", "dev", outer.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("has submodules"), "{run}");

    let plain = parent.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let run = env.run(&["vm", "workspace", "prepare", "dev", plain.to_str().unwrap()]);
    assert!(run.stderr.contains("is not in a git repository"), "{run}");

    env.ok(&[
        "vm",
        "exec",
        "dev",
        "--guest-path",
        "/root",
        "--",
        "sh",
        "-c",
        "mkdir -p /root/mine && echo mine > /root/mine/notes.txt",
    ]);
    let run = env.run(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        detached.to_str().unwrap(),
        "--guest-path",
        "/root/mine",
    ]);
    assert!(
        run.stderr
            .contains("/root/mine in VM \"dev\" exists and is not a banger workspace"),
        "{run}"
    );
    assert!(run.stderr.contains("(1 entry)"), "{run}");
    let mine = env.ok(&["vm", "exec", "dev", "--", "cat", "/root/mine/notes.txt"]);
    assert_eq!(mine.stdout, "mine\n");
    let forced = env.run(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        detached.to_str().unwrap(),
        "--guest-path",
        "/root/mine",
        "--force",
    ]);
    assert_ne!(forced.code, 0, "{forced}");
    assert!(
        forced.stderr.contains("is not a banger workspace"),
        "{forced}"
    );
    let mine = env.ok(&["vm", "exec", "dev", "--", "cat", "/root/mine/notes.txt"]);
    assert_eq!(mine.stdout, "mine\n");

    let run = env.run(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        detached.to_str().unwrap(),
        "--guest-path",
        "relative/path",
    ]);
    assert!(
        run.stderr.contains("invalid guest path \"relative/path\""),
        "{run}"
    );
    assert_eq!(workspace_of(env, "dev"), before);
}

#[test]
fn vm_run_path_and_full_disk() {
    require_e2e!();
    let env = UserEnv::shared();
    let (repo, head) = project_repo(env.root.path());
    let repo_arg = repo.to_str().unwrap();

    // Rejected combinations boot nothing.
    let run = env.run(&["vm", "run", "-d", "--rm", repo_arg]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("cannot be used with"), "{run}");
    let run = env.run(&["vm", "run", "-d", repo_arg, "--", "true"]);
    assert!(run.stderr.contains("cannot be used with"), "{run}");
    let run = env.run(&["vm", "run", "/nonexistent/repo", "--", "true"]);
    assert_eq!(run.code, 125, "{run}");
    assert!(run.stderr.contains("/nonexistent/repo not found"), "{run}");
    assert!(env.vms_json().is_empty());

    let run = env.ok(&[
        "vm",
        "run",
        "--name",
        "tiny",
        "--disk-size",
        "64M",
        repo_arg,
        "--",
        "git",
        "rev-parse",
        "HEAD",
    ]);
    assert_eq!(run.stdout.trim(), head, "{run}");
    let pwd = env.ok(&["vm", "exec", "tiny", "--", "pwd"]);
    assert_eq!(pwd.stdout, "/root/repo\n");
    let listed = env.ok(&["vm", "exec", "tiny", "--", "ls"]);
    assert!(!listed.stdout.contains("untracked.txt"), "{listed}");
    let run = env.run(&["vm", "run", "--include-untracked", "--", "true"]);
    assert_eq!(run.code, 2, "--include-untracked without PATH: {run}");
    let run = env.ok(&[
        "vm",
        "run",
        "--rm",
        "--include-untracked",
        repo_arg,
        "--",
        "cat",
        "untracked.txt",
    ]);
    assert_eq!(run.stdout, "untracked\n", "{run}");

    // A file larger than the disk: rejected before anything is written.
    let big = new_repo(env.root.path(), "big");
    let file = std::fs::File::create(big.join("zeros.bin")).unwrap();
    file.set_len(80 << 20).unwrap();
    drop(file);
    commit_all(&big, "big file");
    let run = env.run(&["vm", "workspace", "prepare", "tiny", big.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("not enough free space in VM \"tiny\""),
        "{run}"
    );
    assert!(run.stderr.contains("--disk-size"), "{run}");
    assert_nothing_left(&env, &head);

    // More files than the disk has inodes: the copy fails midway and is
    // cleaned up.
    let many = new_repo(env.root.path(), "many");
    for i in 0..17_000 {
        std::fs::File::create(many.join(format!("f{i:05}"))).unwrap();
    }
    commit_all(&many, "many files");
    let run = env.run(&[
        "vm",
        "workspace",
        "prepare",
        "tiny",
        many.to_str().unwrap(),
        "--guest-path",
        "/root/many",
    ]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("ran out of disk space"), "{run}");
    assert!(run.stderr.contains("nothing was recorded"), "{run}");
    assert_nothing_left(&env, &head);

    // The disk is usable again afterwards.
    std::fs::write(repo.join("tracked.txt"), "after the failures\n").unwrap();
    let newer = commit_all(&repo, "after");
    env.ok(&["vm", "workspace", "prepare", "tiny", repo_arg]);
    let guest = env.ok(&["vm", "exec", "tiny", "--", "git", "rev-parse", "HEAD"]);
    assert_eq!(guest.stdout.trim(), newer);
    env.ok(&["vm", "delete", "tiny"]);
}

/// The failed prepare left no temporary directory, and the workspace is
/// still the one at `head`.
fn assert_nothing_left(env: &UserEnv, head: &str) {
    let listing = env.ok(&[
        "vm",
        "exec",
        "tiny",
        "--guest-path",
        "/root",
        "--",
        "ls",
        "-A",
    ]);
    // `.ssh` contains the authorized key that banger writes at create.
    let entries: Vec<_> = lines(&listing.stdout)
        .into_iter()
        .filter(|entry| *entry != ".ssh")
        .collect();
    assert_eq!(entries, ["lost+found", "repo"], "{listing}");
    assert_eq!(workspace_of(env, "tiny")["head"], head);
    let guest = env.ok(&["vm", "exec", "tiny", "--", "git", "rev-parse", "HEAD"]);
    assert_eq!(guest.stdout.trim(), head);
}

fn host_sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, bytes).unwrap();
    let output = Command::new("sha256sum").arg(&path).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
