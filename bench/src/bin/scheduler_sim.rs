//! The distributed scheduler's state machine alone: no network, no threads, simulated workers.
//!
//! Builds a graph of about `--n` tasks (default 1,000,000) shaped like the per-task overhead
//! benchmark — trivial root tasks `("inc-<token>", i)`, each with one small literal, feeding an
//! 8-ary tree of sums `("sum-<token>", level, i)` — submits it to
//! [`kiln_scheduler::SchedulerState`] with `--workers` (default 1,000) one-thread workers and
//! one client in a single `UpdateGraph`, and plays the workers: every `Compute` goes into its
//! worker's FIFO; busy workers take turns (round robin) finishing the head of their FIFO with
//! `Finished { nbytes: 8, duration_us: 1 }`, until the client is told the final key is in
//! memory.
//!
//! Measured:
//! - time from `UpdateGraph` to the client's final `InMemory` (scheduled and completed), the
//!   `UpdateGraph` call alone, tasks per second, events;
//! - scheduler memory per task, with a counting global allocator: the peak of bytes allocated
//!   since before the graph was built, minus what the simulation itself holds (its FIFOs and
//!   command buffer) and minus the outer `Vec<SubmittedTask>` while the scheduler iterates it.
//!   Task specs moved into the scheduler (keys, kernel specs, literals) count as the
//!   scheduler's: it keeps them to recompute lost results. Counted twice: in requested bytes,
//!   and in malloc chunks (glibc's usable size plus its 8-byte header: the heap really used).
//!   Also reported: the bytes retained right after `UpdateGraph`, the task specs' own size,
//!   `approx_bytes()` and the process's peak RSS.
//!
//! Issue 4's target: 1,000,000 tasks over 1,000 workers in ≤ 5 s and ≤ 500 bytes per task.
//!
//! `cargo run --release -p kiln-bench --bin scheduler_sim -- [--n 1000000] [--workers 1000] [--no-count]`
//! (`--no-count` turns the allocator's counting off, to time the run without it.)

use kiln_bench::arg;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use kiln_bench::peak_rss_bytes;
use kiln_graph::portable::{InputSpec, TaskSpec};
use kiln_graph::{CodecRegistry, KernelSpec, Key, Value};
use kiln_protocol::messages::{
    ClientId, ClientToScheduler, SchedulerToClient, SchedulerToWorker, SubmittedTask, WorkerId, WorkerInfo,
    WorkerToScheduler,
};
use kiln_scheduler::{Command, Config, Event, SchedulerState};

// ----- a counting allocator -------------------------------------------------------------------

