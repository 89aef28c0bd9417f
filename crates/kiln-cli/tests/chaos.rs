//! Chaos: a two-worker cluster (a `kiln scheduler` and two nanny-supervised `kiln worker`
//! processes) under a random schedule of SIGKILL, SIGSTOP/SIGCONT and network cuts of its
//! workers while array, delayed, futures and memory-pressure (spilling past the workers' 64 MiB
//! limits) workloads run. Every answer is checked against the local scheduler (an error is
//! allowed only when it is the right one: `KilledWorker`, or a scattered value lost with its
//! only holder); every computation has a deadline, so a hang is caught and counted rather than
//! waited out; at the end the cluster must still compute, and no process or spill directory may
//! be left behind. Every unexpected error is printed in full, with the fault schedule.
//!
//! Network cuts need a network namespace (root and iproute2): one worker runs inside one,
//! joined to this host by a veth pair whose link a cut takes down for 1-8 s, across the
//! scheduler's 4 s worker timeout, so some cuts are noticed (the worker is dropped and rejoins)
//! and some only delay. Without a namespace the cuts are left out, with a printed note.
//!
//! CI runs it for `KILN_CHAOS_SECS` (default 20) seconds; `bench/chaos.sh` runs it for longer
//! and records the RESULT line (`faults`, `computations`, `wrong`, `hangs`, ...). The schedule is
//! random; `KILN_CHAOS_SEED` replays one (the seed is printed).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use kiln::Collection;
use kiln::array::random::RandomState;
use kiln::delayed::func1;
use kiln::local::LocalScheduler;
use kiln_distributed::Client;

mod support;
use support::{Guard, Netns, effective_uid, grid_total, processes_mentioning};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A computation that takes longer than this on a two-worker debug cluster is hung.
const DEADLINE: Duration = Duration::from_secs(120);

/// Seconds without a heartbeat before the scheduler drops a worker: inside the range of cut
/// lengths, so both a noticed and an unnoticed cut happen.
const WORKER_TIMEOUT_SECS: &str = "4";

/// xorshift64*: enough randomness for a fault schedule, replayable from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// One workload, chosen by `kind`, run on `client` and checked against the local scheduler:
/// `Ok(true)` right, `Ok(false)` wrong, `Err` a reported error.
fn workload(client: &Client, kind: u64, seed: u64) -> Result<bool, kiln::ComputeError> {
    let local = LocalScheduler::threads(1);
    match kind {
        0 => {
            let x = RandomState::new(seed).random(&[1200, 1200], [200, 200]);
            let y = (&x + &x.t() - &x.mean_axis(0)).std();
            let want = y.compute_on(&local).unwrap().first().copied().unwrap();
            Ok(close(y.compute_on(client)?.first().copied().unwrap(), want))
        }
        1 => {
            let side = 3 + (seed % 6) as i64;
            let want = grid_total(side).compute_on(&local).unwrap();
            Ok(grid_total(side).compute_on(client)? == want)
        }
        2 => {
            // Futures: scatter, map a registered function over the scattered values, gather.
            let sum = func1("sum", |v: &Vec<i64>| v.iter().sum::<i64>()).portable("kiln.demo.sum");
            let items: Vec<Vec<i64>> = (0..40).map(|i| (0..(i + seed as i64 % 7)).collect()).collect();
            let want: Vec<i64> = items.iter().map(|v| v.iter().sum()).collect();
            let scattered = client.scatter(items)?;
            let futures = client.map(&sum, scattered.iter().map(|f| f.to_delayed()))?;
            Ok(client.gather(&futures)? == want)
        }
        _ => {
            // Memory pressure: 72 MB persisted over two workers limited to 64 MB each, so both
            // spill, then read twice.
            let x = RandomState::new(seed).random(&[3000, 3000], [300, 300]);
            let want = x.sum().compute_on(&local).unwrap().first().copied().unwrap();
            let persisted = client.persist(&x)?;
            let first = persisted.sum().compute_on(client)?.first().copied().unwrap();
            let second = persisted.sum().compute_on(client)?.first().copied().unwrap();
            Ok(close(first, want) && close(second, want))
        }
    }
}

fn spill_directories_of(pids: &BTreeSet<u32>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| pids.iter().any(|pid| name.starts_with(&format!("kiln-worker-{pid}-"))))
        .collect()
}

/// The children of process `pid` (a nanny forks its worker from its only thread).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// A `kiln scheduler` process and two `kiln worker` processes under nannies; with a network
/// namespace, the second worker runs inside it and everything talks over the host's end of its
/// link (the scheduler listens on all interfaces).
struct Cluster {
    scheduler: Guard,
    nannies: Vec<Guard>,
    /// The scheduler's address as the workers were given it (their command lines name it).
    worker_address: String,
    /// The scheduler's address for this process's client.
    client_address: String,
}

