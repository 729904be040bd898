//! `banger-agent net-setup` inside a test network namespace and a private
//! UTS namespace, so the host's interfaces and host name stay untouched.
//! A veth pair plays the guest's virtio-net interface, with its peer in a
//! second test namespace. No packet is sent.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

const BINARY: &str = env!("CARGO_BIN_EXE_banger-agent");

/// A network namespace that is deleted on drop.
struct Netns(String);

impl Netns {
    fn create(role: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("bgtest-{role}-{:x}-{nanos:x}", std::process::id());
        run_ok("ip", &["netns", "add", &name]);
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program} failed: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> Output {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `net-setup` in `netns` inside a new UTS namespace and prints the
/// host name seen there after it.
fn net_setup(netns: &str, cmdline: &std::path::Path, etc: &std::path::Path) -> Output {
    let script =
        "\"$0\" net-setup --cmdline-file \"$1\" --etc-dir \"$2\" && echo \"hostname=$(hostname)\"";
    let cmdline = cmdline.to_str().unwrap();
    let etc = etc.to_str().unwrap();
    run(
        "unshare",
        &[
            "--uts", "ip", "netns", "exec", netns, "sh", "-c", script, BINARY, cmdline, etc,
        ],
    )
}

#[test]
fn net_setup_configures_interface_in_netns() {
    if !nix::unistd::geteuid().is_root() {
        banger_test_support::skip("creating network namespaces needs root");
        return;
    }
    let host_name = text(&run_ok("hostname", &[]));
    let guest = Netns::create("guest");
    let peer = Netns::create("peer");
    run_ok(
        "ip",
        &[
            "link", "add", "eth0", "netns", &guest.0, "type", "veth", "peer", "name", "host0",
            "netns", &peer.0,
        ],
    );
    run_ok("ip", &["-n", &peer.0, "link", "set", "host0", "up"]);

    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        "console=ttyS0 root=LABEL=bangerroot banger.ip=172.30.0.5/24 banger.gw=172.30.0.1 \
         banger.dns=172.30.0.1 banger.hostname=web-1 quiet\n",
    )
    .unwrap();

    for round in 1..=2 {
        let output = net_setup(&guest.0, &cmdline, &etc);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "round {round}: {stderr}");
        assert_eq!(
            stderr.trim(),
            "banger-agent: net-setup: lo up, eth0 172.30.0.5/24, default via 172.30.0.1, nameserver 172.30.0.1, hostname web-1"
        );
        assert_eq!(text(&output).trim(), "hostname=web-1", "round {round}");

        let addresses = text(&run_ok(
            "ip",
            &["-n", &guest.0, "-4", "-o", "addr", "show", "dev", "eth0"],
        ));
        assert_eq!(
            addresses.matches("inet ").count(),
            1,
            "round {round}: {addresses}"
        );
        assert!(
            addresses.contains("inet 172.30.0.5/24 brd 172.30.0.255"),
            "{addresses}"
        );
        let routes = text(&run_ok(
            "ip",
            &["-n", &guest.0, "-4", "route", "show", "default"],
        ));
        assert_eq!(routes.lines().count(), 1, "round {round}: {routes}");
        assert!(
            routes.starts_with("default via 172.30.0.1 dev eth0 proto static"),
            "{routes}"
        );
        for link in ["lo", "eth0"] {
            let state = text(&run_ok("ip", &["-n", &guest.0, "-o", "link", "show", link]));
            assert!(state.contains(",UP"), "{link} is up: {state}");
        }
    }

    let resolv = std::fs::read_to_string(etc.join("resolv.conf")).unwrap();
    assert!(resolv.ends_with("\nnameserver 172.30.0.1\n"), "{resolv}");
    assert_eq!(
        std::fs::read_to_string(etc.join("hostname")).unwrap(),
        "web-1\n"
    );
    assert_eq!(
        text(&run_ok("hostname", &[])),
        host_name,
        "the host's name is unchanged"
    );
}

#[test]
fn net_setup_rejects_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "banger.ip=172.30.0.5/24 banger.gw=10.0.0.1\n").unwrap();
    let output = Command::new(BINARY)
        .arg("net-setup")
        .arg("--cmdline-file")
        .arg(&cmdline)
        .arg("--etc-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "banger-agent: net-setup: invalid network parameters on the kernel command line: \
         banger.gw=10.0.0.1 is outside the network of banger.ip=172.30.0.5/24; use an address of that network"
    );
    assert!(!dir.path().join("resolv.conf").exists());
}

#[test]
fn net_setup_without_parameters_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "console=ttyS0 root=/dev/vda\n").unwrap();
    let output = Command::new(BINARY)
        .arg("net-setup")
        .arg("--cmdline-file")
        .arg(&cmdline)
        .arg("--etc-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no banger.* network parameters"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the cmdline file"
    );
}
