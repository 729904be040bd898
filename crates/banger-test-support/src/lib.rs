//! Test-only helpers shared by banger's crates: run-time skips and the
//! Debian kernel packages that tests boot or import.
//!
//! libtest has no run-time skip: a test whose prerequisites are missing
//! returns early and counts as passed. [`skip`] and [`skip_check`] make
//! those skips visible. Each prints a line on stderr, which libtest shows
//! with `--nocapture` or when the test fails. When the variable named by
//! [`SKIP_LOG_ENV`] contains a file path, each also appends the line to
//! that file, so `scripts/test.sh` can list the skips and count them.

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Environment variable naming the file that collects skip lines.
pub const SKIP_LOG_ENV: &str = "BANGER_TEST_SKIP_LOG";

/// Prefix of the line for a test that skipped all of its remaining checks.
pub const SKIPPED_TEST: &str = "skipped test";

/// Prefix of the line for one optional check that a test skipped.
pub const SKIPPED_CHECK: &str = "skipped check in";

/// Reports that the running test skips its remaining checks because of
/// `reason`; the caller returns right after.
pub fn skip(reason: impl Display) {
    record(SKIPPED_TEST, &reason.to_string());
}

/// Reports that the running test skips the optional check `check` because
/// of `reason`, while its other checks still run.
pub fn skip_check(check: &str, reason: impl Display) {
    record(SKIPPED_CHECK, &format!("{check}: {reason}"));
}

fn record(prefix: &str, detail: &str) {
    let line = format!("{prefix} {}: {detail}", current_test());
    eprintln!("{line}");

    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    if let Err(error) = append_line(Path::new(&path), &line) {
        eprintln!(
            "failed to append to {} ({SKIP_LOG_ENV}): {error}",
            Path::new(&path).display()
        );
    }
}

/// Appends `line` and a newline to `path` in one write on a file opened
/// with O_APPEND, so lines from test binaries that run at the same time do
/// not interleave.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(format!("{line}\n").as_bytes())
}

/// Environment variable naming the directory that contains Debian's cloud
/// kernel packages; `scripts/test.sh` fills it with `apt-get download`.
pub const KERNEL_DIR_ENV: &str = "BANGER_TEST_KERNEL_DIR";

/// Returns Debian's versioned cloud kernel package
/// (`linux-image-<release>-cloud-amd64_<version>_amd64.deb`) from the
/// directory named by [`KERNEL_DIR_ENV`], or `None` when it contains none.
pub fn kernel_deb() -> Option<PathBuf> {
    find_in_kernel_dir(is_kernel_package)
}

/// Returns the metapackage `linux-image-cloud-amd64_<version>_amd64.deb`
/// from the directory named by [`KERNEL_DIR_ENV`], or `None`.
pub fn kernel_meta_deb() -> Option<PathBuf> {
    find_in_kernel_dir(is_meta_package)
}

fn find_in_kernel_dir(matches: fn(&str) -> bool) -> Option<PathBuf> {
    let dir = std::env::var_os(KERNEL_DIR_ENV)?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| matches(&name.to_string_lossy()))
        })
        .collect();
    // The lexically last name wins, so the choice is stable when the
    // directory contains several versions.
    found.sort();
    found.pop()
}

fn is_kernel_package(name: &str) -> bool {
    name.strip_prefix("linux-image-")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        && name.contains("-cloud-amd64_")
        && name.ends_with(".deb")
}

fn is_meta_package(name: &str) -> bool {
    name.starts_with("linux-image-cloud-amd64_") && name.ends_with(".deb")
}

/// Names the running test as `BINARY::PATH`: the test binary's name without
/// cargo's hash suffix, and the test path that libtest gives its thread.
fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .map(|stem| strip_hash(&stem).to_owned())
        .unwrap_or_else(|| "unknown binary".to_owned());
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "unknown test".to_owned(),
    };
    format!("{binary}::{test}")
}

/// Drops cargo's `-<16 hex digits>` suffix from a test binary's name.
fn strip_hash(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_suffix_is_stripped() {
        assert_eq!(
            strip_hash("firecracker_guest-c8948286536de355"),
            "firecracker_guest"
        );
        assert_eq!(strip_hash("banger_image-0123456789abcdef"), "banger_image");
    }

    #[test]
    fn other_suffixes_are_kept() {
        assert_eq!(strip_hash("banger-bench"), "banger-bench");
        assert_eq!(strip_hash("e2e_guest-xyz"), "e2e_guest-xyz");
        assert_eq!(strip_hash("plain"), "plain");
    }

    #[test]
    fn kernel_package_names_are_told_apart() {
        let kernel = "linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb";
        let meta = "linux-image-cloud-amd64_6.1.192-3_amd64.deb";
        assert!(is_kernel_package(kernel));
        assert!(!is_kernel_package(meta));
        assert!(is_meta_package(meta));
        assert!(!is_meta_package(kernel));
        assert!(!is_kernel_package(
            "linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb"
        ));
        assert!(!is_kernel_package(
            "linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb.partial"
        ));
    }

    #[test]
    fn lines_are_appended() {
        let dir = std::env::temp_dir().join(format!("banger-skip-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("skips");
        append_line(&path, "skipped test a::b: first").unwrap();
        append_line(&path, "skipped check in a::c: second").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            text,
            "skipped test a::b: first\nskipped check in a::c: second\n"
        );
    }

    #[test]
    fn test_name_comes_from_the_thread() {
        let name = current_test();
        assert!(
            name.ends_with("::tests::test_name_comes_from_the_thread"),
            "{name}"
        );
        assert!(name.starts_with("banger_test_support::"), "{name}");
    }
}
