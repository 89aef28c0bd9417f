//! What the worker tells observers with its heartbeats: CPU use and timed transfers and
//! spills (`ActivityRecord`s), bounded per heartbeat so a burst cannot make heartbeats large.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kiln_protocol::messages::{ActivityKind, ActivityRecord, MAX_ACTIVITY_PER_HEARTBEAT};

/// Microseconds since the Unix epoch: the clock the dashboard's task stream is drawn in
/// (comparable across machines whose clocks are synchronised, as Dask's is).
pub(crate) fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Activity gathered between heartbeats.
#[derive(Default)]
pub(super) struct Activity {
    records: Vec<ActivityRecord>,
    dropped: u32,
    cpu: CpuMeter,
}

impl Activity {
    /// Notes a timed transfer, spill or read-back.
    pub fn push(&mut self, kind: ActivityKind, key: kiln_graph::Key, nbytes: u64, started_us: u64, duration_us: u64) {
        if self.records.len() < MAX_ACTIVITY_PER_HEARTBEAT {
            self.records.push(ActivityRecord { kind, key, nbytes, started_us, duration_us });
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// What the next heartbeat carries: CPU percent since the last one, the records and how
    /// many were dropped.
    pub fn take(&mut self) -> (f32, Vec<ActivityRecord>, u32) {
        (self.cpu.percent(), std::mem::take(&mut self.records), std::mem::take(&mut self.dropped))
    }
}

/// CPU use of this process between two readings, from `/proc/self/stat` (user + system
/// time). A worker running in-process (a thread-mode `LocalCluster`) reports its process's.
#[derive(Default)]
struct CpuMeter {
    last: Option<(Instant, u64)>,
}

impl CpuMeter {
    fn percent(&mut self) -> f32 {
        let Some(ticks) = cpu_ticks() else { return 0.0 };
        let now = Instant::now();
        let percent = match self.last {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                // SAFETY: sysconf only reads a configuration value.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                if wall > 0.0 { (ticks.saturating_sub(before) as f64 / hz / wall * 100.0) as f32 } else { 0.0 }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        percent
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain numbers: utime and stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_bounded_per_heartbeat_and_cpu_is_measured() {
        let mut a = Activity::default();
        for i in 0..MAX_ACTIVITY_PER_HEARTBEAT + 3 {
            a.push(ActivityKind::Spill, kiln_graph::Key::with_index("x", [i as u32]), 1, 1, 1);
        }
        let (_, records, dropped) = a.take();
        assert_eq!((records.len(), dropped), (MAX_ACTIVITY_PER_HEARTBEAT, 3));
        assert!(cpu_ticks().is_some());
        // Burn some CPU so the second reading sees time spent.
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        let (cpu, records, dropped) = a.take();
        assert!(cpu >= 0.0 && cpu.is_finite());
        assert_eq!((records.len(), dropped), (0, 0));
    }
}
