//! A user's environment for end-to-end tests: the real `banger` binaries in a
//! temporary XDG tree, with a kernel and image cache shared across tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct UserEnv {
    pub root: tempfile::TempDir,
    pub cache_home: PathBuf,
    pub bin_dir: PathBuf,
    pub path_var: String,
}

/// Why the end-to-end tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if std::env::var("BANGER_E2E").as_deref() != Ok("1") {
        return Some("set BANGER_E2E=1 (scripts/test.sh does) to boot real guests".into());
    }
    if std::env::var_os("BANGER_BIN_DIR").is_none() {
        return Some("set BANGER_BIN_DIR to the directory scripts/build.sh fills".into());
    }
    None
}

impl UserEnv {
    /// Creates a fresh user with the shared cache.
    pub fn shared() -> Self {
        let cache = std::env::var_os("BANGER_TEST_CACHE")
            .map(PathBuf::from)
            .expect("BANGER_TEST_CACHE is set by scripts/test.sh");
        Self::with_cache(cache)
    }

    /// A fresh user with a cache of its own, for tests that must not reuse artifacts.
    pub fn with_private_cache() -> Self {
        let mut env = Self::with_cache(PathBuf::new());
        env.cache_home = env.root.path().join("cache");
        env
    }

    fn with_cache(cache_home: PathBuf) -> Self {
        // Short paths under /tmp keep Unix socket paths below their 108-byte limit.
        let root = tempfile::Builder::new()
            .prefix("bgr")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let bin_dir = PathBuf::from(std::env::var_os("BANGER_BIN_DIR").expect("BANGER_BIN_DIR"));
        let env = Self {
            root,
            cache_home,
            bin_dir,
            path_var: std::env::var("PATH").unwrap_or_default(),
        };
        env.write_config("");
        env
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state/banger")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root.path().join("run/banger")
    }

    /// Writes config.toml. Unless `text` has a `[network]` section, guest
    /// networking is turned off: run as root, the daemon would otherwise put
    /// a bridge and taps on the host, and tests may only touch networking
    /// inside namespaces they create.
    pub fn write_config(&self, text: &str) {
        let dir = self.root.path().join("config/banger");
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = text.to_string();
        if !text.contains("[network]") {
            text.push_str("\n[network]\nenabled = false\n");
        }
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin_dir.join("banger"));
        command
            .args(args)
            .env_clear()
            .env("PATH", &self.path_var)
            .env("HOME", self.root.path())
            .env("XDG_CONFIG_HOME", self.root.path().join("config"))
            .env("XDG_STATE_HOME", self.root.path().join("state"))
            .env("XDG_CACHE_HOME", &self.cache_home)
            .env("XDG_RUNTIME_DIR", self.root.path().join("run"))
            .stdin(Stdio::null());
        command
    }

    /// Runs banger and returns what it printed and its exit code.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().expect("banger runs");
        Run::from(output, args)
    }

    /// Runs banger and fails the test unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "banger {args:?} failed:\n{run}");
        run
    }

    /// PIDs of processes whose command line mentions this environment's tree.
    pub fn own_processes(&self) -> Vec<u32> {
        let marker = self.root.path().to_string_lossy().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn vm_dirs(&self) -> Vec<PathBuf> {
        list_dir(&self.state_dir().join("vms"))
    }

    pub fn vm_run_dirs(&self) -> Vec<PathBuf> {
        list_dir(&self.runtime_dir().join("vms"))
    }

    pub fn vms_json(&self) -> Vec<serde_json::Value> {
        let run = self.ok(&["vm", "list", "--json"]);
        serde_json::from_str(&run.stdout).expect("vm list --json prints JSON")
    }
}

impl Drop for UserEnv {
    fn drop(&mut self) {
        // Leave nothing running: delete every VM, then stop the daemon.
        if self.root.path().join("run/banger/bangerd.sock").exists() {
            if let Ok(output) = self.command(&["vm", "list", "--json"]).output() {
                let vms: Vec<serde_json::Value> =
                    serde_json::from_slice(&output.stdout).unwrap_or_default();
                for vm in vms {
                    if let Some(name) = vm["name"].as_str() {
                        let _ = self.command(&["vm", "delete", name]).output();
                    }
                }
            }
            let _ = self.command(&["daemon", "stop"]).output();
        }
    }
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
    pub args: Vec<String>,
}

impl Run {
    fn from(output: Output, args: &[&str]) -> Self {
        Self {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            code: output.status.code().unwrap_or(-1),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ banger {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

/// A banger process whose standard streams are a new pseudo-terminal, as in
/// an interactive session.
pub struct TerminalSession {
    child: std::process::Child,
    master: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl UserEnv {
    /// Starts banger with a pseudo-terminal as its controlling terminal and
    /// its standard input, output and error.
    pub fn on_terminal(&self, args: &[&str]) -> TerminalSession {
        use std::os::unix::process::CommandExt;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let mut command = self.command(args);
        command
            .env("TERM", "xterm")
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("banger starts");
        drop(command);

        let master = std::fs::File::from(pty.master);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut source = master.try_clone().unwrap();
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            // The read fails with EIO once no process has the terminal open.
            while let Ok(n) = source.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        TerminalSession {
            child,
            master,
            output,
            reader: Some(reader),
        }
    }
}

impl TerminalSession {
    /// Returns everything the terminal showed so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `text` after byte `from` of the
    /// output, and returns the offset just past it.
    pub fn expect(&self, text: &str, from: usize, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let output = self.output.lock().unwrap();
                if let Some(at) = output[from.min(output.len())..]
                    .windows(text.len())
                    .position(|window| window == text.as_bytes())
                {
                    return from + at + text.len();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the terminal did not show {text:?} within {timeout:?}; it shows:\n{}",
                self.screen()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Types `text` on the terminal.
    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Waits for banger to exit and returns its exit code and the whole
    /// terminal output.
    pub fn finish(mut self, timeout: std::time::Duration) -> (i32, String) {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "banger did not exit within {timeout:?}; the terminal shows:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // The reader ends when no process has the terminal open. A process
        // that banger left behind with it open delays that by up to 5 s.
        let reader = self.reader.take().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !reader.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let screen = String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned();
        (status.code().unwrap_or(-1), screen)
    }
}
