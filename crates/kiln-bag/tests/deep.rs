//! A chain of 100,000 elementwise steps builds, runs and drops on a 2 MiB stack: appending a
//! step is O(1), the fused kernel collects the steps iteratively, and the step list unlinks
//! without recursion (ARCHITECTURE.md: every walk is iterative).

use kiln_bag::Bag;
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};

const STEPS: u64 = 100_000;

fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap();
}

#[test]
fn a_hundred_thousand_chained_maps_build_run_and_drop() {
    on_small_stack(|| {
        let mut bag = Bag::range(10, 3);
        for _ in 0..STEPS {
            bag = bag.map(|x| x + 1);
        }
        let scheduler = LocalScheduler::threads(2).with_progress(Progress::Never);
        assert_eq!(bag.compute_on(&scheduler).unwrap(), (STEPS..STEPS + 10).collect::<Vec<_>>());
        assert_eq!(bag.sum().compute_on(&scheduler).unwrap(), 10 * STEPS + 45);
        drop(bag);
    });
}

#[test]
fn a_hundred_thousand_mixed_steps_with_shared_prefixes_drop() {
    on_small_stack(|| {
        let mut bag = Bag::range(4, 2);
        let mut kept = Vec::new();
        for i in 0..STEPS {
            bag = if i % 2 == 0 { bag.filter(|_| true) } else { bag.map(|x| x + 1) };
            if i % 25_000 == 0 {
                kept.push(bag.clone());
            }
        }
        let scheduler = LocalScheduler::threads(1).with_progress(Progress::Never);
        assert_eq!(bag.count().compute_on(&scheduler).unwrap(), 4);
        drop(bag);
        assert_eq!(kept[0].compute_on(&scheduler).unwrap(), vec![0, 1, 2, 3]);
        drop(kept);
    });
}
