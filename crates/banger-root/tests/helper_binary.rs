//! The `banger-root` binary inside a test network namespace, used through
//! `HelperClient` and raw sockets, by root, by the owner uid and by another
//! uid.
//!
//! The binary runs with a PATH that holds only `nft` and a fake
//! `resolvectl` that records its arguments, so no request can reach the
//! host's resolver.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use banger_net::helper::{ClientError, HelperClient, Operation, Request};
use common::{run_isolated, run_ok};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_banger-root");
const OWNER: u32 = 4242;
const OTHER: u32 = 65534;

/// Set when this test binary runs as a client under another uid.
const CLIENT_SOCKET_ENV: &str = "BANGER_ROOT_TEST_CLIENT_SOCKET";

/// The helper process; killed when the test ends, pass or fail.
struct Helper {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Helper {
    fn start(dir: &Path, socket: &Path) -> Self {
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(which("nft"), bin.join("nft")).unwrap();
        let recorder = format!(
            "#!/bin/sh\necho \"$@\" >> {}\n",
            dir.join("resolvectl.log").display()
        );
        std::fs::write(bin.join("resolvectl"), recorder).unwrap();
        std::fs::set_permissions(
            bin.join("resolvectl"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();

        let config = dir.join("root.toml");
        std::fs::write(&config, format!("owner_uid = {OWNER}\nuplink = \"up0\"\n")).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

        let mut child = Command::new(BINARY)
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(socket)
            .env("PATH", &bin)
            .env("BANGER_ROOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("banger-root: {line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let helper = Self {
            child,
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "banger-root did not create {}",
                socket.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
        helper
    }

    /// Stops the helper with SIGTERM and returns its whole log.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "banger-root exited with {status}");
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{program} not found; install it (apt-get install nftables)"))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn call(socket: &Path, op_id: &str, operation: Operation) -> Result<Value, ClientError> {
    block_on(HelperClient::new(socket).call(&Request::new(op_id, operation)))
}

/// Sends raw bytes and returns the decoded response.
fn raw(socket: &Path, bytes: &[u8]) -> Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    serde_json::from_str(&response).unwrap()
}

/// Runs [`uid_client_helper_mode`] in a new process as `uid` and returns
/// the line it prints.
fn call_as(uid: u32, socket: &Path) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "uid_client_helper_mode",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLIENT_SOCKET_ENV, socket)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client as uid {uid}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.split_once("CLIENT: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no CLIENT line from uid {uid}: {stdout}"))
        .to_owned()
}

/// Helper mode of [`call_as`]: with the socket in the environment, sends
/// `ensure_bridge` and prints the outcome. Without it, does nothing.
#[test]
fn uid_client_helper_mode() {
    let Ok(socket) = std::env::var(CLIENT_SOCKET_ENV) else {
        return;
    };
    let uid = nix::unistd::getuid();
    match call(Path::new(&socket), "uid-test", Operation::EnsureBridge) {
        Ok(result) => println!("CLIENT: ok as uid {uid}: {result}"),
        Err(error) => println!(
            "CLIENT: error as uid {uid}: {}",
            banger_net::error_chain(&error)
        ),
    }
}

#[test]
fn helper_binary_in_netns() {
    run_isolated("helper_binary_in_netns", || {
        run_ok("ip", &["link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("run").join("root.sock");
        let helper = Helper::start(dir.path(), &socket);

        let metadata = std::fs::metadata(&socket).unwrap();
        assert_eq!(metadata.uid(), OWNER, "the socket belongs to the owner");
        assert_eq!(metadata.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(socket.parent().unwrap()).unwrap().mode() & 0o777,
            0o755
        );

        // Root is accepted.
        let bridge = call(&socket, "t-bridge", Operation::EnsureBridge).unwrap();
        assert_eq!(bridge["name"], "banger0");
        assert_eq!(bridge["address"], "172.30.0.1");
        let tap = call(
            &socket,
            "t-tap",
            Operation::CreateTap {
                name: "bgt0123456789ab".into(),
            },
        )
        .unwrap();
        assert_eq!(tap["owner_uid"], OWNER);
        let owner = std::fs::read_to_string("/sys/class/net/bgt0123456789ab/owner").unwrap();
        assert_eq!(owner.trim(), OWNER.to_string());

        let nat = call(
            &socket,
            "t-nat",
            Operation::EnableNat {
                vm_id: "0123456789ab".into(),
                address: "172.30.0.5".parse().unwrap(),
            },
        )
        .unwrap();
        assert_eq!(nat["uplink"], "up0");
        let rules =
            String::from_utf8(run_ok("nft", &["list", "table", "inet", "banger"]).stdout).unwrap();
        assert!(rules.contains("comment \"vm=0123456789ab\""), "{rules}");
        let disabled = call(
            &socket,
            "t-unnat",
            Operation::DisableNat {
                vm_id: "0123456789ab".into(),
            },
        )
        .unwrap();
        assert_eq!(disabled["removed"], 2);

        let routed = call(&socket, "t-dns", Operation::RouteDns { port: 42069 }).unwrap();
        assert_eq!(routed["server"], "127.0.0.1:42069");
        call(&socket, "t-undns", Operation::UnrouteDns).unwrap();
        let resolvectl = std::fs::read_to_string(dir.path().join("resolvectl.log")).unwrap();
        assert_eq!(
            resolvectl,
            "dns banger0 127.0.0.1:42069\ndomain banger0 ~vm\nrevert banger0\n"
        );

        // Invalid requests get clear errors and change nothing.
        let error = call(
            &socket,
            "t-bad-tap",
            Operation::CreateTap {
                name: "eth0".into(),
            },
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "create_tap failed in banger-root: invalid create_tap request: invalid tap name \"eth0\": it must start with \"bgt\" \
             (hint: bridge names start with \"banger\", tap names with \"bgt\", VM ids are 12 lowercase hex digits, \
             and device names have at most 15 bytes of [a-z0-9-])"
        );
        let error = call(
            &socket,
            "t-bad-nat",
            Operation::EnableNat {
                vm_id: "0123456789ab".into(),
                address: "10.0.0.5".parse().unwrap(),
            },
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("address 10.0.0.5 is not a VM address of pool 172.30.0.0/24"),
            "{error}"
        );
        let rules =
            String::from_utf8(run_ok("nft", &["list", "table", "inet", "banger"]).stdout).unwrap();
        assert!(
            !rules.contains("vm="),
            "no VM rules after the rejected request: {rules}"
        );

        let malformed = raw(&socket, b"{\"op_id\": \"t-raw\", \"operation\": {\"op\": ");
        assert_eq!(malformed["ok"], false);
        let message = malformed["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid request JSON: EOF while parsing"),
            "{message}"
        );
        assert!(
            malformed["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("send one JSON object")
        );
        let unknown = raw(
            &socket,
            b"{\"op_id\": \"t-raw2\", \"operation\": {\"op\": \"flush_ruleset\"}}\n",
        );
        let message = unknown["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("unknown variant `flush_ruleset`"),
            "{message}"
        );

        let deleted = call(
            &socket,
            "t-deltap",
            Operation::DeleteTap {
                name: "bgt0123456789ab".into(),
            },
        )
        .unwrap();
        assert_eq!(deleted["deleted"], true);
        assert!(!Path::new("/sys/class/net/bgt0123456789ab").exists());

        // The owner uid is accepted; another uid cannot even open the socket.
        let owner_line = call_as(OWNER, &socket);
        assert!(
            owner_line.starts_with(&format!("ok as uid {OWNER}")),
            "{owner_line}"
        );
        let other_line = call_as(OTHER, &socket);
        assert!(
            other_line.starts_with(&format!(
                "error as uid {OTHER}: connecting to banger-root at {}",
                socket.display()
            )),
            "{other_line}"
        );
        assert!(
            other_line.ends_with("Permission denied (os error 13)"),
            "{other_line}"
        );

        // With the socket opened up, SO_PEERCRED still rejects that uid.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let other_line = call_as(OTHER, &socket);
        assert_eq!(
            other_line,
            format!(
                "error as uid {OTHER}: ensure_bridge failed in banger-root: banger-root serves only root and uid {OWNER}; \
                 this connection is from uid {OTHER} (hint: run bangerd as the user named by owner_uid in banger-root's configuration)"
            )
        );

        let log = helper.stop();
        for op_id in [
            "t-bridge", "t-tap", "t-nat", "t-unnat", "t-dns", "t-undns", "t-deltap", "uid-test",
        ] {
            let lines = log
                .lines()
                .filter(|line| {
                    line.contains("request succeeded")
                        && line.contains(&format!("op_id=\"{op_id}\""))
                })
                .count();
            assert_eq!(lines, 1, "one success line for {op_id} in:\n{log}");
        }
        for op_id in ["t-bad-tap", "t-bad-nat"] {
            let lines = log
                .lines()
                .filter(|line| {
                    line.contains("request failed") && line.contains(&format!("op_id=\"{op_id}\""))
                })
                .count();
            assert_eq!(lines, 1, "one failure line for {op_id} in:\n{log}");
        }
        assert_eq!(
            log.matches("op_id=\"-\"").count(),
            2,
            "the two unparsable requests:\n{log}"
        );
        let rejected: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("request rejected"))
            .collect();
        assert_eq!(rejected.len(), 1, "{log}");
        assert!(
            rejected[0].contains(&format!("peer_uid={OTHER}")),
            "{}",
            rejected[0]
        );
        assert!(!socket.exists(), "the socket is removed at exit");
    });
}

#[test]
fn helper_rejects_bad_config() {
    if !common::is_root() {
        banger_test_support::skip("banger-root refuses to start when not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("root.toml");
    std::fs::write(&config, "owner_uid = 1000\nbridge = \"docker0\"\n").unwrap();
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("root.sock"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid bridge name \"docker0\": it must start with \"banger\""),
        "{stderr}"
    );
    assert!(!dir.path().join("root.sock").exists());
}
