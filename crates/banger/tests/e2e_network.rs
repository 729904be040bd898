//! End-to-end networking: the daemon runs as root inside a network
//! namespace that the test creates, so the bridge, taps and nftables rules
//! exist only there. A second namespace stands in for the upstream network
//! that NAT reaches. Nothing touches the host's interfaces or resolver.
//!
//! ```text
//!  guests -- tap -- [banger0 172.30.0.1/24]  (test namespace)
//!                   up0 198.51.100.1/24 --------- wan0 198.51.100.2/24 (upstream namespace)
//! ```

mod common;

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{UserEnv, skip_reason};

const UPSTREAM: &str = "198.51.100.2";
const UPSTREAM_PORT: u16 = 9999;

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("bgt-{tag}-{:x}-{nanos:x}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        Self(name)
    }

    fn exec(&self, program: &str, args: &[&str]) -> Output {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.0, program])
                .args(args),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs banger inside `ns`, as the user of `env`.
fn banger(env: &UserEnv, ns: &Netns, args: &[&str]) -> Output {
    let inner = env.command(args);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.0])
        .arg(inner.get_program())
        .args(inner.get_args());
    command.env_clear();
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command.output().expect("banger starts")
}

fn banger_ok(env: &UserEnv, ns: &Netns, args: &[&str]) -> String {
    let output = banger(env, ns, args);
    assert!(
        output.status.success(),
        "banger {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An `A` query for `name`, built by hand.
fn dns_query(name: &str) -> Vec<u8> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// Runs `f` on a thread inside the namespace `ns`.
fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

fn links(ns: &Netns) -> Vec<String> {
    let out = ns.exec("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// Debian's cloud kernel package from BANGER_TEST_KERNEL_DIR.
fn kernel_deb() -> Option<String> {
    banger_test_support::kernel_deb().map(|path| path.display().to_string())
}

#[test]
fn guests_get_addresses_ssh_dns_and_nat() {
    if let Some(reason) = skip_reason() {
        banger_test_support::skip(reason);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        banger_test_support::skip("network namespaces need root");
        return;
    }
    let main = Netns::create("main");
    let upstream = Netns::create("up");
    main.exec("ip", &["link", "set", "lo", "up"]);
    main.exec(
        "ip",
        &[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "wan0",
            "netns",
            &upstream.0,
        ],
    );
    main.exec("ip", &["addr", "add", "198.51.100.1/24", "dev", "up0"]);
    main.exec("ip", &["link", "set", "up0", "up"]);
    main.exec(
        "ip",
        &["route", "add", "default", "via", UPSTREAM, "dev", "up0"],
    );
    upstream.exec("ip", &["addr", "add", "198.51.100.2/24", "dev", "wan0"]);
    upstream.exec("ip", &["link", "set", "wan0", "up"]);
    upstream.exec("ip", &["link", "set", "lo", "up"]);

    // Declared after the namespaces, so it is dropped (VMs deleted, daemon
    // stopped) while they still exist.
    let env = UserEnv::shared();
    let helper = env.root.path().join("no-helper.sock");
    // The guests' resolver is the upstream stand-in, so nothing in a guest
    // ever looks for a resolver outside the test's namespaces.
    env.write_config(&format!(
        "helper_socket = \"{}\"\n[network]\nguest_dns = \"198.51.100.2\"\n",
        helper.display()
    ));

    // Two VMs created at the same time.
    let spawn = |args: Vec<&'static str>| {
        let inner = env.command(&args);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &main.0])
            .arg(inner.get_program())
            .args(inner.get_args());
        command.env_clear();
        for (key, value) in inner.get_envs() {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        command.spawn().expect("banger starts")
    };
    // The namespace has no route to a package mirror, so the kernel comes
    // from a local package instead of `kernel pull`.
    let deb = kernel_deb()
        .expect("set BANGER_TEST_KERNEL_DIR to a directory with Debian's cloud kernel .deb");
    banger_ok(
        &env,
        &main,
        &[
            "kernel",
            "import",
            "--deb",
            &deb,
            "--name",
            "debian-cloud-amd64",
        ],
    );
    let dev = spawn(vec![
        "vm", "create", "--name", "dev", "--nat", "--memory", "512",
    ]);
    let plain = spawn(vec!["vm", "create", "--name", "plain", "--memory", "512"]);
    for child in [dev, plain] {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "vm create failed");
    }

    let names = links(&main);
    assert!(names.contains(&"banger0".to_owned()), "{names:?}");
    let taps: Vec<&String> = names.iter().filter(|n| n.starts_with("bgt")).collect();
    assert_eq!(taps.len(), 2, "{names:?}");

    let list = banger_ok(&env, &main, &["vm", "list"]);
    let ip_of = |name: &str| -> String {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or_else(|| panic!("{name} missing:\n{list}"))
            .to_owned()
    };
    let dev_ip = ip_of("dev");
    let plain_ip = ip_of("plain");
    assert_ne!(dev_ip, plain_ip);
    assert!(dev_ip.starts_with("172.30.0."), "{list}");

    // The guest configured its address.
    let addr = banger_ok(
        &env,
        &main,
        &["vm", "exec", "dev", "--", "ip", "-4", "-o", "addr"],
    );
    assert!(addr.contains(&format!("{dev_ip}/24")), "{addr}");
    let record = banger_ok(&env, &main, &["vm", "show", "dev"]);
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["ip"].as_str(), Some(dev_ip.as_str()), "{record}");

    // SSH with the pinned host key.
    let hostname = banger_ok(&env, &main, &["vm", "ssh", "dev", "--", "hostname"]);
    assert_eq!(hostname.trim(), "dev");
    // Arguments arrive unchanged and the exit code comes back, as with exec.
    let exited = banger(
        &env,
        &main,
        &[
            "vm",
            "ssh",
            "dev",
            "--",
            "sh",
            "-c",
            "echo 'a   b' \"$0\"; exit 5",
        ],
    );
    assert_eq!(exited.status.code(), Some(5), "{exited:?}");
    assert_eq!(String::from_utf8_lossy(&exited.stdout), "a   b sh\n");
    let resolv = banger_ok(
        &env,
        &main,
        &["vm", "exec", "dev", "--", "cat", "/etc/resolv.conf"],
    );
    assert!(resolv.contains("nameserver 198.51.100.2"), "{resolv}");

    // DNS, asked inside the namespace.
    let query = dns_query("dev.vm");
    let answer = in_namespace(&main.0, move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&query, "127.0.0.1:42069").unwrap();
        let mut buf = [0u8; 512];
        let (len, _) = socket.recv_from(&mut buf).unwrap();
        buf[..len].to_vec()
    })
    .join()
    .unwrap();
    let octets: Vec<u8> = dev_ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert!(
        answer.windows(4).any(|w| w == octets.as_slice()),
        "{answer:?}"
    );

    // Ports through the agent.
    let ports = banger_ok(&env, &main, &["vm", "ports", "dev"]);
    assert!(
        ports.contains("dev.vm:22") && ports.contains("sshd"),
        "{ports}"
    );

    // NAT: dev reaches the upstream stand-in, plain does not.
    let listener = in_namespace(&upstream.0, || {
        let listener = TcpListener::bind(("0.0.0.0", UPSTREAM_PORT)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        let mut peers = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok((_, peer)) = listener.accept() {
                peers.push(peer.ip().to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peers
    });
    let probe = format!("timeout 5 bash -c 'echo hi > /dev/tcp/{UPSTREAM}/{UPSTREAM_PORT}'");
    let reached = banger(
        &env,
        &main,
        &["vm", "exec", "dev", "--", "sh", "-c", &probe],
    );
    assert!(
        reached.status.success(),
        "dev with --nat did not reach upstream: {}",
        String::from_utf8_lossy(&reached.stderr)
    );
    let blocked = banger(
        &env,
        &main,
        &["vm", "exec", "plain", "--", "sh", "-c", &probe],
    );
    assert!(
        !blocked.status.success(),
        "plain without --nat reached upstream"
    );
    let peers = listener.join().unwrap();
    assert_eq!(
        peers,
        vec!["198.51.100.1".to_owned()],
        "only the masqueraded guest connects"
    );

    // ssh into a stopped VM prints how to start it.
    banger_ok(&env, &main, &["vm", "stop", "plain"]);
    let stopped = banger(&env, &main, &["vm", "ssh", "plain", "--", "true"]);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success());
    assert!(
        stderr.contains("\"plain\" is stopped, not running"),
        "{stderr}"
    );
    assert!(stderr.contains("banger vm start plain"), "{stderr}");

    // Delete everything: no tap, rule or lease is left.
    banger_ok(&env, &main, &["vm", "delete", "dev", "plain"]);
    let names = links(&main);
    assert!(!names.iter().any(|n| n.starts_with("bgt")), "{names:?}");
    let rules = main.exec("nft", &["-j", "list", "ruleset"]);
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("vm="), "{rules}");
    let known = std::fs::read_to_string(env.state_dir().join("ssh/known_hosts")).unwrap();
    assert!(!known.contains("dev.vm"), "{known}");
    let network = banger_ok(&env, &main, &["vm", "list"]);
    assert!(!network.contains("172.30."), "{network}");

    banger_ok(&env, &main, &["daemon", "stop"]);
}

