//! Prometheus text exposition of a [`Snapshot`], with Dask's metric names under a namespace
//! (`kiln_scheduler_tasks{state="memory"}` ≙ `dask_scheduler_tasks{state="memory"}`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Snapshot;
use kiln_scheduler::TaskState;

type Labels = Vec<(String, String)>;

fn gauge_family() -> Family<Labels, Gauge<f64, AtomicU64>> {
    Family::default()
}

fn counter_family() -> Family<Labels, Counter<f64, AtomicU64>> {
    Family::default()
}

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The metrics text for `snapshot` under `namespace` (`kiln` or `dask`).
pub fn render_metrics(snapshot: &Snapshot, namespace: &str) -> String {
    let a = &snapshot.aggregates;
    let mut registry = Registry::with_prefix(namespace);

    let scheduler = registry.sub_registry_with_prefix("scheduler");
    let clients = Gauge::<f64, AtomicU64>::default();
    clients.set(snapshot.clients as f64);
    scheduler.register("clients", "Number of clients connected", clients);

    let workers = gauge_family();
    let (mut idle, mut busy, mut saturated, mut paused) = (0, 0, 0, 0);
    for w in &a.workers {
        let load = snapshot.loads.iter().find(|l| l.id == w.id);
        let processing = load.map_or(0, |l| l.processing);
        if w.paused || w.retiring {
            paused += 1;
        } else if processing == 0 {
            idle += 1;
        } else if processing > w.nthreads as usize {
            saturated += 1;
        } else {
            busy += 1;
        }
    }
    for (state, n) in
        [("idle", idle), ("partially_saturated", busy), ("saturated", saturated), ("paused_or_retiring", paused)]
    {
        workers.get_or_create(&label(&[("state", state)])).set(n as f64);
    }
    scheduler.register("workers", "Number of workers known by state", workers);

    let tasks = gauge_family();
    for (i, state) in TaskState::ALL.iter().enumerate() {
        tasks.get_or_create(&label(&[("state", state.name())])).set(a.counts[i] as f64);
    }
    scheduler.register("tasks", "Number of tasks known by state", tasks);

    let prefix_states = gauge_family();
    let compute = counter_family();
    let output = counter_family();
    for p in &a.prefixes {
        for (i, state) in TaskState::ALL.iter().enumerate() {
            prefix_states
                .get_or_create(&label(&[("task_prefix_name", &p.name), ("state", state.name())]))
                .set(p.counts[i] as f64);
        }
        compute.get_or_create(&label(&[("task_prefix_name", &p.name)])).inc_by(p.compute_seconds);
        output.get_or_create(&label(&[("task_prefix_name", &p.name)])).inc_by(p.output_bytes as f64);
    }
    scheduler.register("prefix_state", "Number of tasks by prefix and state", prefix_states);
    scheduler.register("tasks_compute_seconds", "Total time spent computing tasks, by prefix", compute);
    scheduler.register("tasks_output_bytes", "Total bytes of task results produced, by prefix", output);

    let t = &a.totals;
    let ticks = Counter::<f64, AtomicU64>::default();
    ticks.inc_by(t.ticks as f64);
    scheduler.register("tick_count", "Turns of the scheduler's event loop", ticks);
    let tick_seconds = Counter::<f64, AtomicU64>::default();
    tick_seconds.inc_by(t.tick_seconds);
    scheduler.register("tick_duration_seconds", "Time spent in the scheduler's event loop", tick_seconds);
    let tick_max = Gauge::<f64, AtomicU64>::default();
    tick_max.set(t.tick_max_seconds);
    scheduler.register(
        "tick_duration_maximum_seconds",
        "Longest turn of the event loop since the last refresh",
        tick_max,
    );

    let worker = registry.sub_registry_with_prefix("worker");
    let memory = gauge_family();
    let cpu = gauge_family();
    let transfer = counter_family();
    let spill = counter_family();
    let tasks_done = counter_family();
    let network = counter_family();
    for w in &a.workers {
        let id = w.id.to_string();
        for (kind, bytes) in [("managed", w.managed), ("unmanaged", w.unmanaged()), ("spilled", w.spilled)] {
            memory.get_or_create(&label(&[("worker", &id), ("type", kind)])).set(bytes as f64);
        }
        cpu.get_or_create(&label(&[("worker", &id)])).set(w.cpu_percent as f64);
        transfer.get_or_create(&label(&[("worker", &id)])).inc_by(w.transfer_bytes as f64);
        spill.get_or_create(&label(&[("worker", &id)])).inc_by(w.spill_bytes as f64);
        tasks_done.get_or_create(&label(&[("worker", &id)])).inc_by(w.tasks_finished as f64);
        for (direction, bytes) in [("read", w.network_read_bytes), ("write", w.network_written_bytes)] {
            network.get_or_create(&label(&[("worker", &id), ("direction", direction)])).inc_by(bytes as f64);
        }
    }
    worker.register("memory_bytes", "Memory by type (managed, unmanaged, spilled)", memory);
    worker.register("cpu_percent", "CPU use in percent of one core", cpu);
    worker.register("transfer_incoming_bytes", "Bytes fetched from peers", transfer);
    worker.register("spill_bytes", "Bytes written to disk by spilling", spill);
    worker.register("tasks_finished", "Tasks finished", tasks_done);
    // The same name as on the worker's own /metrics, with a worker label: the totals its
    // process reported with its last heartbeat.
    worker.register(
        "network_bytes",
        "Total bytes read from and written to the worker's connections, as of its last heartbeat",
        network,
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
