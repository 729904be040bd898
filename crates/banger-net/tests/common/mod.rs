//! Network namespaces for tests. Every test that creates devices, rules or
//! sockets on non-loopback addresses runs inside namespaces it creates, so
//! nothing touches the host's interfaces, nftables rules or resolver.
//!
//! [`run_isolated`] creates a namespace `bgtest-<random>` (plus optional
//! peers), then runs the test binary again with `ip netns exec` and
//! `--exact <test>`. In that child the environment variable is set, so the
//! same call runs the body. The namespaces are deleted when the parent
//! returns, pass or fail.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sched::{CloneFlags, setns};

/// Set in the child to the main namespace's name.
const MAIN_ENV: &str = "BANGER_NET_TEST_NETNS";
/// Set in the child to the peer namespaces' names, comma-separated.
const PEERS_ENV: &str = "BANGER_NET_TEST_PEERS";

/// The namespaces a test body runs with: it runs inside `main`; `peers`
/// stand in for the upstream network or a guest.
pub struct Scenario {
    pub main: String,
    pub peers: Vec<String>,
}

/// A network namespace that is deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "bgtest-{:x}-{:x}-{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_ok("ip", &["netns", "add", &name]);
        Self { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `body` inside a fresh network namespace, with `peers` further
/// namespaces created beside it. Skips (returns at once) when not root.
/// `test` must be the test's name as the harness lists it.
pub fn run_isolated(test: &str, peers: usize, body: impl FnOnce(&Scenario)) {
    if let Ok(main) = std::env::var(MAIN_ENV) {
        let peers = std::env::var(PEERS_ENV)
            .unwrap_or_default()
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        assert_inside(&main);
        body(&Scenario { main, peers });
        return;
    }
    if !is_root() {
        banger_test_support::skip("creating network namespaces needs root");
        return;
    }

    let host_before = host_snapshot();
    let main = Netns::create();
    let peer_namespaces: Vec<Netns> = (0..peers).map(|_| Netns::create()).collect();
    let peer_names: Vec<&str> = peer_namespaces.iter().map(|ns| ns.name.as_str()).collect();
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("ip")
        .args(["netns", "exec", &main.name])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(MAIN_ENV, &main.name)
        .env(PEERS_ENV, peer_names.join(","))
        .output()
        .expect("starting the test binary in the namespace");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- {test} in {}:\n{stdout}{stderr}---", main.name);
    assert!(
        output.status.success(),
        "{test} failed inside {}",
        main.name
    );
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside {}; is the name right?",
        main.name
    );
    drop(peer_namespaces);
    drop(main);
    assert_eq!(
        host_snapshot(),
        host_before,
        "the host's network state changed"
    );
}

/// The parts of the host's state the code under test could change by
/// mistake: banger's devices, banger's nftables table and IPv4 forwarding.
#[derive(Debug, PartialEq, Eq)]
struct HostSnapshot {
    banger_links: Vec<String>,
    has_banger_table: bool,
    ip_forward: String,
}

fn host_snapshot() -> HostSnapshot {
    let links = run_ok("ip", &["-o", "link", "show"]);
    let banger_links = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("banger") || name.starts_with("bgt"))
        .collect();
    let has_banger_table = Command::new("nft")
        .args(["list", "table", "inet", "banger"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    HostSnapshot {
        banger_links,
        has_banger_table,
        ip_forward,
    }
}

/// Fails unless this process is in the namespace `name` and not in the
/// namespace of PID 1.
fn assert_inside(name: &str) {
    let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let target = std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap()
        .ino();
    let init = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino()).ok();
    assert_eq!(own, target, "the test child is not inside {name}");
    assert_ne!(
        Some(own),
        init,
        "the test child is in the initial namespace"
    );
}

/// Runs `f` on a new thread that has joined the namespace `name`; sockets
/// it opens live there. Only the thread's namespace changes.
pub fn in_namespace_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
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

/// Runs a command inside the namespace `name` with `ip netns exec`.
pub fn ns_run_ok(name: &str, program: &str, args: &[&str]) -> Output {
    let mut full = vec!["netns", "exec", name, program];
    full.extend_from_slice(args);
    run_ok("ip", &full)
}

/// Runs `future` on a current-thread tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
