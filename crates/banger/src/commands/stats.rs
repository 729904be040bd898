//! `banger vm stats`: what a VM uses, on the host and inside the guest.

use banger_api::VmStats;

use super::Failure;
use crate::client::Client;
use crate::render::human_bytes as bytes;

pub async fn stats(name: String, json: bool) -> Result<u8, Failure> {
    let client = Client::connect().await?;
    let stats: VmStats = client.get(&format!("/vms/{name}/stats")).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("serialises")
        );
    } else {
        print!("{}", render(&stats));
    }
    Ok(0)
}

/// Formats the statistics as labelled lines.
fn render(stats: &VmStats) -> String {
    let mut lines = vec![format!("{} · {}", stats.name, stats.state)];
    if let Some(vmm) = &stats.vmm {
        let share = if vmm.uptime_seconds > 0.0 {
            format!(
                " ({:.0}% of one core)",
                100.0 * vmm.cpu_seconds / vmm.uptime_seconds
            )
        } else {
            String::new()
        };
        lines.push(format!(
            "  vmm     pid {} · up {} · cpu {:.1} s{share} · rss {}",
            vmm.pid,
            duration(vmm.uptime_seconds),
            vmm.cpu_seconds,
            bytes(vmm.rss_bytes)
        ));
    }
    if let Some(guest) = &stats.guest {
        let used = guest
            .memory_total_bytes
            .saturating_sub(guest.memory_available_bytes);
        lines.push(format!(
            "  guest   up {} · load {:.2} {:.2} {:.2} · memory {} used of {}",
            duration(guest.uptime_seconds),
            guest.load[0],
            guest.load[1],
            guest.load[2],
            bytes(used),
            bytes(guest.memory_total_bytes)
        ));
        for filesystem in &guest.filesystems {
            lines.push(format!(
                "  {:<7} {} used of {}",
                filesystem.mount,
                bytes(filesystem.used_bytes),
                bytes(filesystem.size_bytes)
            ));
        }
    }
    if let Some(reason) = &stats.guest_error {
        lines.push(format!("  guest   unavailable: {reason}"));
    }
    lines.push(format!(
        "  disks   {} allocated on the host",
        bytes(stats.disk_allocated_bytes)
    ));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Formats seconds as `1h02m`, `3m05s` or `42s`.
fn duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (hours, minutes, secs) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::{FilesystemStats, GuestStats, VmState, VmmStats};

    #[test]
    fn units_scale() {
        assert_eq!(duration(42.9), "42s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }

    #[test]
    fn running_vm_renders_every_part() {
        let stats = VmStats {
            name: "dev".into(),
            state: VmState::Running,
            disk_allocated_bytes: 900 << 20,
            vmm: Some(VmmStats {
                pid: 42,
                uptime_seconds: 100.0,
                cpu_seconds: 25.0,
                rss_bytes: 300 << 20,
            }),
            guest: Some(GuestStats {
                uptime_seconds: 95.0,
                load: [0.5, 0.25, 0.0],
                memory_total_bytes: 1000 << 20,
                memory_available_bytes: 800 << 20,
                filesystems: vec![FilesystemStats {
                    mount: "/root".into(),
                    size_bytes: 8 << 30,
                    used_bytes: 24 << 20,
                }],
            }),
            guest_error: None,
        };
        let text = render(&stats);
        assert!(text.starts_with("dev · running\n"), "{text}");
        assert!(
            text.contains("pid 42 · up 1m40s · cpu 25.0 s (25% of one core) · rss 300.0 MiB"),
            "{text}"
        );
        assert!(
            text.contains("load 0.50 0.25 0.00 · memory 200.0 MiB used of 1000.0 MiB"),
            "{text}"
        );
        assert!(
            text.contains("  /root   24.0 MiB used of 8.0 GiB"),
            "{text}"
        );
        assert!(text.contains("900.0 MiB allocated on the host"), "{text}");
    }

    #[test]
    fn stopped_vm_shows_only_disks() {
        let stats = VmStats {
            name: "dev".into(),
            state: VmState::Stopped,
            disk_allocated_bytes: 1 << 20,
            vmm: None,
            guest: None,
            guest_error: None,
        };
        assert_eq!(
            render(&stats),
            "dev · stopped\n  disks   1.0 MiB allocated on the host\n"
        );
    }
}
