//! `banger-bench --workspace`: times `banger vm workspace prepare` against
//! a plain `git archive HEAD | banger vm exec VM -- tar -x` copy of the same
//! repository into the same running guest, and the round trip of
//! `banger vm exec VM -- true` through the guest agent.
//!
//! A first prepare goes to a new guest directory and carries the whole
//! history. A repeated prepare goes to the same directory after one more
//! commit, as `vm exec --auto-prepare` does, and carries only that commit.
//! `vm ssh` needs guest networking, which this tool leaves off, so the
//! round trip through SSH is measured separately (docs/benchmarks.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::median;

/// Files of the generated repository.
const GENERATED_FILES: usize = 2000;
/// Commits of the generated repository; each rewrites a tenth of the files.
const GENERATED_COMMITS: usize = 10;

pub struct WorkspaceBench {
    pub banger: PathBuf,
    pub runs: usize,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Repository to copy; a generated one when `None`.
    pub repo: Option<PathBuf>,
}

impl WorkspaceBench {
    pub fn run(&self) -> anyhow::Result<()> {
        let generated = tempfile::Builder::new().prefix("bgw").tempdir_in("/tmp")?;
        let repo = match &self.repo {
            Some(path) => std::fs::canonicalize(path)
                .with_context(|| format!("repository {} not found", path.display()))?,
            None => {
                let path = generated.path().join("repo");
                eprintln!(
                    "generating a repository of {GENERATED_FILES} files and {GENERATED_COMMITS} commits"
                );
                generate_repo(&path)?;
                path
            }
        };
        let vm = format!("bench-ws-{:06x}", std::process::id() & 0xff_ffff);
        eprintln!("creating VM {vm}");
        self.banger(&[
            "vm",
            "create",
            "--name",
            &vm,
            "--vcpu",
            &self.vcpus.to_string(),
            "--memory",
            &self.memory_mib.to_string(),
        ])?;
        let result = self.measure(&vm, &repo);
        if let Err(error) = self.banger(&["vm", "delete", &vm]) {
            eprintln!("warning: failed to delete VM {vm}: {error:#}");
        }
        result
    }

    fn measure(&self, vm: &str, repo: &Path) -> anyhow::Result<()> {
        let repo_arg = repo.to_str().context("repository path is not UTF-8")?;
        let tree = String::from_utf8_lossy(&git_output(repo, &["ls-files"])?)
            .lines()
            .count();
        let bytes = git_output(repo, &["archive", "HEAD"])?.len();
        eprintln!("repository {repo_arg}: {tree} tracked files, archive of HEAD {bytes} bytes");

        // One untimed copy of each kind warms the guest's page cache and the
        // daemon's agent session.
        self.prepare(vm, repo_arg, "/root/bench-ws-warm")?;
        self.in_home(vm, &["rm", "-rf", "/root/bench-ws-warm"])?;
        self.archive_copy(vm, repo, "warm")?;

        let mut first_times = Vec::new();
        let mut again_times = Vec::new();
        let mut archive_times = Vec::new();
        for run in 1..=self.runs {
            // A directory the VM's workspace record does not name: a full copy.
            let guest_path = format!("/root/bench-ws-{run}");
            let start = Instant::now();
            self.prepare(vm, repo_arg, &guest_path)?;
            first_times.push(start.elapsed());

            // One more commit, then the same directory again. A repository
            // given with --repo is not changed, so HEAD stays.
            if self.repo.is_none() {
                add_commit(repo, run)?;
            }
            let start = Instant::now();
            self.prepare(vm, repo_arg, &guest_path)?;
            again_times.push(start.elapsed());
            // The last copy stays: it is the workspace `vm exec` runs in below.
            if run < self.runs {
                self.in_home(vm, &["rm", "-rf", &guest_path])?;
            }

            archive_times.push(self.archive_copy(vm, repo, &run.to_string())?);
            eprintln!(
                "run {run}: first prepare {:.2} s, prepare again {:.2} s, git archive | tar {:.2} s",
                first_times[run - 1].as_secs_f64(),
                again_times[run - 1].as_secs_f64(),
                archive_times[run - 1].as_secs_f64()
            );
        }

        let exec_runs = self.runs.max(20);
        let mut exec_times = Vec::new();
        for _ in 0..exec_runs {
            let start = Instant::now();
            self.banger(&["vm", "exec", vm, "--", "true"])?;
            exec_times.push(start.elapsed());
        }

        let first_median = median(&mut first_times);
        let again_median = median(&mut again_times);
        let archive_median = median(&mut archive_times);
        let exec_median = median(&mut exec_times);
        println!("runs: {} (vm exec: {exec_runs})", self.runs);
        println!("repository: {tree} files, {bytes} bytes in `git archive HEAD`");
        print_line("first vm workspace prepare", first_median, &first_times);
        print_line("prepare again after a commit", again_median, &again_times);
        print_line(
            "git archive | vm exec tar -x",
            archive_median,
            &archive_times,
        );
        println!(
            "ratio first prepare / archive copy: {:.2}",
            first_median.as_secs_f64() / archive_median.as_secs_f64()
        );
        println!(
            "ratio prepare again / archive copy: {:.2}",
            again_median.as_secs_f64() / archive_median.as_secs_f64()
        );
        print_line("vm exec -- true (agent)", exec_median, &exec_times);
        Ok(())
    }

