//! The guest scripts run on this machine with its sh, tar and git, fed
//! with real archives of real repositories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::archive::{ChunkWriter, Manifest, write_archive};
use super::git::HostRepo;
use super::guard::{GuestWork, parse_report};
use super::script::{CHECK, EXPORT, PREPARE, PREPARED_REF, sh_argv};
use super::testing::{commit_all, git_in, new_repo};

struct ScriptRun {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_script(argv: &[String], stdin: &[u8], lock: &Path) -> ScriptRun {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("BANGER_PREPARE_LOCK", lock)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The script may stop reading early; a broken pipe is part of the test.
    let _ = input.write_all(stdin);
    drop(input);
    let output = child.wait_with_output().unwrap();
    ScriptRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The archive and prepare arguments for `repo_dir`, as `prepare` makes them.
fn archive_of(repo_dir: &Path, scratch: &Path, include_untracked: bool) -> (Vec<u8>, HostRepo) {
    archive_since(repo_dir, scratch, include_untracked, None)
}

/// Like [`archive_of`], with only the history after `base` in the bundle,
/// and no bundle when HEAD is `base`.
fn archive_since(
    repo_dir: &Path,
    scratch: &Path,
    include_untracked: bool,
    base: Option<&str>,
) -> (Vec<u8>, HostRepo) {
    let repo = HostRepo::open(repo_dir).unwrap();
    let manifest =
        Manifest::build(&repo.root, repo.list_files(include_untracked).unwrap()).unwrap();
    let bundle = repo
        .head
        .as_deref()
        .filter(|head| Some(*head) != base)
        .map(|_| {
            let path = scratch.join("head.bundle");
            repo.create_bundle(&path, base).unwrap();
            path
        });
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let root = repo.root.clone();
    let writer = std::thread::spawn(move || {
        write_archive(
            &root,
            &manifest,
            bundle.as_deref(),
            ChunkWriter::new(sender),
        )
    });
    let mut bytes = Vec::new();
    while let Some(chunk) = receiver.blocking_recv() {
        bytes.extend(chunk);
    }
    writer.join().unwrap().unwrap();
    (bytes, repo)
}

fn prepare_argv(target: &Path, need_kib: u64, repo: &HostRepo) -> Vec<String> {
    prepare_argv_since(target, need_kib, repo, None)
}

fn prepare_argv_since(
    target: &Path,
    need_kib: u64,
    repo: &HostRepo,
    base: Option<&str>,
) -> Vec<String> {
    prepare_argv_full(target, need_kib, repo, base, false)
}

fn prepare_argv_forced(target: &Path, repo: &HostRepo) -> Vec<String> {
    prepare_argv_full(target, 1, repo, None, true)
}

fn prepare_argv_full(
    target: &Path,
    need_kib: u64,
    repo: &HostRepo,
    base: Option<&str>,
    force: bool,
) -> Vec<String> {
    sh_argv(
        PREPARE,
        "banger-prepare",
        [
            target.display().to_string(),
            need_kib.to_string(),
            repo.head.clone().unwrap_or_default(),
            repo.branch.clone().unwrap_or_default(),
            repo.user_name.clone().unwrap_or_default(),
            repo.user_email.clone().unwrap_or_default(),
            base.unwrap_or_default().to_string(),
            if force { "1" } else { "" }.to_string(),
        ],
    )
}

fn leftovers(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".banger-prepare")
        })
        .collect()
}

