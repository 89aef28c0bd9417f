//! The local scheduler's memory limit (issue 11): sources wait while held results are over the
//! target, values spill to disk past the limit and come back identical, values without a codec
//! stay in memory and are counted, spill failures are clear errors, and the spill directory
//! never outlives its run. Every spill test writes real files under its own directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_graph::kernel::{func1, input, slice_kernel};
use kiln_graph::{Arg, ComputeError, Graph, GraphBuilder, Kernel, Key, TaskError, TaskId, Value};
use kiln_local::{CancelToken, LocalScheduler, Progress, RunStats, UNKNOWN_SIZE};

const MIB: u64 = 1 << 20;
/// f64 elements in one test block: 1 MiB.
const BLOCK: usize = (MIB / 8) as usize;

fn sched(threads: usize) -> LocalScheduler {
    LocalScheduler::threads(threads).with_progress(Progress::Never)
}

/// A fresh directory for one test's spill files.
fn spill_parent(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-memory-budget-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

/// Block `i`: 1 MiB of distinct numbers.
fn block(i: u64) -> Vec<f64> {
    (0..BLOCK).map(|j| ((i * BLOCK as u64 + j as u64) as f64 * 0.001).sin() + i as f64).collect()
}

/// The seed computation's shape on `n` 1 MiB blocks: the standard deviation of all elements,
/// through a mean that needs every block before any block's squared deviations can be summed.
/// The static order reads every block for the mean first, so without a limit all `n` are held
/// at once.
fn seed_like(n: u64, fail_at: Option<u64>) -> (Graph, TaskId) {
    let make: Arc<dyn Kernel> = Arc::new(func1("block", |i: &u64| block(*i)));
    let sum: Arc<dyn Kernel> = Arc::new(func1("sum", |b: &Vec<f64>| b.iter().sum::<f64>()));
    let total: Arc<dyn Kernel> = Arc::new(slice_kernel("total", |xs: &[Value]| {
        let mut t = 0.0;
        for i in 0..xs.len() {
            t += input::<f64>(xs, i)?;
        }
        Ok(Value::new(t))
    }));
    let count = (n as usize * BLOCK) as f64;
    let sq: Arc<dyn Kernel> = Arc::new(kiln_graph::kernel::try_func2("sq", move |b: &Vec<f64>, t: &f64| {
        if fail_at.is_some_and(|f| b[0] >= f as f64) {
            return Err(TaskError::msg("failing on purpose"));
        }
        let mean = t / count;
        Ok(b.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>())
    }));
    let std: Arc<dyn Kernel> = Arc::new(slice_kernel("std", move |xs: &[Value]| {
        let mut t = 0.0;
        for i in 0..xs.len() {
            t += input::<f64>(xs, i)?;
        }
        Ok(Value::new((t / count).sqrt()))
    }));
    let mut g = GraphBuilder::new();
    let blocks: Vec<TaskId> =
        (0..n).map(|i| g.add(Key::with_index("block", [i as u32]), make.clone(), [Arg::literal(i)]).unwrap()).collect();
    let sums: Vec<Arg> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| Arg::Task(g.add(Key::with_index("sum", [i as u32]), sum.clone(), [Arg::Task(*b)]).unwrap()))
        .collect();
    let t = g.add(Key::new("total"), total, sums).unwrap();
    let sqs: Vec<Arg> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Arg::Task(g.add(Key::with_index("sq", [i as u32]), sq.clone(), [Arg::Task(*b), Arg::Task(t)]).unwrap())
        })
        .collect();
    let out = g.add(Key::new("std"), std, sqs).unwrap();
    (g.build().unwrap(), out)
}

/// The same standard deviation computed here directly, in the same order of operations.
fn seed_like_by_hand(n: u64) -> f64 {
    let count = (n as usize * BLOCK) as f64;
    let mut t = 0.0;
    for i in 0..n {
        t += block(i).iter().sum::<f64>();
    }
    let mean = t / count;
    let mut s = 0.0;
    for i in 0..n {
        s += block(i).iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
    }
    (s / count).sqrt()
}

