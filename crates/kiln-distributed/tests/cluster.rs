//! A real scheduler and real workers on loopback (workers as threads of this process; the
//! process-based cluster is tested end to end in kiln-cli): collections computed on the
//! cluster give the local scheduler's answers; futures, scatter, datasets, failures.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use kiln_array::Array;
use kiln_array::random::RandomState;
use kiln_delayed::{Delayed, collect, func1, func2, try_func1, value};
use kiln_distributed::{Client, KeyStatus, LocalCluster, WorkerMode};
use kiln_graph::{Collection, ComputeError, KernelRegistry};
use kiln_local::LocalScheduler;

fn cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        register();
        LocalCluster::builder().workers(3).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap()
    })
}

fn client() -> Client {
    cluster().client().unwrap()
}

fn inc() -> kiln_delayed::Func1<i64, i64> {
    func1("inc", |x: &i64| x + 1).portable("test.inc")
}
fn add() -> kiln_delayed::Func2<i64, i64, i64> {
    func2("add", |a: &i64, b: &i64| a + b).portable("test.add")
}
fn total() -> kiln_delayed::Func1<Vec<i64>, i64> {
    func1("total", |v: &Vec<i64>| v.iter().sum::<i64>()).portable("test.total")
}
fn checked() -> kiln_delayed::Func1<i64, i64> {
    try_func1("checked", |x: &i64| if *x == 13 { Err(format!("unlucky input {x}")) } else { Ok(*x) })
        .portable("test.checked")
}
fn slow() -> kiln_delayed::Func1<i64, i64> {
    func1("slow", |x: &i64| {
        std::thread::sleep(Duration::from_millis(20 * (*x as u64 % 3)));
        *x
    })
    .portable("test.slow")
}

/// Adds one after 100 ms, so that a chain of them finishes at well separated times.
fn pause() -> kiln_delayed::Func1<i64, i64> {
    func1("pause", |x: &i64| {
        std::thread::sleep(Duration::from_millis(100));
        x + 1
    })
    .portable("test.pause")
}

/// Workers run as threads of this process, so a task can wait for the test to open a gate.
static GATE: (Mutex<GateState>, Condvar) = (Mutex::new(GateState { started: 0, open: false }), Condvar::new());
struct GateState {
    started: u32,
    open: bool,
}
fn gated() -> kiln_delayed::Func1<i64, i64> {
    func1("gated", |x: &i64| {
        let (lock, changed) = &GATE;
        let mut state = lock.lock().unwrap();
        state.started += 1;
        changed.notify_all();
        // Bounded, so a broken test cannot hang the worker forever.
        let (state, _) = changed.wait_timeout_while(state, Duration::from_secs(30), |s| !s.open).unwrap();
        drop(state);
        *x
    })
    .portable("test.gated")
}
static DOWNSTREAM_RUNS: AtomicU32 = AtomicU32::new(0);
fn downstream() -> kiln_delayed::Func1<i64, i64> {
    func1("downstream", |x: &i64| {
        DOWNSTREAM_RUNS.fetch_add(1, Ordering::SeqCst);
        *x
    })
    .portable("test.downstream")
}

