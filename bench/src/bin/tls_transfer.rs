//! TLS against plain TCP (issue 12), side by side on one machine: a `LocalCluster` of 2
//! single-threaded worker processes on loopback, once plain (`tcp://`) and once secure
//! (`.secure(true)`: TLS 1.3 with mutual authentication, certificates generated at start).
//!
//! 1. Large-value transfer: a `--mib` MiB `Vec<f64>` (default 1 GiB) made on one worker is
//!    moved to the other by a task that also reads a slightly larger value held there (the
//!    scheduler runs a task where most of its input bytes are, so the smaller one moves). The
//!    time of that task, from submit to result, is the transfer (its own work is a length).
//!    Bar: TLS ≥ 70 % of TCP's throughput.
//! 2. Trivial-task throughput: the foundation graph of `distributed_overhead` (`--n` `inc`
//!    tasks feeding an 8-ary tree of sums). Bar: TLS within 10 % of TCP.
//!
//! Each: one untimed warm-up, then `--runs` timed runs; medians compared. The program is its own
//! worker binary.
//!
//! `cargo run --release -p kiln-bench --bin tls_transfer -- [--mib 1024] [--n 100000] [--runs 3]`

use std::time::{Duration, Instant};

use kiln_bench::{arg, median};
use kiln_delayed::func2;
use kiln_distributed::{Client, LocalCluster, run_worker_if_requested};
use kiln_graph::{KernelRegistry, Scheduler};

fn make() -> kiln_delayed::Func2<i64, i64, Vec<f64>> {
    // `salt` only makes each run's key new.
    func2("make", |n: &i64, salt: &i64| vec![*salt as f64; *n as usize]).portable("bench.tls.make")
}

fn lengths() -> kiln_delayed::Func2<Vec<f64>, Vec<f64>, i64> {
    func2("lengths", |a: &Vec<f64>, b: &Vec<f64>| (a.len() + b.len()) as i64).portable("bench.tls.lengths")
}

/// Seconds to move `elems` f64s from one worker to the other, per run (the first is a warm-up).
fn transfers(client: &Client, elems: i64, runs: usize) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    let mut salt = 0;
    while times.len() <= runs {
        salt += 2;
        // Submitted together, so the two idle workers take one each (usually).
        let mut made = client.submit_all(vec![make().call(elems, salt), make().call(elems + 1024, salt + 1)])?;
        let (large, small) = (made.pop().expect("two futures"), made.pop().expect("two futures"));
        small.wait()?;
        large.wait()?;
        let holders = client.who_has(&[small.key().clone(), large.key().clone()])?;
        if holders[0].is_empty() || holders[0] == holders[1] {
            // Both landed on one worker: nothing would move. Try again with new keys.
            println!("  both values on one worker; again");
            continue;
        }
        let t = Instant::now();
        let reader = client.submit(lengths().call(&small, &large))?;
        let both = reader.result()?;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(both, 2 * elems + 1024);
        // It ran beside the larger value, so the smaller one crossed between the workers.
        let ran_on = client.who_has(&[reader.key().clone()])?;
        assert!(!ran_on[0].is_empty() && ran_on[0] != holders[0], "the reader ran where the small value was");
        println!(
            "  {}: {:.3} s = {:.2} GB/s",
            if times.is_empty() { "warm-up".to_string() } else { format!("run {}", times.len()) },
            secs,
            elems as f64 * 8.0 / secs / 1e9
        );
        times.push(secs);
        drop((small, large));
        // Let the workers free both values before the next run makes new ones.
        std::thread::sleep(Duration::from_millis(300));
    }
    times.remove(0);
    Ok(times)
}

fn task_runs(client: &Client, n: usize, runs: usize) -> Result<(usize, Vec<f64>), Box<dyn std::error::Error>> {
    let (inc, add) = kiln_bench::portable_foundation_kernels();
    let mut times = Vec::new();
    let mut tasks = 0;
    for rep in 0..=runs {
        let (graph, root) = kiln_bench::foundation_graph(n, 8, &inc, &add);
        tasks = graph.len();
        let t = Instant::now();
        Scheduler::compute(client, &graph, &[root])?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  {}: {secs:.3} s = {:.0} tasks/s",
            if rep == 0 { "warm-up".to_string() } else { format!("run {rep}") },
            tasks as f64 / secs
        );
        if rep > 0 {
            times.push(secs);
        }
    }
    Ok((tasks, times))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = KernelRegistry::global();
    registry.register_instance(make().kernel());
    registry.register_instance(lengths().kernel());
    let (inc, add) = kiln_bench::portable_foundation_kernels();
    registry.register_instance(inc);
    registry.register_instance(add);
    run_worker_if_requested();

    let mib: i64 = arg("--mib", 1024);
    let n: usize = arg("--n", 100_000);
    let runs: usize = arg("--runs", 3);
    let elems = mib * (1 << 20) / 8;
    let mut transfer = Vec::new();
    let mut tasks = Vec::new();
    let mut graph_tasks = 0;
    for secure in [false, true] {
        let name = if secure { "tls" } else { "tcp" };
        let cluster = LocalCluster::builder()
            .workers(2)
            .threads_per_worker(1)
            .binary(std::env::current_exe()?)
            .secure(secure)
            .start()?;
        let client = cluster.client()?;
        println!("{name}: cluster at {}", cluster.address());
        println!("{name}: moving {mib} MiB between the two workers");
        transfer.push(median(&transfers(&client, elems, runs)?));
        println!("{name}: {n} trivial tasks");
        let (count, times) = task_runs(&client, n, runs)?;
        graph_tasks = count;
        tasks.push(median(&times));
        drop(client);
        cluster.close();
    }
    let gbs = |secs: f64| elems as f64 * 8.0 / secs / 1e9;
    let tps = |secs: f64| graph_tasks as f64 / secs;
    let transfer_ratio = transfer[0] / transfer[1];
    let task_ratio = tasks[0] / tasks[1];
    println!(
        "transfer of {mib} MiB: tcp {:.2} GB/s, tls {:.2} GB/s: TLS at {:.0} % of TCP (bar >= 70 %: {})",
        gbs(transfer[0]),
        gbs(transfer[1]),
        transfer_ratio * 100.0,
        if transfer_ratio >= 0.7 { "met" } else { "MISSED" }
    );
    println!(
        "{graph_tasks} trivial tasks: tcp {:.0} tasks/s, tls {:.0} tasks/s: TLS at {:.0} % of TCP (bar >= 90 %: {})",
        tps(tasks[0]),
        tps(tasks[1]),
        task_ratio * 100.0,
        if task_ratio >= 0.9 { "met" } else { "MISSED" }
    );
    println!(
        "RESULT mib={mib} tasks={graph_tasks} runs={runs} workers=2 tcp_transfer_s={:.3} tls_transfer_s={:.3} \
         tcp_transfer_gbs={:.2} tls_transfer_gbs={:.2} transfer_ratio={transfer_ratio:.3} tcp_tasks_per_s={:.0} \
         tls_tasks_per_s={:.0} tasks_ratio={task_ratio:.3} transfer_bar_met={} tasks_bar_met={}",
        transfer[0],
        transfer[1],
        gbs(transfer[0]),
        gbs(transfer[1]),
        tps(tasks[0]),
        tps(tasks[1]),
        transfer_ratio >= 0.7,
        task_ratio >= 0.9
    );
    Ok(())
}