#[test]
fn prepare_rebuilds_repo_at_same_head_and_branch() {
    let host = new_repo();
    std::fs::write(host.path().join(".gitignore"), "*.log\n").unwrap();
    std::fs::write(host.path().join("tracked.txt"), "v1\n").unwrap();
    std::fs::create_dir(host.path().join("dir with space")).unwrap();
    std::fs::write(host.path().join("dir with space/ünï.txt"), "u\n").unwrap();
    std::os::unix::fs::symlink("tracked.txt", host.path().join("link")).unwrap();
    commit_all(host.path(), "first");
    std::fs::write(host.path().join("tracked.txt"), "v2 uncommitted\n").unwrap();
    std::fs::write(host.path().join("untracked.txt"), "u\n").unwrap();
    std::fs::write(host.path().join("debug.log"), "ignored\n").unwrap();
    git_in(host.path(), &["checkout", "-q", "-b", "feature/x"]);

    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let target = guest.path().join("repo");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    let run = run_script(
        &prepare_argv(&target, 1, &repo),
        &archive,
        &scratch.path().join("lock"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let head = repo.head.clone().unwrap();
    assert_eq!(
        run.stdout.trim(),
        format!("banger-workspace-prepared {head}")
    );

    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git_in(&target, &["symbolic-ref", "--short", "HEAD"]),
        "feature/x"
    );
    assert_eq!(
        git_in(&target, &["config", "user.email"]),
        "test@example.com"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("tracked.txt")).unwrap(),
        "v2 uncommitted\n"
    );
    assert!(target.join("dir with space/ünï.txt").is_file());
    assert_eq!(
        std::fs::read_link(target.join("link")).unwrap(),
        Path::new("tracked.txt")
    );
    assert!(!target.join("untracked.txt").exists());
    assert!(!target.join("debug.log").exists());
    // The guest sees the host's uncommitted change as its own.
    assert_eq!(git_in(&target, &["status", "--porcelain"]), "M tracked.txt");
    assert!(leftovers(guest.path()).is_empty());
}

#[test]
fn repeat_prepare_sends_only_new_history() {
    let host = new_repo();
    std::fs::write(host.path().join("a.txt"), "first\n").unwrap();
    let first = commit_all(host.path(), "first");
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let target = guest.path().join("repo");
    let lock = scratch.path().join("lock");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    let run = run_script(&prepare_argv(&target, 1, &repo), &archive, &lock);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Two more commits travel as a bundle that needs the first one.
    std::fs::write(host.path().join("b.txt"), "second\n").unwrap();
    commit_all(host.path(), "second");
    std::fs::write(host.path().join("a.txt"), "third\n").unwrap();
    let third = commit_all(host.path(), "third");
    let (archive, repo) = archive_since(host.path(), scratch.path(), false, Some(&first));
    let full_bundle = scratch.path().join("full.bundle");
    repo.create_bundle(&full_bundle, None).unwrap();
    let partial = std::fs::metadata(scratch.path().join("head.bundle"))
        .unwrap()
        .len();
    let full = std::fs::metadata(&full_bundle).unwrap().len();
    assert!(partial < full, "{partial} bytes of {full}");
    let run = run_script(
        &prepare_argv_since(&target, 1, &repo, Some(&first)),
        &archive,
        &lock,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), third);
    assert_eq!(git_in(&target, &["rev-list", "--count", "HEAD"]), "3");
    git_in(&target, &["fsck", "--no-progress"]);
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).unwrap(),
        "third\n"
    );
    assert!(leftovers(guest.path()).is_empty());

    // HEAD at the base: no bundle at all.
    let (archive, repo) = archive_since(host.path(), scratch.path(), false, Some(&third));
    let run = run_script(
        &prepare_argv_since(&target, 1, &repo, Some(&third)),
        &archive,
        &lock,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), third);
    git_in(&target, &["fsck", "--no-progress"]);
}

#[test]
fn prepare_again_keeps_ignored_guest_files() {
    let host = new_repo();
    std::fs::write(host.path().join(".gitignore"), "target/\n*.log\n").unwrap();
    std::fs::write(host.path().join("a.txt"), "first\n").unwrap();
    let first = commit_all(host.path(), "first");
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let target = guest.path().join("repo");
    let lock = scratch.path().join("lock");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    let run = run_script(&prepare_argv(&target, 1, &repo), &archive, &lock);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Build output made in the guest, ignored by the repository.
    std::fs::create_dir_all(target.join("target/debug/deps")).unwrap();
    std::fs::write(target.join("target/debug/deps/lib.rlib"), "cache").unwrap();
    std::fs::write(target.join("sp ace.log"), "log").unwrap();

    std::fs::write(host.path().join("a.txt"), "second\n").unwrap();
    let second = commit_all(host.path(), "second");
    let (archive, repo) = archive_since(host.path(), scratch.path(), false, Some(&first));
    let run = run_script(
        &prepare_argv_since(&target, 1, &repo, Some(&first)),
        &archive,
        &lock,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), second);
    assert_eq!(
        std::fs::read_to_string(target.join("target/debug/deps/lib.rlib")).unwrap(),
        "cache"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("sp ace.log")).unwrap(),
        "log"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).unwrap(),
        "second\n"
    );
    let status = git_in(&target, &["status", "--porcelain"]);
    assert_eq!(status, "", "the kept files stay ignored");
    assert!(leftovers(guest.path()).is_empty());
}

