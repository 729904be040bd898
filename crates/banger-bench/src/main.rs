//! `banger-bench`: measures `banger vm run --rm -- true` against a plain QEMU
//! invocation of the same kernel, initramfs and root file system that
//! reaches the same point (the guest agent has run `true`).
//!
//! Both sides run with warm caches: the kernel, the initramfs and the image
//! are in the cache before the first timed run. The plain side gets its disk
//! copies made before its timer starts, so the ratio shows what banger adds:
//! the daemon round trips, the disk copy and work disk, the agent injection,
//! and the deletion.

mod plain;
mod workspace;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Timed runs per side.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Directory holding banger, bangerd and banger-agent.
    #[arg(long, env = "BANGER_BIN_DIR", default_value = "target/banger")]
    bin_dir: PathBuf,
    /// vCPUs and memory (MiB) of every guest, the same on both sides.
    #[arg(long, default_value_t = 2)]
    vcpus: u32,
    #[arg(long, default_value_t = 1024)]
    memory_mib: u32,
    /// Measure workspaces instead: `vm workspace prepare` against
    /// `git archive | vm exec tar -x`, and the `vm exec -- true` round trip.
    #[arg(long)]
    workspace: bool,
    /// Repository copied by --workspace [default: a generated one].
    #[arg(long, requires = "workspace")]
    repo: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let banger = std::fs::canonicalize(args.bin_dir.join("banger"))
        .with_context(|| format!("banger not found in {}", args.bin_dir.display()))?;
    if args.workspace {
        let bench = workspace::WorkspaceBench {
            banger,
            runs: args.runs,
            vcpus: args.vcpus,
            memory_mib: args.memory_mib,
            repo: args.repo,
        };
        return bench.run();
    }
    let vcpus = args.vcpus.to_string();
    let memory = args.memory_mib.to_string();
    let run_args = [
        "vm", "run", "--rm", "--vcpu", &vcpus, "--memory", &memory, "--", "true",
    ];

    eprintln!(
        "warming the caches: banger vm run (pulls the kernel and builds the image when missing)"
    );
    time_banger(&banger, &run_args)?;

    let mut banger_times = Vec::new();
    for run in 1..=args.runs {
        let elapsed = time_banger(&banger, &run_args)?;
        eprintln!("banger run {run}: {:.2} s", elapsed.as_secs_f64());
        banger_times.push(elapsed);
    }

    let setup = plain::Setup::from_banger_cache(&args.bin_dir.join("banger-agent"))?;
    let mut plain_times = Vec::new();
    for run in 1..=args.runs {
        let elapsed = setup.run_once(args.vcpus, args.memory_mib)?;
        eprintln!("plain QEMU run {run}: {:.2} s", elapsed.as_secs_f64());
        plain_times.push(elapsed);
    }

    let banger_median = median(&mut banger_times);
    let plain_median = median(&mut plain_times);
    println!("runs per side: {}", args.runs);
    println!(
        "banger vm run --rm -- true: median {:.2} s (min {:.2} s, max {:.2} s)",
        banger_median.as_secs_f64(),
        banger_times[0].as_secs_f64(),
        banger_times[banger_times.len() - 1].as_secs_f64()
    );
    println!(
        "plain QEMU to the same point: median {:.2} s (min {:.2} s, max {:.2} s)",
        plain_median.as_secs_f64(),
        plain_times[0].as_secs_f64(),
        plain_times[plain_times.len() - 1].as_secs_f64()
    );
    println!(
        "ratio banger / plain: {:.2}",
        banger_median.as_secs_f64() / plain_median.as_secs_f64()
    );
    Ok(())
}

fn time_banger(banger: &PathBuf, args: &[&str]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let output = Command::new(banger)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("failed to run banger")?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "banger {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

/// Sorts `times` and returns their median.
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    let mid = times.len() / 2;
    if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2
    }
}
