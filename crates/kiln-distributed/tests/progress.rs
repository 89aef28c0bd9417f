//! The progress feed of cluster work against a real `LocalCluster` (workers as threads, real
//! TCP): the counts the scheduler reports reach the submitted graphs' totals, for futures and
//! for `compute`, including tasks whose results were released on the way. No terminal is
//! needed: the feed is what the bar draws.

use kiln_delayed::{Delayed, func1, func2};
use kiln_distributed::{LocalCluster, TaskProgress, WorkerMode, progress};
use kiln_graph::{Collection, KernelRegistry, Key};
use kiln_local::Progress;

fn register() {
    let r = KernelRegistry::global();
    r.register_instance(func1("inc", |x: &i64| x + 1).portable("progress-test.inc").kernel());
    r.register_instance(func2("add", |a: &i64, b: &i64| a + b).portable("progress-test.add").kernel());
}

/// `width` chains of `depth` increments, summed pairwise: only the sum is wanted, so every
/// other result is released (and its name forgotten) as soon as its dependents have run.
fn chains(width: i64, depth: usize) -> (Delayed<i64>, u64) {
    let inc = func1("inc", |x: &i64| x + 1).portable("progress-test.inc");
    let add = func2("add", |a: &i64, b: &i64| a + b).portable("progress-test.add");
    let mut tasks = 0;
    let mut level: Vec<Delayed<i64>> = (0..width)
        .map(|i| {
            let mut x = inc.call(i * 1000);
            tasks += 1;
            for _ in 1..depth {
                x = inc.call(x);
                tasks += 1;
            }
            x
        })
        .collect();
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            match pair {
                [a, b] => {
                    next.push(add.call(a.clone(), b.clone()));
                    tasks += 1;
                }
                [a] => next.push(a.clone()),
                _ => unreachable!("chunks of two"),
            }
        }
        level = next;
    }
    (level.pop().expect("one root"), tasks)
}

#[test]
fn the_feed_reaches_the_total_for_futures_and_compute() {
    register();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(2).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    client.set_progress(Progress::Never);

    // Futures: `progress` waits for them; afterwards the feed says every task finished,
    // although the intermediate results are gone from the cluster.
    let (root, tasks) = chains(16, 5);
    let future = client.submit(root).unwrap();
    progress(std::slice::from_ref(&future)).unwrap();
    let expected: i64 = (0..16).map(|i| i * 1000 + 5).sum();
    assert_eq!(future.result().unwrap(), expected);
    let p = client.progress_of(std::slice::from_ref(future.key())).unwrap();
    assert_eq!(p, TaskProgress { done: tasks, total: tasks });
    assert!(p.complete());

    // Many futures of one submission count their graph once.
    let inc = func1("inc", |x: &i64| x + 1).portable("progress-test.inc");
    let futures = client.map(&inc, 0..50i64).unwrap();
    progress(&futures).unwrap();
    let keys: Vec<Key> = futures.iter().map(|f| f.key().clone()).collect();
    assert_eq!(client.progress_of(&keys).unwrap(), TaskProgress { done: 50, total: 50 });
    // Both submissions together.
    let mut all = keys.clone();
    all.push(future.key().clone());
    assert_eq!(client.progress_of(&all).unwrap(), TaskProgress { done: 50 + tasks, total: 50 + tasks });

    // Keys this client did not submit count for nothing.
    assert_eq!(client.progress_of(&[Key::new("not-submitted")]).unwrap(), TaskProgress::default());
    // Released futures are forgotten by the feed too.
    drop(futures);
    assert_eq!(client.progress_of(&keys).unwrap(), TaskProgress::default());

    // `compute` with the bar forced on (stderr is not a terminal here: plain lines) runs the
    // same feed beside the computation and returns the right result.
    client.set_progress(Progress::Always);
    let (root, _) = chains(8, 3);
    let out = root.compute_on(&client).unwrap();
    assert_eq!(out, (0..8).map(|i| i * 1000 + 3).sum::<i64>());
}