#[test]
fn prepare_reports_missing_base_and_keeps_workspace() {
    let host = new_repo();
    std::fs::write(host.path().join("a.txt"), "first\n").unwrap();
    commit_all(host.path(), "first");
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let target = guest.path().join("repo");
    let lock = scratch.path().join("lock");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    assert_eq!(
        run_script(&prepare_argv(&target, 1, &repo), &archive, &lock).code,
        0
    );

    // A base the guest copy never had, e.g. from another repository.
    let other = new_repo();
    std::fs::write(other.path().join("x.txt"), "x\n").unwrap();
    let foreign = commit_all(other.path(), "elsewhere");
    let run = run_script(
        &prepare_argv_since(&target, 1, &repo, Some(&foreign)),
        &archive,
        &lock,
    );
    assert_eq!(run.code, 9, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("lacks commit {foreign}")),
        "{}",
        run.stderr
    );
    assert_eq!(
        git_in(&target, &["rev-parse", "HEAD"]),
        repo.head.clone().unwrap()
    );
    assert!(leftovers(guest.path()).is_empty());
}

#[test]
fn failed_prepare_leaves_earlier_workspace_and_no_temp_dir() {
    let host = new_repo();
    std::fs::write(host.path().join("a.txt"), "first\n").unwrap();
    let first_head = commit_all(host.path(), "first");
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let lock = scratch.path().join("lock");
    let target = guest.path().join("repo");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    assert_eq!(
        run_script(&prepare_argv(&target, 1, &repo), &archive, &lock).code,
        0
    );

    std::fs::write(host.path().join("b.txt"), vec![7u8; 200_000]).unwrap();
    commit_all(host.path(), "second");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    // A stream cut in the middle, as when the host side dies.
    let cut = &archive[..archive.len() / 2];
    let run = run_script(&prepare_argv(&target, 1, &repo), cut, &lock);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        leftovers(guest.path()).is_empty(),
        "{:?}",
        leftovers(guest.path())
    );
    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), first_head);

    // Too little space is found before anything is written.
    let run = run_script(
        &prepare_argv(&target, u64::MAX / 2048, &repo),
        &archive,
        &lock,
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("not enough space"), "{}", run.stderr);
    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), first_head);

    // The complete archive replaces the earlier workspace.
    let run = run_script(&prepare_argv(&target, 1, &repo), &archive, &lock);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(git_in(&target, &["rev-parse", "HEAD"]), repo.head.unwrap());
    assert!(leftovers(guest.path()).is_empty());
}

#[test]
fn prepare_rejects_foreign_directory_and_handles_empty_repo() {
    let host = new_repo();
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let lock = scratch.path().join("lock");
    let foreign = guest.path().join("mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep"), "x").unwrap();
    let (archive, repo) = archive_of(host.path(), scratch.path(), true);
    let run = run_script(&prepare_argv(&foreign, 1, &repo), &archive, &lock);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(
        parse_report(run.stdout.as_bytes()),
        Some(GuestWork::Foreign { entries: 1 })
    );
    assert!(foreign.join("keep").exists());
    assert!(leftovers(guest.path()).is_empty());

    // An empty directory contains nothing to lose.
    let empty_dir = guest.path().join("empty dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let run = run_script(&prepare_argv(&empty_dir, 1, &repo), &archive, &lock);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(empty_dir.join(".git/banger-workspace").is_file());

    // --force does not replace a directory banger did not make.
    let run = run_script(&prepare_argv_forced(&foreign, &repo), &archive, &lock);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(
        parse_report(run.stdout.as_bytes()),
        Some(GuestWork::Foreign { entries: 1 })
    );
    assert!(foreign.join("keep").exists());
    assert!(leftovers(guest.path()).is_empty());

    let target = guest.path().join("empty");
    let run = run_script(&prepare_argv(&target, 1, &repo), &archive, &lock);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "banger-workspace-prepared none");
    assert_eq!(
        git_in(&target, &["symbolic-ref", "--short", "HEAD"]),
        "main"
    );
}