#[test]
fn values_spilled_past_the_limit_come_back_identical() {
    let n = 16;
    let (g, out) = seed_like(n, None);
    let want = seed_like_by_hand(n);
    let (unlimited, free) = sched(2).memory_limit(1 << 40).run_with_stats(&g, &[out]).unwrap();
    assert_eq!(free.spill_count, 0);
    assert!(free.peak_held_bytes >= n * MIB, "without a limit the order holds every block: {free:?}");
    for threads in [1, 2] {
        let parent = spill_parent(&format!("identical-{threads}"));
        let limit = 4 * MIB;
        let (got, stats) = sched(threads).memory_limit(limit).spill_dir(&parent).run_with_stats(&g, &[out]).unwrap();
        let got = *got[0].downcast_ref::<f64>().unwrap();
        // Bit for bit: spilling moves the same values through a codec, it changes no arithmetic.
        assert_eq!(got.to_bits(), unlimited[0].downcast_ref::<f64>().unwrap().to_bits(), "threads={threads}");
        assert_eq!(got.to_bits(), want.to_bits(), "threads={threads}");
        assert!(stats.spill_count >= n - 4, "threads={threads}: {stats:?}");
        assert!(stats.read_back_count >= n - 4, "threads={threads}: {stats:?}");
        assert_eq!(stats.spilled_bytes, stats.spill_count * MIB, "{stats:?}");
        // Slack: each thread's newest result (1 MiB) exists before the spiller can make room
        // for it, and a block read back for a reader is pinned by it until the reader ends.
        let slack = 2 * threads as u64 * MIB;
        assert!(stats.peak_held_bytes <= limit + slack, "threads={threads}: {stats:?}");
        assert_eq!(entries(&parent), Vec::<PathBuf>::new(), "spill files outlived the run");
        std::fs::remove_dir_all(&parent).unwrap();
    }
}

#[test]
fn values_without_a_codec_stay_in_memory_and_are_counted() {
    // No codec is registered for this type: it cannot be spilled, whatever the limit.
    struct Opaque(Vec<f64>);
    let make: Arc<dyn Kernel> = Arc::new(func1("opaque", |i: &u64| Opaque(block(*i))));
    let plain: Arc<dyn Kernel> = Arc::new(func1("plain", |i: &u64| block(*i)));
    let mut g = GraphBuilder::new();
    let mut outs = Vec::new();
    for i in 0..6u64 {
        outs.push(g.add(Key::with_index("opaque", [i as u32]), make.clone(), [Arg::literal(i)]).unwrap());
        outs.push(g.add(Key::with_index("plain", [i as u32]), plain.clone(), [Arg::literal(i)]).unwrap());
    }
    let g = g.build().unwrap();
    let parent = spill_parent("no-codec");
    // A limit below one block: everything spillable spills, and the run still ends.
    let (values, stats) = sched(1).memory_limit(MIB / 2).spill_dir(&parent).run_with_stats(&g, &outs).unwrap();
    for (i, pair) in values.chunks(2).enumerate() {
        assert_eq!(pair[0].downcast_ref::<Opaque>().unwrap().0, block(i as u64));
        assert_eq!(pair[1].downcast_ref::<Vec<f64>>().unwrap(), &block(i as u64));
    }
    // Each plain block was spilled once (all but the values being stored when the limit was
    // reached are on disk at the end); the opaque ones never were.
    assert!(stats.spill_count >= 5 && stats.spill_count <= 6, "{stats:?}");
    assert_eq!(stats.spilled_bytes, stats.spill_count * MIB, "only the plain blocks spill: {stats:?}");
    // Opaque values count as UNKNOWN_SIZE each: the scheduler cannot know their size.
    assert!(stats.peak_held_bytes <= MIB + 6 * UNKNOWN_SIZE, "{stats:?}");
    assert!(stats.peak_held_bytes >= MIB, "{stats:?}");
    assert_eq!(entries(&parent), Vec::<PathBuf>::new());
    std::fs::remove_dir_all(&parent).unwrap();
}