fn register() {
    let r = KernelRegistry::global();
    r.register_instance(inc().kernel());
    r.register_instance(add().kernel());
    r.register_instance(total().kernel());
    r.register_instance(checked().kernel());
    r.register_instance(slow().kernel());
    r.register_instance(pause().kernel());
    r.register_instance(gated().kernel());
    r.register_instance(downstream().kernel());
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn the_seed_expression_matches_the_local_scheduler() {
    let client = client();
    let x = RandomState::new(7).random(&[1200, 1200], [300, 300]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let local = y.compute_on(&LocalScheduler::new()).unwrap();
    let remote = y.compute_on(&client).unwrap();
    assert_eq!(local.shape(), remote.shape());
    let (l, r) = (local.first().copied().unwrap(), remote.first().copied().unwrap());
    assert!(close(l, r), "{l} vs {r}");
}

#[test]
fn array_operations_match_the_local_scheduler() {
    let client = client();
    let x = RandomState::new(3).normal(0.0, 1.0, &[400, 300], [100, 70]);
    let cases: Vec<(&str, Array<f64>)> = vec![
        ("sum axis 0", x.sum_axis(0)),
        ("dot", x.dot(&x.t())),
        ("slice", x.slice(&kiln_array::idx![10..390;3, ..;-2])),
        ("rechunk", x.rechunk([150, 150])),
        ("cumsum", x.cumsum(1)),
    ];
    for (name, a) in cases {
        let local = a.compute_on(&LocalScheduler::new()).unwrap();
        let remote = a.compute_on(&client).unwrap();
        assert_eq!(local.shape(), remote.shape(), "{name}");
        for (l, r) in local.iter().zip(remote.iter()) {
            assert!(close(*l, *r), "{name}: {l} vs {r}");
        }
    }
}

#[test]
fn delayed_graphs_match_the_local_scheduler() {
    let client = client();
    let items: Vec<Delayed<i64>> = (0..50).map(|i| add().call(inc().call(i), value(i * 10))).collect();
    let sum = total().call(collect(items));
    assert_eq!(sum.compute_on(&client).unwrap(), sum.compute_on(&LocalScheduler::new()).unwrap());
}

#[test]
fn an_unregistered_closure_is_refused_with_its_name() {
    let client = client();
    let secret = func1("my_secret_step", |x: &i64| x * 2);
    let err = secret.call(21).compute_on(&client).unwrap_err().to_string();
    assert!(err.contains("my_secret_step"), "{err}");
    assert!(err.contains("portable") && err.contains("register"), "{err}");
}

#[test]
fn a_failing_task_errs_with_its_key_and_the_cluster_keeps_working() {
    let client = client();
    let bad = checked().call(13);
    let downstream = inc().call(bad.clone());
    match downstream.compute_on(&client).unwrap_err() {
        ComputeError::Task { key, error } => {
            assert_eq!(&key, bad.key(), "the error names the task that failed");
            assert!(error.to_string().contains("unlucky input 13"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(inc().call(checked().call(12)).compute_on(&client).unwrap(), 13);
}

#[test]
fn futures_submit_map_gather_and_as_completed() {
    let client = client();
    let f = client.submit(add().call(1, 2)).unwrap();
    assert_eq!(f.result().unwrap(), 3);
    let many = client.map(&inc(), 0..20i64).unwrap();
    assert_eq!(client.gather(&many).unwrap(), (1..21).collect::<Vec<i64>>());
    // A future is an argument to further work, which runs where the data is.
    let g = client.submit(add().call(&f, &many[4])).unwrap();
    assert_eq!(g.result().unwrap(), 8);
    // A chain finishes in dependency order whatever the cluster does; handed over last first,
    // as_completed must still yield them in the order they finished.
    let first = client.submit(pause().call(0)).unwrap();
    let second = client.submit(pause().call(&first)).unwrap();
    let third = client.submit(pause().call(&second)).unwrap();
    let seen: Vec<i64> = client.as_completed(vec![third, second, first]).map(|f| f.result().unwrap()).collect();
    assert_eq!(seen, vec![1, 2, 3]);
    client.wait(&many).unwrap();
    assert!(many.iter().all(|f| f.status() == KeyStatus::Finished));
}

#[test]
fn failed_futures_report_the_failure() {
    let client = client();
    let f = client.submit(checked().call(13)).unwrap();
    let err = f.result().unwrap_err();
    assert!(err.to_string().contains("unlucky"), "{err}");
    assert!(matches!(f.status(), KeyStatus::Erred(_)));
}

#[test]
fn scatter_places_data_and_tasks_use_it() {
    let client = client();
    let data = client.scatter(vec![vec![1.0f64, 2.0], vec![3.0, 4.0, 5.0]]).unwrap();
    let lens = func1("len", |v: &Vec<f64>| v.len() as i64).portable("test.len");
    KernelRegistry::global().register_instance(lens.kernel());
    let n = client.submit(lens.call(&data[1])).unwrap();
    assert_eq!(n.result().unwrap(), 3);
    assert_eq!(client.gather(&data).unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0]]);
}

#[test]
fn dropping_the_last_future_frees_the_data_on_the_cluster() {
    let client = client();
    let f = client.submit(inc().call(1000)).unwrap();
    f.wait().unwrap();
    let key = f.key().clone();
    let other = cluster().client().unwrap();
    assert!(!who_has(&other, &key).is_empty());
    drop(f);
    // The release travels to the scheduler and on to the worker; ask until it is gone.
    assert!(freed_soon(&other, &key), "{key} is still held after its last future was dropped");
}

/// Whether the cluster stops holding `key` within two seconds.
fn freed_soon(client: &Client, key: &kiln_graph::Key) -> bool {
    for _ in 0..200 {
        if who_has(client, key).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn who_has(client: &Client, key: &kiln_graph::Key) -> Vec<kiln_protocol::messages::WorkerId> {
    client.who_has(std::slice::from_ref(key)).unwrap().pop().unwrap()
}

#[test]
fn a_published_dataset_is_read_by_another_client() {
    let first = client();
    let parts = first.map(&inc(), [10i64, 20, 30]).unwrap();
    first.wait(&parts).unwrap();
    first.publish_dataset("increments", &parts).unwrap();
    let taken = first.publish_dataset("increments", &parts[..1]).unwrap_err();
    assert!(
        matches!(&taken, ComputeError::Refused(m) if m.contains("increments")),
        "names are not overwritten silently: {taken}"
    );
    drop(parts);
    drop(first);
    let second = client();
    assert!(second.list_datasets().unwrap().contains(&"increments".to_string()));
    let parts: Vec<kiln_distributed::Future<i64>> = second.get_dataset("increments").unwrap();
    assert_eq!(second.gather(&parts).unwrap(), vec![11, 21, 31]);
    let sum = second.submit(total().call(collect(parts.iter().map(|p| p.to_delayed()).collect()))).unwrap();
    assert_eq!(sum.result().unwrap(), 63);
    let missing = second.get_dataset::<i64>("no-such-dataset").unwrap_err();
    assert!(matches!(&missing, ComputeError::NotFound(m) if m.contains("no-such-dataset")), "{missing}");
    second.unpublish_dataset("increments");
    // Unpublishing is a message without an answer; the next question is answered after it.
    assert!(!second.list_datasets().unwrap().contains(&"increments".to_string()));
    let gone = second.get_dataset::<i64>("increments").unwrap_err();
    assert!(matches!(&gone, ComputeError::NotFound(m) if m.contains("increments")), "{gone}");
}

#[test]
fn the_client_can_be_the_default_scheduler() {
    let client = client();
    let previous = client.set_as_default();
    let d = add().call(40, 2);
    let scheduler = kiln_graph::scheduler::default_scheduler().unwrap();
    assert!(scheduler.name().starts_with("distributed"));
    assert_eq!(d.compute_on(scheduler.as_ref()).unwrap(), 42);
    match previous {
        Some(p) => {
            kiln_graph::scheduler::set_default(p);
        }
        None => {
            kiln_graph::scheduler::clear_default();
        }
    }
}

#[test]
fn persisted_arrays_stay_on_the_cluster_and_later_work_starts_from_them() {
    let client = client();
    let x = RandomState::new(5).random(&[600, 600], [200, 200]);
    let persisted = client.persist(&x).unwrap();
    // Graphs from the persisted array do not recompute it: its chunks are remote values.
    let (graph, _) = kiln_graph::collection::graph_of(&persisted.sum()).unwrap();
    let remote = graph.ids().filter(|&id| graph.kernel(id).is_remote()).count();
    assert_eq!(remote, 9);
    let local = (&x * 2.0).sum().compute_on(&LocalScheduler::new()).unwrap().first().copied().unwrap();
    for _ in 0..2 {
        let on_cluster = (&persisted * 2.0).sum().compute_on(&client).unwrap().first().copied().unwrap();
        assert!(close(local, on_cluster), "{local} vs {on_cluster}");
    }
    // The local scheduler cannot run remote chunks, and says why.
    let err = persisted.sum().compute_on(&LocalScheduler::new()).unwrap_err().to_string();
    assert!(err.contains("cluster"), "{err}");
    // Dropping the persisted array frees its chunks.
    let key = graph.key(graph.ids().find(|&id| graph.kernel(id).is_remote()).unwrap()).clone();
    drop(graph);
    drop(persisted);
    let other = cluster().client().unwrap();
    assert!(freed_soon(&other, &key), "persisted chunk {key} is still held");
}

#[test]
fn cancelled_futures_end_as_cancelled_and_their_dependents_never_run() {
    let client = client();
    let blocked = gated().call(1);
    let f = client.submit(downstream().call(blocked)).unwrap();
    // Cancel while the input is certainly running, not merely submitted.
    {
        let (lock, changed) = &GATE;
        let state = lock.lock().unwrap();
        let (state, timeout) = changed.wait_timeout_while(state, Duration::from_secs(30), |s| s.started == 0).unwrap();
        assert!(!timeout.timed_out() && state.started == 1, "the gated task never started");
    }
    f.cancel();
    match f.result().unwrap_err() {
        ComputeError::Cancelled { key: Some(key), .. } => assert_eq!(&key, f.key()),
        other => panic!("expected a cancellation naming {}, got {other:?}", f.key()),
    }
    assert!(matches!(f.status(), KeyStatus::Cancelled(_)));
    {
        let (lock, changed) = &GATE;
        lock.lock().unwrap().open = true;
        changed.notify_all();
    }
    // The input finishes after the cancellation; a later computation on the same workers runs
    // after it, and by then the cancelled dependent would have run if it were still wanted.
    assert_eq!(client.submit(inc().call(41)).unwrap().result().unwrap(), 42);
    let after = client.map(&inc(), 0..6i64).unwrap();
    client.wait(&after).unwrap();
    assert_eq!(DOWNSTREAM_RUNS.load(Ordering::SeqCst), 0, "a cancelled task ran");
    assert!(freed_soon(&cluster().client().unwrap(), f.key()), "the cancelled key is still held");
}

#[test]
fn garbage_and_wrong_handshakes_are_dropped_and_the_scheduler_keeps_serving() {
    use std::io::{Read, Write};
    let address = cluster().address().trim_start_matches("tcp://").to_string();
    // Not the kiln protocol at all.
    let mut raw = std::net::TcpStream::connect(&address).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = raw.read_to_end(&mut buf);
    // A future protocol version is refused with a message naming both versions.
    let mut hello = kiln_protocol::encode_hello(&kiln_protocol::Hello::new(kiln_protocol::Role::Client, "old"));
    hello[4] = 99;
    let mut raw = std::net::TcpStream::connect(&address).unwrap();
    raw.write_all(&hello).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    match kiln_protocol::decode_reply(&reply).unwrap() {
        Some((kiln_protocol::Reply::Refused(message), _)) => assert!(message.contains("99"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A valid handshake followed by a malformed packet: that connection goes, nothing else.
    let mut raw = std::net::TcpStream::connect(&address).unwrap();
    raw.write_all(&kiln_protocol::encode_hello(&kiln_protocol::Hello::new(kiln_protocol::Role::Client, "bad")))
        .unwrap();
    raw.write_all(&[0xff; 64]).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = raw.read_to_end(&mut Vec::new());
    assert_eq!(add().call(2, 3).compute_on(&client()).unwrap(), 5);
}

/// Runs 24 slow tasks that all read one large scattered value and counts, per worker, how many
/// results each worker holds.
fn run_pinned_work(stealing: bool) -> Vec<usize> {
    register();
    let mut server = kiln_distributed::ServerConfig::default();
    server.policy.work_stealing = stealing;
    let cluster = LocalCluster::builder().workers(3).mode(WorkerMode::Threads).server(server).start().unwrap();
    let client = cluster.client().unwrap();
    let work = func2("pinned", |v: &Vec<f64>, i: &i64| {
        std::thread::sleep(Duration::from_millis(40));
        v.len() as i64 + i
    })
    .portable("test.pinned");
    KernelRegistry::global().register_instance(work.kernel());
    // 40 MB on one worker: moving it looks dearer than the default duration guess, so every
    // task lands on its holder at first.
    let data = client.scatter(vec![vec![0.0f64; 5_000_000]]).unwrap();
    let futures = client.submit_all((0..24i64).map(|i| work.call(&data[0], i)).collect()).unwrap();
    let results = client.gather(&futures).unwrap();
    assert_eq!(results, (0..24).map(|i| 5_000_000 + i).collect::<Vec<i64>>());
    let keys: Vec<kiln_graph::Key> = futures.iter().map(|f| f.key().clone()).collect();
    let holders = client.who_has(&keys).unwrap();
    let workers = client.workers();
    workers.iter().map(|w| holders.iter().filter(|h| h.contains(&w.id)).count()).collect()
}

#[test]
fn idle_workers_steal_work_pinned_to_one_worker() {
    let without = run_pinned_work(false);
    assert_eq!(without.iter().filter(|&&n| n > 0).count(), 1, "without stealing one worker runs all: {without:?}");
    let with = run_pinned_work(true);
    assert!(with.iter().filter(|&&n| n > 0).count() >= 2, "stealing spreads the work: {with:?}");
    assert!(*with.iter().max().unwrap() < 24, "{with:?}");
}

#[test]
fn scaling_down_retires_workers_without_losing_results() {
    if std::env::var("KILN_TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug").try_init();
    }
    register();
    let cluster = LocalCluster::builder().workers(3).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    // Slow enough that every worker computes (and holds) some of them.
    let parts = client.map(&slow(), 0..30i64).unwrap();
    client.wait(&parts).unwrap();
    let holders = client.who_has(&parts.iter().map(|p| p.key().clone()).collect::<Vec<_>>()).unwrap();
    let distinct: std::collections::BTreeSet<kiln_protocol::messages::WorkerId> =
        holders.iter().flatten().copied().collect();
    assert!(distinct.len() >= 2, "results should be spread: {holders:?}");
    cluster.scale(1).unwrap();
    assert_eq!(cluster.worker_count(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.workers().len() != 1 {
        assert!(std::time::Instant::now() < deadline, "the retired workers are still listed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every result survived the retirement and is still where the scheduler says.
    assert_eq!(client.gather(&parts).unwrap(), (0..30).collect::<Vec<i64>>());
    cluster.scale(2).unwrap();
    client.wait_for_workers(2, Duration::from_secs(10)).unwrap();
}

#[test]
fn adaptive_scaling_grows_under_a_burst_and_shrinks_when_idle() {
    register();
    let cluster = LocalCluster::builder().workers(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    cluster.adapt(1, 3);
    let nap = func1("nap", |x: &i64| {
        std::thread::sleep(Duration::from_millis(30));
        *x
    })
    .portable("test.nap");
    KernelRegistry::global().register_instance(nap.kernel());
    let burst = client.map(&nap, 0..120i64).unwrap();
    let mut peak = 0;
    while !burst.iter().all(|f| f.done()) {
        peak = peak.max(client.workers().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(client.gather(&burst).unwrap(), (0..120).collect::<Vec<i64>>());
    assert!(peak >= 2, "the cluster did not grow under the burst (peak {peak} workers)");
    drop(burst);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.worker_count() > 1 {
        assert!(std::time::Instant::now() < deadline, "the cluster did not shrink when idle");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.stop_adapting();
    assert_eq!(client.submit(inc().call(1)).unwrap().result().unwrap(), 2);
}

#[test]
fn a_clusters_memory_target_is_its_workers_limits() {
    use kiln_graph::Scheduler;
    // No limits: no target, so stored blocks are held as before.
    assert_eq!(client().memory_target(), None);
    let limited = LocalCluster::builder().workers(2).mode(WorkerMode::Threads).memory_limit(1 << 30).start().unwrap();
    let limited_client = limited.client().unwrap();
    limited_client.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    assert_eq!(limited_client.memory_target(), Some(2 << 30));
}
