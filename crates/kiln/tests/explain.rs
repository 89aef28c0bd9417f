//! `explain_on` and `dot_on` show how a computation keeps its stored blocks on a scheduler.

use kiln::Scheduler;
use kiln::array::random::RandomState;
use kiln::array::zarr::from_zarr;
use kiln::local::Progress;
use kiln::prelude::*;

/// A local scheduler with a memory target, so that optimization plans re-reads.
struct WithTarget(LocalScheduler, Option<u64>);

impl Scheduler for WithTarget {
    fn compute(
        &self,
        g: &kiln::graph::Graph,
        o: &[kiln::graph::TaskId],
    ) -> Result<Vec<kiln::Value>, kiln::ComputeError> {
        self.0.compute(g, o)
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn memory_target(&self) -> Option<u64> {
        self.1
    }
}

#[test]
fn explain_says_which_stored_blocks_are_read_again() {
    let dir = std::env::temp_dir().join(format!("kiln-explain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let local = LocalScheduler::threads(2).with_progress(Progress::Never);
    RandomState::new(3).random(&[40, 40], vec![4, 4]).to_zarr(&dir).unwrap().compute_on(&local).unwrap();
    let x = from_zarr::<f64>(&dir, None).unwrap();
    let seed = (&x + &x.t() - &x.mean_axis(0)).std();

    let no_target = seed.explain_on(&WithTarget(local.clone(), None)).unwrap();
    assert!(
        no_target.contains("held until their last reader (100 reads; the scheduler has no memory target"),
        "{no_target}"
    );

    let roomy = seed.explain_on(&WithTarget(local.clone(), Some(1 << 30))).unwrap();
    assert!(roomy.contains("held until their last reader (100 reads; within the cap"), "{roomy}");

    // 128 bytes a block: a target of 8 KiB caps held stored blocks at 1 KiB, 8 blocks.
    let tight = WithTarget(local.clone(), Some(8 << 10));
    let text = seed.explain_on(&tight).unwrap();
    assert!(text.contains("stored blocks are read again"), "{text}");
    assert!(text.contains("cap 1.00 KiB"), "{text}");
    let dot = seed.dot_on(&tight).unwrap();
    assert!(dot.contains("shape=cylinder"), "reads are drawn as storage");
    assert!(dot.contains("from-zarr-reread") || dot.matches("from-zarr").count() > 100, "the extra reads are drawn");

    // Same answer either way.
    let held = seed.scalar().compute_on(&WithTarget(local.clone(), None)).unwrap();
    let reread = seed.scalar().compute_on(&tight).unwrap();
    assert!((held - reread).abs() <= 1e-12 * held.abs(), "{held} vs {reread}");
    std::fs::remove_dir_all(&dir).unwrap();
}
