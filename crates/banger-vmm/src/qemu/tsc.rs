//! Host TSC frequency, passed to TCG guests as `tsc_early_khz`.
//!
//! Under TCG the guest's TSC is the host's TSC (QEMU 7.2 without `-icount`),
//! and the guest kernel calibrates it against the emulated PIT. When the host
//! is busy, that calibration fails ("tsc: Unable to calibrate against PIT"),
//! and the Debian 6.1 cloud kernel then hangs early in boot. Measured on a
//! 2-core development VM with two busy processes: three of three boots hung,
//! and with `tsc_early_khz` set, the boot completed in about 5 s.

use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// Interval over which the TSC is measured.
const MEASURE_INTERVAL: Duration = Duration::from_millis(100);

/// Samples per endpoint; the one with the shortest clock read-around wins,
/// which filters out preemption between the two reads.
const SAMPLES: usize = 5;

/// Plausible TSC frequencies in kHz: 100 MHz to 10 GHz.
const PLAUSIBLE_KHZ: std::ops::RangeInclusive<u64> = 100_000..=10_000_000;

/// Returns the host TSC frequency in kHz, measured once per process against
/// the monotonic clock; `None` on non-x86_64 hosts or an implausible result.
pub async fn host_tsc_khz() -> Option<u64> {
    static TSC_KHZ: OnceCell<Option<u64>> = OnceCell::const_new();
    *TSC_KHZ
        .get_or_init(|| async {
            let khz = measure_tsc_khz().await;
            tracing::debug!(?khz, "measured host TSC frequency");
            khz
        })
        .await
}

#[cfg(target_arch = "x86_64")]
async fn measure_tsc_khz() -> Option<u64> {
    let (start_tsc, start_time) = sample();
    tokio::time::sleep(MEASURE_INTERVAL).await;
    let (end_tsc, end_time) = sample();

    let ticks = u128::from(end_tsc.checked_sub(start_tsc)?);
    let nanos = end_time.checked_duration_since(start_time)?.as_nanos();
    if nanos == 0 {
        return None;
    }
    let khz = u64::try_from(ticks * 1_000_000 / nanos).ok()?;
    PLAUSIBLE_KHZ.contains(&khz).then_some(khz)
}

#[cfg(not(target_arch = "x86_64"))]
async fn measure_tsc_khz() -> Option<u64> {
    None
}

/// Reads the TSC and returns it with the clock time at that moment, keeping
/// the tightest of several tries.
#[cfg(target_arch = "x86_64")]
fn sample() -> (u64, Instant) {
    let mut best = read_tsc_between_clocks();
    for _ in 1..SAMPLES {
        let next = read_tsc_between_clocks();
        if next.0 < best.0 {
            best = next;
        }
    }
    (best.1, best.2)
}

/// Returns the time between the two clock reads, the TSC read between them,
/// and the midpoint of the clock reads.
#[cfg(target_arch = "x86_64")]
fn read_tsc_between_clocks() -> (Duration, u64, Instant) {
    let before = Instant::now();
    // SAFETY: RDTSC exists on every x86_64 CPU and only reads the time stamp
    // counter; it touches no memory.
    let tsc = unsafe { std::arch::x86_64::_rdtsc() };
    let after = Instant::now();
    let spread = after.duration_since(before);
    (spread, tsc, before + spread / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[tokio::test]
    async fn tsc_measurement_is_stable() {
        let first = measure_tsc_khz().await.expect("x86_64 hosts have a TSC");
        let second = measure_tsc_khz().await.expect("x86_64 hosts have a TSC");
        let difference = first.abs_diff(second);
        // Two measurements of a constant-rate TSC agree to well under 5 %.
        assert!(
            difference * 20 < first,
            "{first} kHz and {second} kHz differ"
        );
        assert_eq!(host_tsc_khz().await, host_tsc_khz().await, "cached");
    }
}