/// A banger-root process serving in a namespace, ended on drop.
struct RootHelper {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl RootHelper {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RootHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn guest_network_through_the_root_helper() {
    if let Some(reason) = skip_reason() {
        banger_test_support::skip(reason);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        banger_test_support::skip("network namespaces need root");
        return;
    }
    let ns = Netns::create("helper");
    ns.exec("ip", &["link", "set", "lo", "up"]);

    let helper_dir = tempfile::tempdir().unwrap();
    let config = helper_dir.path().join("root.toml");
    let socket = helper_dir.path().join("root.sock");
    std::fs::write(&config, "owner_uid = 0\npool = \"172.30.7.0/24\"\n").unwrap();
    let log = helper_dir.path().join("banger-root.log");
    let bin_dir = std::path::PathBuf::from(std::env::var_os("BANGER_BIN_DIR").unwrap());
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(bin_dir.join("banger-root"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("banger-root starts");
    let helper = RootHelper { child, log };
    // Declared after the helper, so its VMs and daemon are gone before the
    // helper ends and the namespace is deleted.
    let env = UserEnv::shared();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "banger-root did not create {}: {}",
            socket.display(),
            helper.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    env.write_config(&format!(
        "helper_socket = \"{}\"\n[network]\npool = \"172.30.7.0/24\"\nguest_dns = \"{UPSTREAM}\"\n",
        socket.display()
    ));
    let deb = kernel_deb()
        .expect("set BANGER_TEST_KERNEL_DIR to a directory with Debian's cloud kernel .deb");
    banger_ok(
        &env,
        &ns,
        &[
            "kernel",
            "import",
            "--deb",
            &deb,
            "--name",
            "debian-cloud-amd64",
        ],
    );
    let status = banger_ok(&env, &ns, &["system", "status"]);
    assert!(status.contains("network: helper"), "{status}");

    banger_ok(
        &env,
        &ns,
        &["vm", "create", "--name", "hv", "--memory", "512"],
    );
    let names = links(&ns);
    assert!(names.contains(&"banger0".to_owned()), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.starts_with("bgt")).count(),
        1,
        "{names:?}"
    );
    let addr = banger_ok(
        &env,
        &ns,
        &["vm", "exec", "hv", "--", "ip", "-4", "-o", "addr"],
    );
    assert!(addr.contains("172.30.7."), "{addr}");

    // The helper did the privileged work and logged each request with the
    // daemon's operation id.
    let text = helper.log();
    for op in ["ensure_bridge", "create_tap"] {
        assert!(text.contains(op), "no {op} in the helper log:\n{text}");
    }
    assert!(text.contains("op_id"), "{text}");

    banger_ok(&env, &ns, &["vm", "delete", "hv"]);
    let names = links(&ns);
    assert!(!names.iter().any(|n| n.starts_with("bgt")), "{names:?}");
    assert!(helper.log().contains("delete_tap"), "{}", helper.log());
    banger_ok(&env, &ns, &["daemon", "stop"]);
}