impl Cluster {
    fn start(netns: Option<&Netns>) -> Cluster {
        let host = if netns.is_some() { "0.0.0.0" } else { "127.0.0.1" };
        let mut child = Command::new(KILN)
            .args(["scheduler", "--host", host, "--port", "0", "--worker-timeout", WORKER_TIMEOUT_SECS])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let scheduler = Guard(child);
        let port = line.trim().rsplit(':').next().unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
        let ip = netns.map_or("127.0.0.1", |ns| ns.host_ip.as_str());
        let worker_address = format!("tcp://{ip}:{port}");
        let worker = |inside: Option<&Netns>, name: &str| {
            let mut command = match inside {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", &ns.name, KILN]);
                    c
                }
                None => Command::new(KILN),
            };
            let listen = inside.map_or(ip, |ns| ns.ns_ip.as_str());
            command
                .args(["worker", &worker_address, "--nthreads", "1", "--memory-limit", "67108864"])
                .args(["--host", listen, "--name", name])
                // Warnings (restarts, pauses, lost peers) show beside the test's own lines.
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null());
            Guard(command.spawn().unwrap())
        };
        let nannies =
            vec![worker(None, "chaos-a"), worker(netns, if netns.is_some() { "chaos-cut" } else { "chaos-b" })];
        Cluster { scheduler, nannies, worker_address, client_address: format!("127.0.0.1:{port}") }
    }

    /// The worker processes (the nannies' children) now.
    fn worker_pids(&self) -> Vec<u32> {
        self.nannies.iter().flat_map(|n| children_of(n.0.id())).collect()
    }

    /// Stops the nannies (SIGTERM: each passes it on and its worker leaves), then the scheduler.
    fn stop(mut self) {
        for nanny in &self.nannies {
            signal(nanny.0.id(), "-TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for nanny in &mut self.nannies {
            while nanny.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        signal(self.scheduler.0.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.scheduler.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The guards kill whatever did not stop.
    }
}

/// Faults done so far, for the report: `t=<seconds> <what>`.
struct Schedule {
    start: Instant,
    faults: Mutex<Vec<String>>,
}

impl Schedule {
    fn note(&self, what: String) {
        self.faults.lock().unwrap().push(format!("t={:.1}s {what}", self.start.elapsed().as_secs_f64()));
    }
}

#[test]
fn a_cluster_under_random_faults_gives_right_answers_or_clear_errors_and_never_hangs() {
    let secs: u64 = std::env::var("KILN_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("KILN_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("chaos: {secs} s, KILN_CHAOS_SEED={seed}");
    let netns = Netns::create(215, std::process::id() % 10_000);
    if netns.is_none() {
        let root = effective_uid() == Some(0);
        assert!(!root, "running as root but cannot create a network namespace with iproute2 (`ip netns add`)");
        eprintln!("chaos: NOTE: no network cuts (they need root for `ip netns`); kills and pauses only");
    }
    let cluster = Cluster::start(netns.as_ref());
    let client = Client::connect(&cluster.client_address).unwrap();
    client.wait_for_workers(2, Duration::from_secs(60)).unwrap();

    let stop = AtomicBool::new(false);
    let (kills, pauses, cuts) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let schedule = Schedule { start: Instant::now(), faults: Mutex::new(Vec::new()) };
    let mut seen_pids: BTreeSet<u32> = BTreeSet::new();
    let (mut right, mut wrong, mut hangs) = (0usize, 0usize, 0usize);
    let mut errors: Vec<(u64, u64, kiln::ComputeError)> = Vec::new();
    let mut kinds_run = [0usize; 4];

    std::thread::scope(|scope| {
        let faults = scope.spawn(|| {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut pids = BTreeSet::new();
            let mut recent_kills: Vec<Instant> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(rng.millis(1500, 4000));
                let workers = cluster.worker_pids();
                pids.extend(workers.iter().copied());
                let Some(&victim) = workers.get(rng.below(workers.len().max(1) as u64) as usize) else { continue };
                // Kills are rarer than pauses, and at most four a minute: a nanny gives up on a
                // worker that dies five times a minute, as it should (a 300 s run without this
                // cap lost a worker for good that way).
                recent_kills.retain(|t: &Instant| t.elapsed() < Duration::from_secs(60));
                let roll = rng.below(10);
                if roll < 3 && recent_kills.len() < 4 {
                    recent_kills.push(Instant::now());
                    if signal(victim, "-KILL") {
                        kills.fetch_add(1, Ordering::Relaxed);
                        schedule.note(format!("SIGKILL worker {victim}"));
                    }
                } else if let (true, Some(ns)) = (roll >= 7, &netns) {
                    let length = rng.millis(1000, 8000);
                    schedule.note(format!("network cut of the namespaced worker for {length:?}"));
                    ns.link(false);
                    cuts.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(length);
                    ns.link(true);
                } else if signal(victim, "-STOP") {
                    pauses.fetch_add(1, Ordering::Relaxed);
                    let length = rng.millis(300, 2500);
                    schedule.note(format!("SIGSTOP worker {victim} for {length:?}"));
                    std::thread::sleep(length);
                    signal(victim, "-CONT");
                }
            }
            pids
        });

        let mut rng = Rng(seed | 1);
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let (kind, work_seed) = (rng.below(4), rng.next() % 1_000_000);
            kinds_run[kind as usize] += 1;
            let (tx, rx) = mpsc::channel();
            // A thread the loop does not join on a hang: a hung computation must not hang the
            // test (the cluster's processes are stopped at the end, which ends the thread).
            let handle = std::thread::Builder::new()
                .spawn({
                    let client = client.clone();
                    move || {
                        let _ = tx.send(workload(&client, kind, work_seed));
                    }
                })
                .unwrap();
            let at = schedule.start.elapsed().as_secs_f64();
            match rx.recv_timeout(DEADLINE) {
                Ok(Ok(true)) => right += 1,
                Ok(Ok(false)) => {
                    wrong += 1;
                    eprintln!("chaos: t={at:.1}s workload {kind} (seed {work_seed}) gave a WRONG answer");
                }
                Ok(Err(error)) => {
                    eprintln!("chaos: t={at:.1}s workload {kind} (seed {work_seed}) failed: {error} ({error:?})");
                    errors.push((kind, work_seed, error));
                }
                Err(_) => {
                    hangs += 1;
                    eprintln!("chaos: t={at:.1}s workload {kind} (seed {work_seed}) HUNG past {DEADLINE:?}");
                    break;
                }
            }
            if hangs == 0 {
                let _ = handle.join();
            }
        }
        stop.store(true, Ordering::Relaxed);
        seen_pids = faults.join().unwrap();
    });

    // Every paused worker was continued and every cut mended; the nannies bring killed ones
    // back, and a dropped worker rejoins.
    let recovered = hangs == 0 && client.wait_for_workers(2, Duration::from_secs(60)).is_ok();
    let after = recovered && matches!(workload(&client, 1, 7), Ok(true));
    let (k, p, c) = (kills.load(Ordering::Relaxed), pauses.load(Ordering::Relaxed), cuts.load(Ordering::Relaxed));
    let computations = right + wrong + errors.len() + hangs;
    drop(client);
    let worker_address = cluster.worker_address.clone();
    cluster.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    let leaked = loop {
        let left = processes_mentioning(&worker_address);
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let leaked_dirs = spill_directories_of(&seen_pids);
    // Two errors are the right answer to these faults: a task whose worker died three times
    // (KilledWorker), and a scattered value whose only holder was killed or dropped (it exists
    // nowhere else and cannot be recomputed, as in Dask). Any other error is a bug.
    let unclear: Vec<String> = errors
        .iter()
        .filter(|(_, _, e)| !matches!(e, kiln::ComputeError::KilledWorker { .. }))
        .filter(|(_, _, e)| !e.to_string().contains("scattered by a client and is lost"))
        .map(|(kind, work_seed, e)| format!("workload {kind} (seed {work_seed}): {e} ({e:?})"))
        .collect();
    let failed =
        wrong > 0 || hangs > 0 || !after || !leaked.is_empty() || !leaked_dirs.is_empty() || !unclear.is_empty();
    if failed || std::env::var_os("KILN_CHAOS_SCHEDULE").is_some() {
        eprintln!("chaos: the fault schedule (seed {seed}):");
        for fault in schedule.faults.lock().unwrap().iter() {
            eprintln!("chaos:   {fault}");
        }
        for error in &unclear {
            eprintln!("chaos: UNEXPECTED ERROR {error}");
        }
    }
    println!(
        "RESULT seconds={secs} seed={seed} faults={} kills={k} pauses={p} cuts={c} computations={computations} \
         right={right} errors={} wrong={wrong} hangs={hangs} recovered={after} leaked_processes={} \
         leaked_spill_dirs={} kinds=array:{}/delayed:{}/futures:{}/pressure:{}",
        k + p + c,
        errors.len(),
        leaked.len(),
        leaked_dirs.len(),
        kinds_run[0],
        kinds_run[1],
        kinds_run[2],
        kinds_run[3]
    );
    assert_eq!(wrong, 0, "wrong answers under faults (seed {seed})");
    assert_eq!(hangs, 0, "a computation hung (seed {seed})");
    assert!(after, "the cluster did not recover after the faults stopped (seed {seed})");
    assert!(leaked.is_empty(), "processes left behind: {leaked:?}");
    assert!(leaked_dirs.is_empty(), "spill directories left behind: {leaked_dirs:?}");
    assert!(unclear.is_empty(), "errors other than KilledWorker (seed {seed}):\n{}", unclear.join("\n"));
    assert!(computations > 0 && k + p + c > 0, "nothing happened in {secs} s");
}
