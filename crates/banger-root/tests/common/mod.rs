//! A network namespace per test: [`run_isolated`] creates `bgtest-<random>`,
//! runs the test binary again inside it with `ip netns exec` and
//! `--exact <test>`, and deletes the namespace afterwards. In that child
//! the environment variable is set, so the same call runs the body.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// Set in the child to the namespace's name.
const NETNS_ENV: &str = "BANGER_ROOT_TEST_NETNS";

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `body` inside a fresh network namespace. Skips when not root.
/// `test` must be the test's name as the harness lists it.
pub fn run_isolated(test: &str, body: impl FnOnce()) {
    if let Ok(name) = std::env::var(NETNS_ENV) {
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let target = std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino();
        assert_eq!(own, target, "the test child is not inside {name}");
        body();
        return;
    }
    if !is_root() {
        banger_test_support::skip("creating network namespaces and running banger-root need root");
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let netns = Netns(format!("bgtest-{:x}-{nanos:x}", std::process::id()));
    run_ok("ip", &["netns", "add", &netns.0]);
    let output = Command::new("ip")
        .args(["netns", "exec", &netns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, &netns.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "--- {test} in {}:\n{stdout}{}---",
        netns.0,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{test} failed inside {}", netns.0);
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside {}",
        netns.0
    );
}

/// Runs a command and fails the test with its output unless it succeeds.
pub fn run_ok(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program} failed: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