    /// Runs a command in the guest's `/root`, whatever the VM's workspace is.
    fn in_home(&self, vm: &str, command: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["vm", "exec", vm, "--guest-path", "/root", "--"];
        args.extend_from_slice(command);
        self.banger(&args)
    }

    fn prepare(&self, vm: &str, repo: &str, guest_path: &str) -> anyhow::Result<()> {
        self.banger(&[
            "vm",
            "workspace",
            "prepare",
            vm,
            repo,
            "--guest-path",
            guest_path,
        ])
    }

    /// Copies HEAD with `git archive | banger vm exec VM -- tar -x` into a
    /// fresh directory; only the pipeline is timed.
    fn archive_copy(&self, vm: &str, repo: &Path, tag: &str) -> anyhow::Result<Duration> {
        let dir = format!("/root/bench-archive-{tag}");
        self.in_home(vm, &["mkdir", "-p", &dir])?;
        let start = Instant::now();
        let mut archive = Command::new("git")
            .args(["archive", "HEAD"])
            .current_dir(repo)
            .stdout(Stdio::piped())
            .spawn()
            .context("failed to run git archive")?;
        let archive_out = archive.stdout.take().context("git archive has no stdout")?;
        let extract = Command::new(&self.banger)
            .args([
                "vm",
                "exec",
                vm,
                "--guest-path",
                "/root",
                "--",
                "tar",
                "-x",
                "-C",
                &dir,
            ])
            .stdin(archive_out)
            .output()
            .context("failed to run banger vm exec")?;
        let archived = archive.wait()?;
        let elapsed = start.elapsed();
        if !archived.success() || !extract.status.success() {
            bail!(
                "git archive | banger vm exec tar failed ({archived}, {}): {}",
                extract.status,
                String::from_utf8_lossy(&extract.stderr)
            );
        }
        self.in_home(vm, &["rm", "-rf", &dir])?;
        Ok(elapsed)
    }

    fn banger(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new(&self.banger)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("failed to run banger")?;
        if !output.status.success() {
            bail!(
                "banger {} failed ({}):\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

fn print_line(label: &str, median: Duration, sorted: &[Duration]) {
    println!(
        "{label}: median {:.3} s (min {:.3} s, max {:.3} s)",
        median.as_secs_f64(),
        sorted[0].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64()
    );
}

fn git_output(dir: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("failed to run git {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

/// A repository of text files with a short history, made with a fixed
/// pseudo-random sequence so every run copies the same bytes.
/// Rewrites one file of the generated repository and commits it.
fn add_commit(repo: &Path, run: usize) -> anyhow::Result<()> {
    let file = repo.join(format!("src/mod00/bench-run-{run}.txt"));
    std::fs::write(&file, format!("run {run}\n").repeat(64))?;
    git_output(repo, &["add", "-A"])?;
    git_output(repo, &["commit", "-q", "-m", &format!("bench run {run}")])?;
    Ok(())
}

fn generate_repo(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    let git = |args: &[&str]| git_output(path, args).map(drop);
    git(&["init", "-q", "-b", "main"])?;
    git(&["config", "user.name", "banger bench"])?;
    git(&["config", "user.email", "bench@banger.invalid"])?;
    let mut state: u32 = 0x2545_f491;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for commit in 0..GENERATED_COMMITS {
        for index in 0..GENERATED_FILES {
            if commit > 0 && index % GENERATED_COMMITS != commit {
                continue;
            }
            let file = path.join(format!("src/mod{:02}/file{index:04}.txt", index % 50));
            std::fs::create_dir_all(file.parent().context("file has a parent")?)?;
            let len = 512 + (next() % 16_384) as usize;
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
            for i in 0..len {
                let byte = if i % 64 == 63 {
                    b'\n'
                } else {
                    b'a' + (next() % 26) as u8
                };
                out.write_all(&[byte])?;
            }
            out.flush()?;
        }
        git(&["add", "-A"])?;
        git(&["commit", "-q", "-m", &format!("commit {commit}")])?;
    }
    Ok(())
}
