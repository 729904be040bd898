//! `GET /v1/vms/{name}/stats`: what a VM uses, from the host (VMM process,
//! disk files) and from inside the guest (load, memory, file systems).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as RoutePath, State};
use banger_api::{FilesystemStats, GuestStats, VmState, VmStats, VmmStats};

use crate::daemon::Daemon;
use crate::error::ApiResult;
use crate::vms::runtime_process;

/// Deadline for the guest's report.
const GUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The guest command that prints uptime, load, memory and file system
/// usage; [`parse_guest_report`] reads its output.
const GUEST_REPORT: &str = "cat /proc/uptime /proc/loadavg; \
    grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; \
    df -P -B1 / /root";

pub async fn stats(
    State(daemon): State<Arc<Daemon>>,
    RoutePath(name): RoutePath<String>,
) -> ApiResult<Json<VmStats>> {
    let vm = daemon.vm_record(&name)?;
    let disk_allocated_bytes = allocated_bytes(&daemon.paths.vm_dir(&vm.id));
    let mut stats = VmStats {
        name: vm.name.clone(),
        state: vm.state,
        disk_allocated_bytes,
        vmm: None,
        guest: None,
        guest_error: None,
    };
    if vm.state != VmState::Running {
        return Ok(Json(stats));
    }
    stats.vmm = runtime_process(&vm).and_then(|process| vmm_stats(process.pid));
    match daemon
        .guest_output(&vm, &["sh", "-c", GUEST_REPORT], GUEST_TIMEOUT)
        .await
    {
        Ok((status, stdout, _)) if status.code == Some(0) => {
            match parse_guest_report(&String::from_utf8_lossy(&stdout)) {
                Some(guest) => stats.guest = Some(guest),
                None => stats.guest_error = Some("the guest's report could not be read".into()),
            }
        }
        Ok((status, _, stderr)) => {
            stats.guest_error = Some(format!(
                "the guest's report failed ({}): {}",
                status.shell_code(),
                String::from_utf8_lossy(&stderr).trim()
            ));
        }
        Err(error) => stats.guest_error = Some(error.to_string()),
    }
    if let Some(reason) = &stats.guest_error {
        tracing::warn!(vm = %vm.name, %reason, "no guest statistics");
    }
    Ok(Json(stats))
}

/// Sums the allocated size of the files directly in `dir`.
fn allocated_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.blocks() * 512)
        .sum()
}

/// Reads a process's CPU time, resident memory and age from `/proc`.
fn vmm_stats(pid: u32) -> Option<VmmStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_process(pid, &stat, &status, &uptime, u64::try_from(ticks).ok()?)
}

fn parse_process(pid: u32, stat: &str, status: &str, uptime: &str, ticks: u64) -> Option<VmmStats> {
    if ticks == 0 {
        return None;
    }
    // Fields after the command name, which is in parentheses and may
    // contain spaces: field 3 is the state, so utime (14) is at index 11.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let host_uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let ticks = ticks as f64;
    Some(VmmStats {
        pid,
        uptime_seconds: (host_uptime - start as f64 / ticks).max(0.0),
        cpu_seconds: (utime + stime) as f64 / ticks,
        rss_bytes: rss_kib * 1024,
    })
}

/// Parses the output of [`GUEST_REPORT`].
fn parse_guest_report(text: &str) -> Option<GuestStats> {
    let mut lines = text.lines();
    let uptime_seconds = lines.next()?.split_whitespace().next()?.parse().ok()?;
    let mut load = lines.next()?.split_whitespace().map(str::parse::<f64>);
    let load = [load.next()?.ok()?, load.next()?.ok()?, load.next()?.ok()?];
    let mut memory_total_bytes = None;
    let mut memory_available_bytes = None;
    let mut filesystems = Vec::new();
    for line in lines {
        let kib = |rest: &str| -> Option<u64> {
            Some(rest.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
        };
        if let Some(rest) = line.strip_prefix("MemTotal:") {
            memory_total_bytes = kib(rest);
        } else if let Some(rest) = line.strip_prefix("MemAvailable:") {
            memory_available_bytes = kib(rest);
        } else if line.starts_with('/') {
            // Filesystem 1-blocks Used Available Capacity Mounted-on
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [_, size, used, _, _, mount] = fields.as_slice() {
                filesystems.push(FilesystemStats {
                    mount: (*mount).to_owned(),
                    size_bytes: size.parse().ok()?,
                    used_bytes: used.parse().ok()?,
                });
            }
        }
    }
    Some(GuestStats {
        uptime_seconds,
        load,
        memory_total_bytes: memory_total_bytes?,
        memory_available_bytes: memory_available_bytes?,
        filesystems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_report_parses() {
        let report = "\
12.34 20.00
0.52 0.31 0.10 1/98 412
MemTotal:        1003452 kB
MemAvailable:     801234 kB
Filesystem         1-blocks      Used  Available Capacity Mounted on
/dev/vda         2040373248 912345088 1023020032      48% /
/dev/vdb         8350298112  24576000 7872000000       1% /root
";
        let guest = parse_guest_report(report).unwrap();
        assert_eq!(guest.uptime_seconds, 12.34);
        assert_eq!(guest.load, [0.52, 0.31, 0.10]);
        assert_eq!(guest.memory_total_bytes, 1003452 * 1024);
        assert_eq!(guest.memory_available_bytes, 801234 * 1024);
        assert_eq!(guest.filesystems.len(), 2);
        assert_eq!(guest.filesystems[1].mount, "/root");
        assert_eq!(guest.filesystems[1].size_bytes, 8350298112);
        assert_eq!(guest.filesystems[1].used_bytes, 24576000);
    }

    #[test]
    fn guest_report_without_memory_is_rejected() {
        assert_eq!(parse_guest_report("1.0 2.0\n0.1 0.2 0.3 1/2 3\n"), None);
        assert_eq!(parse_guest_report(""), None);
    }

    #[test]
    fn process_figures_parse_with_spaces_in_the_name() {
        let stat = "4242 (qemu system x86) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123456 789";
        let status = "Name:\tqemu\nVmRSS:\t  204800 kB\n";
        let vmm = parse_process(4242, stat, status, "110.00 200.00", 100).unwrap();
        assert_eq!(vmm.pid, 4242);
        assert_eq!(vmm.cpu_seconds, 3.0);
        assert_eq!(vmm.rss_bytes, 204800 * 1024);
        assert!(
            (vmm.uptime_seconds - 100.0).abs() < 1e-9,
            "{}",
            vmm.uptime_seconds
        );
    }

    #[test]
    fn allocated_bytes_counts_blocks_not_length() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        std::fs::write(dir.path().join("data"), vec![1u8; 8192]).unwrap();
        let allocated = allocated_bytes(dir.path());
        assert!((8192..1 << 20).contains(&allocated), "{allocated}");
    }
}