#[test]
fn export_round_trips_onto_a_clone() {
    let host = new_repo();
    std::fs::write(host.path().join("keep.txt"), "keep\n").unwrap();
    std::fs::write(host.path().join("edit.txt"), "before\n").unwrap();
    std::fs::write(host.path().join("remove.txt"), "gone soon\n").unwrap();
    let base = commit_all(host.path(), "base");
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let target = guest.path().join("repo");
    let (archive, repo) = archive_of(host.path(), scratch.path(), false);
    let run = run_script(
        &prepare_argv(&target, 1, &repo),
        &archive,
        &scratch.path().join("lock"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Guest-side work: an edit, a removal, a new text file, a binary file.
    std::fs::write(target.join("edit.txt"), "after\n").unwrap();
    std::fs::remove_file(target.join("remove.txt")).unwrap();
    std::fs::write(target.join("new file.txt"), "new\n").unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    std::fs::write(target.join("blob.bin"), &binary).unwrap();
    let index_before = std::fs::read(target.join(".git/index")).unwrap();

    let argv = sh_argv(
        EXPORT,
        "banger-export",
        [target.display().to_string(), base.clone()],
    );
    let output = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(target.join(".git/index")).unwrap(),
        index_before
    );

    let clone = tempfile::tempdir().unwrap();
    git_in(
        clone.path(),
        &["clone", "-q", host.path().to_str().unwrap(), "c"],
    );
    let clone_dir = clone.path().join("c");
    let patch = clone.path().join("work.diff");
    std::fs::write(&patch, &output.stdout).unwrap();
    git_in(&clone_dir, &["apply", patch.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("edit.txt")).unwrap(),
        "after\n"
    );
    assert!(!clone_dir.join("remove.txt").exists());
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("new file.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(std::fs::read(clone_dir.join("blob.bin")).unwrap(), binary);
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("keep.txt")).unwrap(),
        "keep\n"
    );
}

/// Runs the exec wrapper in `dir` with a PATH that has no mise.
fn run_wrapper(dir: &Path, command: &[&str]) -> ScriptRun {
    let mut args = vec![dir.display().to_string()];
    args.extend(command.iter().map(|arg| arg.to_string()));
    let argv = sh_argv(super::script::EXEC_WRAPPER, "banger-exec", args);
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ScriptRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn exec_wrapper_reports_missing_programs_like_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run_wrapper(dir.path(), &["banger-no-such-tool", "x"]);
    assert_eq!(missing.code, 127);
    assert_eq!(
        missing.stderr,
        "banger-agent: banger-no-such-tool: command not found\n"
    );

    let ran = run_wrapper(dir.path(), &["sh", "-c", "pwd; exit 3"]);
    assert_eq!(ran.code, 3);
    assert_eq!(ran.stdout.trim(), dir.path().display().to_string());

    // A path distinguishes a file without execute permission from a missing one.
    std::fs::write(dir.path().join("script"), "#!/bin/sh\n").unwrap();
    let denied = run_wrapper(dir.path(), &["./script"]);
    assert_eq!(denied.code, 126, "{}", denied.stderr);
    assert_eq!(
        denied.stderr,
        "banger-agent: ./script: permission denied (the file is not executable)\n"
    );
    let missing = run_wrapper(dir.path(), &["./no-such-script"]);
    assert_eq!(missing.code, 127, "{}", missing.stderr);
    assert_eq!(
        missing.stderr,
        "banger-agent: ./no-such-script: no such file\n"
    );
    let directory = run_wrapper(dir.path(), &["/"]);
    assert_eq!(directory.code, 126, "{}", directory.stderr);
    assert_eq!(directory.stderr, "banger-agent: /: is a directory\n");

    let no_dir = run_wrapper(&dir.path().join("gone"), &["true"]);
    assert_eq!(no_dir.code, 126);
    assert!(
        no_dir.stderr.contains("does not exist in the guest"),
        "{}",
        no_dir.stderr
    );
    assert!(no_dir.stderr.contains("--guest-path"), "{}", no_dir.stderr);
}