/// Records whether a source started while the slow reader ran, and lets the reader wait for it.
#[derive(Default)]
struct Gate {
    reader_running: AtomicBool,
    source_during_reader: Mutex<bool>,
    wake: Condvar,
}

#[test]
fn sources_wait_while_held_memory_is_over_the_target() {
    let gate = Arc::new(Gate::default());
    let sources_started = Arc::new(AtomicUsize::new(0));
    let big: Arc<dyn Kernel> = Arc::new(func1("big", |i: &u64| block(*i)));
    // A slow reader of the big block: while it runs, the big block is held and memory is over
    // the target. It waits (up to 2 s) for a source to start; none may.
    let reader: Arc<dyn Kernel> = {
        let gate = gate.clone();
        Arc::new(func1("reader", move |b: &Vec<f64>| {
            gate.reader_running.store(true, Ordering::SeqCst);
            let started = gate.source_during_reader.lock().unwrap();
            let (started, _) = gate.wake.wait_timeout_while(started, Duration::from_secs(2), |s| !*s).unwrap();
            drop(started);
            gate.reader_running.store(false, Ordering::SeqCst);
            b[0]
        }))
    };
    let small: Arc<dyn Kernel> = {
        let (gate, sources_started) = (gate.clone(), sources_started.clone());
        Arc::new(func1("small", move |i: &u64| {
            sources_started.fetch_add(1, Ordering::SeqCst);
            if gate.reader_running.load(Ordering::SeqCst) {
                *gate.source_during_reader.lock().unwrap() = true;
                gate.wake.notify_all();
            }
            // Slow enough that the other thread cannot run every source before the reader.
            std::thread::sleep(Duration::from_millis(30));
            *i as f64
        }))
    };
    let mut g = GraphBuilder::new();
    let b = g.add(Key::new("big"), big, [Arg::literal(0u64)]).unwrap();
    let r = g.add(Key::new("reader"), reader, [Arg::Task(b)]).unwrap();
    let mut outs = vec![r];
    for i in 0..8u64 {
        outs.push(g.add(Key::with_index("small", [i as u32]), small.clone(), [Arg::literal(i)]).unwrap());
    }
    let g = g.build().unwrap();
    // The big block (1 MiB) is over the target (3/4 of 1 MiB) but under the limit: no spill.
    let (values, stats) = sched(2).memory_limit(MIB).run_with_stats(&g, &outs).unwrap();
    assert!(!*gate.source_during_reader.lock().unwrap(), "a source started while held memory was over the target");
    assert_eq!(sources_started.load(Ordering::SeqCst), 8);
    assert_eq!(*values[0].downcast_ref::<f64>().unwrap(), block(0)[0]);
    assert_eq!(stats.spill_count, 0, "{stats:?}");
}