/// Bytes currently allocated (requested sizes).
static CURRENT: AtomicIsize = AtomicIsize::new(0);
/// Bytes currently allocated that do not belong to the scheduler (the simulation's buffers, the
/// input's outer `Vec`).
static EXCLUDED: AtomicIsize = AtomicIsize::new(0);
/// Peak of `CURRENT - EXCLUDED` since the last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// The same in malloc chunks (usable size plus glibc's 8-byte header): what the heap really
/// spends, with rounding and per-allocation overhead.
static CHUNK_CURRENT: AtomicIsize = AtomicIsize::new(0);
static CHUNK_EXCLUDED: AtomicIsize = AtomicIsize::new(0);
static CHUNK_PEAK: AtomicIsize = AtomicIsize::new(0);
/// An allocation whose freeing also removes its size from the exclusions (the input's outer
/// `Vec`, freed inside the scheduler once consumed).
static WATCH_PTR: AtomicUsize = AtomicUsize::new(0);
static WATCH_SIZE: AtomicIsize = AtomicIsize::new(0);
static WATCH_CHUNK: AtomicIsize = AtomicIsize::new(0);
/// Counting can be switched off (`--no-count`) to time the run without its overhead.
static COUNTING: AtomicBool = AtomicBool::new(true);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn chunk_size(ptr: *mut u8) -> isize {
    unsafe extern "C" {
        fn malloc_usable_size(ptr: *mut std::ffi::c_void) -> usize;
    }
    // SAFETY: `ptr` is a live block from the system allocator (glibc malloc).
    (unsafe { malloc_usable_size(ptr.cast()) } + 8) as isize
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn chunk_size(_ptr: *mut u8) -> isize {
    0
}

struct Counting;

// The benchmark is single-threaded, so plain loads and stores (no locked read-modify-write)
// keep the counting cheap; they would only lose updates if several threads allocated at once.
fn add(counter: &AtomicIsize, excluded: &AtomicIsize, peak: &AtomicIsize, bytes: isize) {
    let now = counter.load(Relaxed) + bytes;
    counter.store(now, Relaxed);
    let held = now - excluded.load(Relaxed);
    if held > peak.load(Relaxed) {
        peak.store(held, Relaxed);
    }
}

fn grow(ptr: *mut u8, bytes: isize) {
    if COUNTING.load(Relaxed) {
        add(&CURRENT, &EXCLUDED, &PEAK, bytes);
        add(&CHUNK_CURRENT, &CHUNK_EXCLUDED, &CHUNK_PEAK, chunk_size(ptr));
    }
}

fn shrink(ptr: *mut u8, bytes: isize) {
    if COUNTING.load(Relaxed) {
        CURRENT.store(CURRENT.load(Relaxed) - bytes, Relaxed);
        CHUNK_CURRENT.store(CHUNK_CURRENT.load(Relaxed) - chunk_size(ptr), Relaxed);
    }
    if ptr as usize == WATCH_PTR.load(Relaxed) {
        WATCH_PTR.store(0, Relaxed);
        EXCLUDED.store(EXCLUDED.load(Relaxed) - WATCH_SIZE.load(Relaxed), Relaxed);
        CHUNK_EXCLUDED.store(CHUNK_EXCLUDED.load(Relaxed) - WATCH_CHUNK.load(Relaxed), Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(p, layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(p, layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(ptr, layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a free then an allocation (net change): large blocks grow in place
        // (mremap), small ones are copied and the old block freed at once.
        shrink(ptr, layout.size() as isize);
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            // The old block is still live.
            grow(ptr, layout.size() as isize);
        } else {
            grow(p, new_size as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn current() -> (isize, isize) {
    (CURRENT.load(Relaxed), CHUNK_CURRENT.load(Relaxed))
}

fn peak() -> (isize, isize) {
    (PEAK.load(Relaxed), CHUNK_PEAK.load(Relaxed))
}

fn reset_peak() {
    PEAK.store(CURRENT.load(Relaxed) - EXCLUDED.load(Relaxed), Relaxed);
    CHUNK_PEAK.store(CHUNK_CURRENT.load(Relaxed) - CHUNK_EXCLUDED.load(Relaxed), Relaxed);
}

/// Keeps the exclusions equal to the bytes the simulation holds. Its buffers are few and large,
/// so their chunk overhead is ignored.
struct Excluded {
    set: isize,
}
impl Excluded {
    fn update(&mut self, bytes: isize) {
        if bytes != self.set {
            EXCLUDED.store(EXCLUDED.load(Relaxed) + bytes - self.set, Relaxed);
            CHUNK_EXCLUDED.store(CHUNK_EXCLUDED.load(Relaxed) + bytes - self.set, Relaxed);
            self.set = bytes;
        }
    }
}

// ----- the graph ------------------------------------------------------------------------------

const TOKEN: &str = "5d41402abc4b2a76b9719d911017c592";

/// Roots and the 8-ary tree of sums above them, in submission (topological) order, with Dask-like
/// static priorities (depth first: a group's roots, then their sum). Returns the tasks and the
/// final key.
fn build(roots: usize) -> (Vec<SubmittedTask>, Key) {
    let inc: Arc<str> = format!("inc-{TOKEN}").into();
    let sum: Arc<str> = format!("sum-{TOKEN}").into();
    let kernel = || KernelSpec { id: "bench.inc".into(), params: vec![] };
    let codecs = CodecRegistry::global();

    // Level sizes: roots, then ceil(/8) until one.
    let mut sizes = vec![roots];
    while *sizes.last().unwrap() > 1 {
        sizes.push(sizes.last().unwrap().div_ceil(8));
    }
    // Depth-first post-order numbering from the top: order[level][i].
    let mut order: Vec<Vec<u32>> = sizes.iter().map(|&s| vec![0; s]).collect();
    let mut next = 0u32;
    let top = sizes.len() - 1;
    // (level, index, children visited)
    let mut stack = vec![(top, 0usize, false)];
    while let Some((level, i, visited)) = stack.pop() {
        if level == 0 || visited {
            order[level][i] = next;
            next += 1;
            continue;
        }
        stack.push((level, i, true));
        let lo = i * 8;
        let hi = (lo + 8).min(sizes[level - 1]);
        for c in (lo..hi).rev() {
            stack.push((level - 1, c, false));
        }
    }

    let total: usize = sizes.iter().sum();
    let mut tasks = Vec::with_capacity(total);
    for (i, &order) in order[0].iter().enumerate() {
        let literal = codecs.encode(&Value::new(i as i64)).expect("i64 has a codec");
        let spec = TaskSpec {
            key: Key::from_shared(&inc, &[i as u32]),
            kernel: kernel(),
            inputs: vec![InputSpec::Literal(literal)],
        };
        tasks.push(SubmittedTask { spec, order });
    }
    let child = |level: usize, i: usize| {
        if level == 0 {
            Key::from_shared(&inc, &[i as u32])
        } else {
            Key::from_shared(&sum, &[level as u32 - 1, i as u32])
        }
    };
    for (level, orders) in order.iter().enumerate().skip(1) {
        for (i, &order) in orders.iter().enumerate() {
            let lo = i * 8;
            let hi = (lo + 8).min(sizes[level - 1]);
            let inputs = (lo..hi).map(|c| InputSpec::Task(child(level - 1, c))).collect();
            let spec = TaskSpec { key: child(level, i), kernel: kernel(), inputs };
            tasks.push(SubmittedTask { spec, order });
        }
    }
    (tasks, child(top, 0))
}

fn mb(bytes: isize) -> f64 {
    bytes as f64 / 1e6
}

/// Bytes per task, requested and in malloc chunks.
fn per_task((req, chunk): (isize, isize), tasks: usize) -> (f64, f64) {
    (req as f64 / tasks as f64, chunk as f64 / tasks as f64)
}

fn minus(a: (isize, isize), b: (isize, isize)) -> (isize, isize) {
    (a.0 - b.0, a.1 - b.1)
}

fn main() {
    let n: usize = arg("--n", 1_000_000);
    let nworkers: usize = arg("--workers", 1000);
    let counting = !std::env::args().any(|a| a == "--no-count");
    COUNTING.store(counting, Relaxed);
    let client = ClientId::new(1);
    // An 8-ary tree over r roots has about r * 8 / 7 tasks.
    let roots = (n * 7).div_ceil(8).max(1);

    let base = current();
    let t0 = Instant::now();
    let (graph, final_key) = build(roots);
    let build_s = t0.elapsed().as_secs_f64();
    let tasks = graph.len();
    let input = minus(current(), base);
    let outer = (graph.capacity() * std::mem::size_of::<SubmittedTask>()) as isize;
    let outer_chunk = if counting { chunk_size(graph.as_ptr() as *mut u8) } else { 0 };
    // The task specs themselves (keys, kernel specs, literals, input lists), without the outer
    // Vec: what the scheduler receives.
    let specs = minus(input, (outer, outer_chunk));
    let (specs_pt, specs_chunk_pt) = per_task(specs, tasks);
    println!(
        "graph: {tasks} tasks ({roots} roots + 8-ary tree of sums), built in {build_s:.3} s (not counted); \
         task specs {specs_pt:.0} B/task ({specs_chunk_pt:.0} in malloc chunks) + outer Vec {:.0} B/task",
        outer as f64 / tasks as f64
    );

    // The scheduler, its workers and client.
    let t1 = Instant::now();
    let mut s = SchedulerState::new(Config::default());
    let mut commands: Vec<Command> = Vec::new();
    for id in 0..nworkers as u32 {
        let info = WorkerInfo {
            id: WorkerId::new(id),
            address: format!("sim://w{id}"),
            name: format!("w{id}"),
            nthreads: 1,
            memory_limit: 0,
            write_token: Default::default(),
        };
        s.handle(Event::WorkerJoined(info), 0);
        s.drain_commands_into(&mut commands);
        commands.clear();
    }
    s.handle(Event::ClientJoined(client), 0);
    s.drain_commands_into(&mut commands);
    commands.clear();
    let workers_s = t1.elapsed().as_secs_f64();
    let fixed = minus(minus(current(), base), input);
    println!(
        "{nworkers} workers + 1 client registered in {workers_s:.3} s (not counted); scheduler without tasks {:.2} MB",
        mb(fixed.0)
    );

    // The simulation's own memory: per-worker FIFOs of keys and the command buffer. Keys share
    // their name and keep short indices inline, so a queued key owns no heap memory of its own.
    let mut fifos: Vec<VecDeque<Key>> = (0..nworkers).map(|_| VecDeque::new()).collect();
    let mut turn: VecDeque<WorkerId> = VecDeque::with_capacity(nworkers);
    commands.reserve(4096);
    // Bytes held by the simulation, given the keys' capacity of all FIFOs (kept up to date
    // incrementally: summing 1,000 FIFOs per event would dominate the run).
    let sim_bytes =
        |fifo_capacity: usize, fifos: &Vec<VecDeque<Key>>, commands: &Vec<Command>, turn: &VecDeque<WorkerId>| {
            (fifo_capacity * std::mem::size_of::<Key>()
                + fifos.capacity() * std::mem::size_of::<VecDeque<Key>>()
                + commands.capacity() * std::mem::size_of::<Command>()
                + turn.capacity() * std::mem::size_of::<u32>()) as isize
        };
    let mut fifo_capacity: usize = 0;
    let mut excluded = Excluded { set: 0 };
    excluded.update(sim_bytes(fifo_capacity, &fifos, &commands, &turn));

    // The outer Vec is the caller's buffer: excluded while alive (freed inside update_graph).
    WATCH_PTR.store(graph.as_ptr() as usize, Relaxed);
    WATCH_SIZE.store(outer, Relaxed);
    WATCH_CHUNK.store(outer_chunk, Relaxed);
    EXCLUDED.store(EXCLUDED.load(Relaxed) + outer, Relaxed);
    CHUNK_EXCLUDED.store(CHUNK_EXCLUDED.load(Relaxed) + outer_chunk, Relaxed);
    reset_peak();

    let start = Instant::now();
    s.handle(
        Event::Client(client, ClientToScheduler::UpdateGraph { tasks: graph, wanted: vec![final_key.clone()] }),
        0,
    );
    let update_s = start.elapsed().as_secs_f64();
    assert_eq!(WATCH_PTR.load(Relaxed), 0, "update_graph consumed the input");
    let update_peak = minus(peak(), base);
    let retained = minus(minus(current(), base), (excluded.set, excluded.set));
    let approx = s.approx_bytes();
    let known = s.task_count();
    println!("UpdateGraph: {update_s:.3} s; {known} tasks known");

    // Play the workers.
    let mut events: u64 = 1;
    let mut frees: u64 = 0;
    let mut computes: u64 = 0;
    let mut now: u64 = 0;
    let mut done = false;
    loop {
        s.drain_commands_into(&mut commands);
        for command in commands.drain(..) {
            match command {
                Command::Worker(w, SchedulerToWorker::Compute(task)) => {
                    computes += 1;
                    let fifo = &mut fifos[w.index()];
                    if fifo.is_empty() {
                        turn.push_back(w);
                    }
                    let before = fifo.capacity();
                    fifo.push_back(task.key);
                    fifo_capacity += fifo.capacity() - before;
                }
                Command::Worker(_, SchedulerToWorker::Free { .. }) => frees += 1,
                Command::Client(c, SchedulerToClient::InMemory { key, .. }) if c == client && key == final_key => {
                    done = true;
                }
                Command::Client(c, SchedulerToClient::Erred { key, failure }) if c == client => {
                    panic!("{key} erred: {}", failure.message);
                }
                _ => {}
            }
        }
        excluded.update(sim_bytes(fifo_capacity, &fifos, &commands, &turn));
        if done {
            break;
        }
        let Some(w) = turn.pop_front() else {
            panic!("stalled before the final key: {:?}", s.state_counts());
        };
        let key = fifos[w.index()].pop_front().expect("workers in turn have work");
        if !fifos[w.index()].is_empty() {
            turn.push_back(w);
        }
        now += 1;
        s.handle(
            Event::Worker(w, WorkerToScheduler::Finished { key, nbytes: 8, duration_us: 1, started_us: 1, thread: 0 }),
            now,
        );
        events += 1;
    }
    let total_s = start.elapsed().as_secs_f64();
    let fifo_total: usize = fifos.iter().map(|f| f.capacity()).sum();
    assert_eq!(fifo_total, fifo_capacity, "the FIFOs' capacity was tracked exactly");
    let run_peak = minus(peak(), base);
    let end = minus(minus(current(), base), (excluded.set, excluded.set));
    let rss = peak_rss_bytes().unwrap_or(0);
    let per_s = tasks as f64 / total_s;
    println!(
        "scheduled and completed: {total_s:.3} s ({:.3} s after UpdateGraph) = {per_s:.0} tasks/s, {:.2} µs/task; \
         {events} events, {computes} computes, {frees} frees; {} tasks still known (lineage of the wanted key)",
        total_s - update_s,
        total_s / tasks as f64 * 1e6,
        s.task_count()
    );
    let (bytes_pt, chunk_pt) = if counting { per_task(run_peak, tasks) } else { (f64::NAN, f64::NAN) };
    let (specs_pt, specs_chunk_pt) = if counting { (specs_pt, specs_chunk_pt) } else { (f64::NAN, f64::NAN) };
    let retained_pt = if counting { retained.0 as f64 / tasks as f64 } else { f64::NAN };
    if counting {
        let (ret_pt, ret_chunk_pt) = per_task(retained, tasks);
        let (up_pt, up_chunk_pt) = per_task(update_peak, tasks);
        let (end_pt, end_chunk_pt) = per_task(end, tasks);
        println!("scheduler memory per task (requested bytes / malloc chunks):");
        println!("  peak, UpdateGraph to the end   {bytes_pt:5.0} / {chunk_pt:5.0} B/task  ({:.1} MB)", mb(run_peak.0));
        println!("  peak during UpdateGraph        {up_pt:5.0} / {up_chunk_pt:5.0} B/task");
        println!("  right after UpdateGraph        {ret_pt:5.0} / {ret_chunk_pt:5.0} B/task");
        println!("  at the end                     {end_pt:5.0} / {end_chunk_pt:5.0} B/task");
        println!(
            "  of which task specs moved in   {specs_pt:5.0} / {specs_chunk_pt:5.0} B/task (peak beyond them: {:.0} / {:.0})",
            bytes_pt - specs_pt,
            chunk_pt - specs_chunk_pt
        );
        println!(
            "  approx_bytes() after UpdateGraph {:.0} B/task; workers + client {:.2} MB; process peak RSS {:.0} MB",
            approx as f64 / tasks as f64,
            mb(fixed.0),
            rss as f64 / 1e6
        );
    } else {
        println!("memory not counted (--no-count); process peak RSS {:.0} MB", rss as f64 / 1e6);
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let memory = if counting {
        format!(
            "{} in requested bytes ({bytes_pt:.0} B/task), {} counting malloc's rounding and headers \
             ({chunk_pt:.0} B/task)",
            verdict(bytes_pt <= 500.0),
            verdict(chunk_pt <= 500.0)
        )
    } else {
        "not measured".to_string()
    };
    println!("target: ≤ 5 s — {} ({total_s:.2} s); ≤ 500 B/task — {memory}", verdict(total_s <= 5.0));
    println!(
        "RESULT tasks={tasks} workers={nworkers} total_s={total_s:.3} update_graph_s={update_s:.3} \
         tasks_per_s={per_s:.0} events={events} bytes_per_task={bytes_pt:.0} heap_bytes_per_task={chunk_pt:.0} \
         retained_bytes_per_task={:.0} spec_bytes_per_task={specs_pt:.0} approx_bytes_per_task={:.0} rss_mb={:.0}",
        retained_pt,
        approx as f64 / tasks as f64,
        rss as f64 / 1e6
    );
}