#[test]
fn export_since_prepare_applies_to_the_host_checkout() {
    let host = new_repo();
    std::fs::write(host.path().join("edit.txt"), "committed\n").unwrap();
    std::fs::write(host.path().join("other.txt"), "other\n").unwrap();
    commit_all(host.path(), "base");
    // The host's uncommitted and untracked work travels with the prepare.
    std::fs::write(host.path().join("edit.txt"), "host change\n").unwrap();
    std::fs::write(host.path().join("untracked.txt"), "host only\n").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let target = guest.path().join("repo");
    let (archive, repo) = archive_of(host.path(), scratch.path(), true);
    let run = run_script(
        &prepare_argv(&target, 1, &repo),
        &archive,
        &scratch.path().join("lock"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    std::fs::write(target.join("other.txt"), "guest change\n").unwrap();
    let argv = sh_argv(
        EXPORT,
        "banger-export",
        [target.display().to_string(), PREPARED_REF.to_string()],
    );
    let output = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let diff = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(diff.contains("guest change"), "{diff}");
    assert!(!diff.contains("untracked.txt"), "{diff}");
    assert!(!diff.contains("host change"), "{diff}");

    // The diff applies to the host checkout as it still is.
    let patch = scratch.path().join("guest.diff");
    std::fs::write(&patch, &output.stdout).unwrap();
    git_in(host.path(), &["apply", patch.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("other.txt")).unwrap(),
        "guest change\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("edit.txt")).unwrap(),
        "host change\n"
    );
}

#[test]
fn prepare_script_names_the_prepared_ref() {
    assert!(PREPARE.contains(&format!("PREPARED_REF={PREPARED_REF}\n")));
}

/// A host repository with one commit, prepared into `guest/repo`.
struct Prepared {
    host: tempfile::TempDir,
    scratch: tempfile::TempDir,
    guest: tempfile::TempDir,
    target: PathBuf,
    lock: PathBuf,
    head: String,
}

impl Prepared {
    fn new() -> Prepared {
        let host = new_repo();
        std::fs::write(host.path().join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(host.path().join("a.txt"), "first\n").unwrap();
        std::fs::write(host.path().join("b.txt"), "b\n").unwrap();
        let head = commit_all(host.path(), "first");
        let scratch = tempfile::tempdir().unwrap();
        let guest = tempfile::tempdir().unwrap();
        let target = guest.path().join("repo");
        let lock = scratch.path().join("lock");
        let prepared = Prepared {
            host,
            scratch,
            guest,
            target,
            lock,
            head,
        };
        let run = prepared.prepare(false);
        assert_eq!(run.code, 0, "{}", run.stderr);
        prepared
    }

    fn prepare(&self, force: bool) -> ScriptRun {
        let (archive, repo) = archive_of(self.host.path(), self.scratch.path(), true);
        let argv = prepare_argv_full(&self.target, 1, &repo, None, force);
        run_script(&argv, &archive, &self.lock)
    }

    fn check(&self) -> ScriptRun {
        let argv = sh_argv(CHECK, "banger-check", [self.target.display().to_string()]);
        run_script(&argv, b"", &self.lock)
    }
}

fn changes(files: u64, commits: u64) -> Option<GuestWork> {
    Some(GuestWork::Changes { files, commits })
}

#[test]
fn prepare_rejects_discarding_guest_edits() {
    let prepared = Prepared::new();
    let target = &prepared.target;
    std::fs::write(target.join("a.txt"), "guest edit\n").unwrap();
    std::fs::write(target.join("new.txt"), "untracked\n").unwrap();
    std::fs::write(target.join("build.log"), "ignored\n").unwrap();
    let index_before = std::fs::read(target.join(".git/index")).unwrap();
    let objects_before = git_in(target, &["count-objects"]);

    let run = prepared.prepare(false);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(parse_report(run.stdout.as_bytes()), changes(2, 0));
    assert!(
        run.stderr
            .contains("contains work that replacing it would discard"),
        "{}",
        run.stderr
    );
    // The rejected prepare changed nothing: files, index and object store.
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).unwrap(),
        "guest edit\n"
    );
    assert!(target.join("new.txt").is_file());
    assert_eq!(
        std::fs::read(target.join(".git/index")).unwrap(),
        index_before
    );
    assert_eq!(git_in(target, &["count-objects"]), objects_before);
    assert!(leftovers(prepared.guest.path()).is_empty());

    // The dry-run check reports the same and changes nothing either.
    let check = prepared.check();
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert_eq!(parse_report(check.stdout.as_bytes()), changes(2, 0));
    assert_eq!(git_in(target, &["count-objects"]), objects_before);
    assert!(leftovers(prepared.guest.path()).is_empty());

    let run = prepared.prepare(true);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).unwrap(),
        "first\n"
    );
    assert!(!target.join("new.txt").exists());
}

