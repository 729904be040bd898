//! Test repositories made with the real git.

use std::path::Path;
use std::process::Command;

/// Runs git in `dir` and fails the test when it fails.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A new repository on branch `main` with a local identity.
pub fn new_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    git_in(dir.path(), &["init", "-q", "-b", "main"]);
    git_in(dir.path(), &["config", "user.name", "Test User"]);
    git_in(dir.path(), &["config", "user.email", "test@example.com"]);
    dir
}

/// Stages everything and commits it.
pub fn commit_all(dir: &Path, message: &str) -> String {
    git_in(dir, &["add", "-A"]);
    git_in(dir, &["commit", "-q", "-m", message]);
    git_in(dir, &["rev-parse", "HEAD"])
}
