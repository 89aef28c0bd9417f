//! A worker under a memory limit, alone in its test binary: its peak memory is what is
//! measured, so no other cluster of this file's neighbours competes for the two cores while it
//! spills (test binaries run one at a time; the tests inside one run together).

use std::time::{Duration, Instant};

use kiln::Collection;
use kiln::array::random::RandomState;
use kiln::local::LocalScheduler;
use kiln_distributed::LocalCluster;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_worker_spills_three_times_its_memory_limit_and_stays_under_it() {
    let limit: u64 = 128 << 20;
    let cluster = LocalCluster::builder().workers(1).memory_limit(limit).binary(KILN).start().unwrap();
    let client = cluster.client().unwrap();
    // 7000² f64 = 392 MB (3× the limit) in 100 chunks of 3.9 MB, all kept.
    let x = RandomState::new(3).random(&[7000, 7000], [700, 700]);
    let persisted = client.persist(&x).unwrap();
    let expected = x.sum().compute_on(&LocalScheduler::new()).unwrap().first().copied().unwrap();
    for _ in 0..2 {
        let total = persisted.sum().compute_on(&client).unwrap().first().copied().unwrap();
        assert!((total - expected).abs() <= 1e-9 * expected.abs(), "{total} vs {expected}");
    }
    let pid = cluster.worker_pids()[0];
    let peak = peak_rss(pid);
    // The worker reports what it spilled with its next heartbeat.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = client.worker_memory().unwrap()[0];
        if report.spilled > 0 || Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "worker peak RSS {} MB for {} MB of persisted data, limit {} MB; reported {} MB managed, {} MB spilled",
        peak >> 20,
        x.nbytes() >> 20,
        limit >> 20,
        report.managed >> 20,
        report.spilled >> 20
    );
    assert!(peak < limit, "worker peak RSS {} MB exceeds its {} MB limit", peak >> 20, limit >> 20);
    assert!(report.managed + report.spilled >= x.nbytes() as u64, "{report:?}");
    assert!(report.spilled >= x.nbytes() as u64 / 2, "{report:?}");
}