#[test]
fn prepare_rejects_discarding_guest_commits() {
    let prepared = Prepared::new();
    let target = &prepared.target;
    std::fs::write(target.join("a.txt"), "guest commit\n").unwrap();
    commit_all(target, "in the guest");

    let run = prepared.prepare(false);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(parse_report(run.stdout.as_bytes()), changes(1, 1));

    // A commit on another branch counts too, and a work tree that matches
    // the prepared one again leaves only the commits.
    git_in(target, &["checkout", "-q", "-b", "side"]);
    std::fs::write(target.join("b.txt"), "side\n").unwrap();
    commit_all(target, "side");
    git_in(target, &["checkout", "-q", "main"]);
    git_in(target, &["reset", "-q", "--hard", &prepared.head]);
    let run = prepared.prepare(false);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(parse_report(run.stdout.as_bytes()), changes(0, 2));
    assert_eq!(git_in(target, &["rev-parse", "side"]).len(), 40);
}

#[test]
fn prepare_over_untouched_copy_of_dirty_host() {
    let prepared = Prepared::new();
    // The host's uncommitted and untracked files travel with the prepare,
    // so the guest shows them as changes that are not its own.
    std::fs::write(prepared.host.path().join("a.txt"), "host edit\n").unwrap();
    std::fs::write(prepared.host.path().join("host-new.txt"), "new\n").unwrap();
    let run = prepared.prepare(false);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_ne!(git_in(&prepared.target, &["status", "--porcelain"]), "");

    let check = prepared.check();
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert_eq!(check.stdout, "");
    let run = prepared.prepare(false);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Incremental: a host commit after an untouched copy.
    std::fs::write(prepared.host.path().join("b.txt"), "host v2\n").unwrap();
    let second = commit_all(prepared.host.path(), "second");
    let (archive, repo) = archive_since(
        prepared.host.path(),
        prepared.scratch.path(),
        true,
        Some(&prepared.head),
    );
    let run = run_script(
        &prepare_argv_since(&prepared.target, 1, &repo, Some(&prepared.head)),
        &archive,
        &prepared.lock,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(git_in(&prepared.target, &["rev-parse", "HEAD"]), second);
}

#[test]
fn workspace_without_prepared_ref_compares_with_head() {
    let prepared = Prepared::new();
    let target = &prepared.target;
    git_in(target, &["update-ref", "-d", PREPARED_REF]);
    let check = prepared.check();
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert_eq!(check.stdout, "");

    std::fs::write(target.join("b.txt"), "guest\n").unwrap();
    let check = prepared.check();
    assert_eq!(parse_report(check.stdout.as_bytes()), changes(1, 0));
}