#[test]
fn sources_held_back_with_nothing_else_to_run_still_run() {
    // Every block is an output and none can be spilled (no codec): held memory passes the
    // limit after the first block, and nothing but sources remains. The run must still end.
    struct Opaque(#[allow(dead_code)] Vec<f64>);
    let make: Arc<dyn Kernel> = Arc::new(func1("opaque", |i: &u64| Opaque(block(*i))));
    let mut g = GraphBuilder::new();
    let outs: Vec<TaskId> =
        (0..8u64).map(|i| g.add(Key::with_index("o", [i as u32]), make.clone(), [Arg::literal(i)]).unwrap()).collect();
    let sum_all: Arc<dyn Kernel> = Arc::new(slice_kernel("n", |xs: &[Value]| Ok(Value::new(xs.len() as u64))));
    let n = g.add(Key::new("n"), sum_all, outs.iter().map(|o| Arg::Task(*o)).collect::<Vec<_>>()).unwrap();
    let g = g.build().unwrap();
    for threads in [1, 2, 3] {
        let (values, stats) = sched(threads).memory_limit(1).run_with_stats(&g, &[n]).unwrap();
        assert_eq!(*values[0].downcast_ref::<u64>().unwrap(), 8, "threads={threads}");
        // Only the first source of each thread can start under the target.
        assert!(stats.forced_sources >= 8 - threads as u64, "threads={threads}: {stats:?}");
    }
}

#[test]
fn an_unusable_spill_directory_is_a_clear_error_and_leaves_nothing() {
    let parent = spill_parent("unusable");
    // A regular file where the spill directory's parent should be: nothing can be created
    // under it.
    let file = parent.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let (g, out) = seed_like(8, None);
    let err = sched(2).memory_limit(2 * MIB).spill_dir(file.join("spill")).run(&g, &[out]).unwrap_err();
    match &err {
        ComputeError::Spill { action, path, message, key } => {
            assert_eq!(*action, "cannot spill");
            assert!(path.starts_with(&file), "{err}");
            assert!(message.contains("Not a directory"), "{err}");
            assert!(message.contains("LocalScheduler::spill_dir"), "{err}");
            assert_eq!(key.name(), "block", "{err}");
        }
        other => panic!("expected a spill error, got {other:?}"),
    }
    assert_eq!(entries(&parent), vec![file]);
    std::fs::remove_dir_all(&parent).unwrap();
}

/// The spill directory of a run that spilled is gone when the run ends: after success, after a
/// task failed and after a cancellation.
#[test]
fn the_spill_directory_is_removed_however_the_run_ends() {
    let parent = spill_parent("cleanup");
    let limit = 3 * MIB;
    let scheduler = sched(2).memory_limit(limit).spill_dir(&parent);

    let (g, out) = seed_like(12, None);
    scheduler.run(&g, &[out]).unwrap();
    assert!(scheduler.last_run_stats().unwrap().spill_count > 0);
    assert_eq!(entries(&parent), Vec::<PathBuf>::new(), "after success");

    // The squared deviations of the last blocks fail, after blocks were spilled.
    let (g, out) = seed_like(12, Some(10));
    let err = scheduler.run(&g, &[out]).unwrap_err();
    assert!(matches!(&err, ComputeError::Task { key, .. } if key.name() == "sq"), "{err:?}");
    assert!(scheduler.last_run_stats().unwrap().spill_count > 0);
    assert_eq!(entries(&parent), Vec::<PathBuf>::new(), "after a failure");

    // Cancelled from inside once some blocks are on disk: the directory exists mid-run.
    let token = CancelToken::new();
    let watcher = {
        let (token, parent) = (token.clone(), parent.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let spilled = entries(&parent).iter().any(|d| !entries(d).is_empty());
                if spilled {
                    token.cancel();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        })
    };
    let (g, out) = seed_like(40, None);
    let err = scheduler.clone().with_cancel(token).run(&g, &[out]);
    assert!(watcher.join().unwrap(), "no spill file appeared");
    assert_eq!(err.unwrap_err(), ComputeError::cancelled());
    assert_eq!(entries(&parent), Vec::<PathBuf>::new(), "after a cancellation");
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn stats_are_kept_for_the_last_run_and_the_limit_is_the_memory_target() {
    use kiln_graph::Scheduler;
    let s = sched(1).memory_limit(123 * MIB);
    assert_eq!(s.memory_target(), Some(123 * MIB));
    assert_eq!(s.last_run_stats(), None);
    let (g, out) = seed_like(2, None);
    s.run(&g, &[out]).unwrap();
    let stats: RunStats = s.last_run_stats().unwrap();
    assert_eq!(stats.memory_limit, Some(123 * MIB));
    // Two blocks are held at once (both read before the mean is known).
    assert!(stats.peak_held_bytes >= 2 * MIB && stats.peak_held_bytes < 3 * MIB, "{stats:?}");
    assert_eq!(
        stats.summary(),
        format!("peak held {} of a 123.00 MiB limit", kiln_graph::memory::format_bytes(stats.peak_held_bytes))
    );
    // The default is half the machine.
    assert_eq!(sched(1).memory_target(), kiln_local::allocator::default_memory_limit());
    assert!(sched(1).memory_target().is_some());
    // The per-kernel budget follows the same limit.
    let budget = sched(1).memory_limit(1000).budget();
    assert_eq!(budget.to_string(), "the memory limit of 1000 B");
}
