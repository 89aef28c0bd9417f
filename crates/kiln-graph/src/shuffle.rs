//! The staged hash shuffle: the graph pattern that moves every item of `n_in` partitions to
//! the output partition its key hashes to, shared by every collection whose partitions can be
//! split by key (dataframes now, bags later).
//!
//! A direct shuffle needs `n_in × n_out` pieces. Like Dask's `rearrange_by_column_tasks`, this
//! one routes items in `stages` rounds instead: an item's output partition number is written
//! in base `k` (`k <= max_branch`, `k^stages >= max(n_in, n_out)`), and round `s` sends it to
//! the partition whose digit `s` matches. Each round *splits* every partition into `k` pieces
//! by that digit, *selects* each piece as its own task (so a cluster moves only that piece) and
//! *concatenates* the `k` pieces that share every other digit. Tasks grow as
//! `n · k · stages`, O(n log n) for a fixed `max_branch`; with `n <= max_branch` it is the
//! direct one-round shuffle.
//!
//! Partitions live at *positions* `0..k^stages`. Input `i` starts at position `i`; after round
//! `s` the partition at position `q` holds the items whose output number agrees with `q` in
//! digits `0..=s`, so after the last round position `p` is output partition `p`. Positions
//! that hold no input and pieces no output needs are never built.
//!
//! The builder only wires tasks: the caller's [`ShuffleKernels`] make the kernels (portable or
//! not) for its partition type, and [`SplitStage::piece`] is the digit rule their split kernel
//! must apply to each item's output partition (`hash(key) % n_out`).
//!
//! ```
//! use std::sync::Arc;
//! use kiln_graph::shuffle::{ShuffleKernels, SplitStage, staged_shuffle};
//! use kiln_graph::{Arg, GraphBuilder, Kernel, Key, kernel::{func1, slice_kernel, input}, Value};
//!
//! // Partitions are Vec<u64>; an item's output partition is the item modulo n_out.
//! struct Ints;
//! impl ShuffleKernels for Ints {
//!     fn split(&self, stage: SplitStage) -> Arc<dyn Kernel> {
//!         Arc::new(func1("split", move |part: &Vec<u64>| {
//!             let mut pieces = vec![Vec::new(); stage.base as usize];
//!             for &x in part {
//!                 pieces[stage.piece((x % u64::from(stage.npartitions_out)) as u32) as usize].push(x);
//!             }
//!             pieces
//!         }))
//!     }
//!     fn select(&self, piece: u32) -> Arc<dyn Kernel> {
//!         Arc::new(func1("select", move |pieces: &Vec<Vec<u64>>| pieces[piece as usize].clone()))
//!     }
//!     fn concat(&self) -> Arc<dyn Kernel> {
//!         Arc::new(slice_kernel("concat", |parts: &[Value]| {
//!             let mut out: Vec<u64> = Vec::new();
//!             for i in 0..parts.len() { out.extend(input::<Vec<u64>>(parts, i)?); }
//!             Ok(Value::new(out))
//!         }))
//!     }
//! }
//! let mut b = GraphBuilder::new();
//! let source: Arc<dyn Kernel> = Arc::new(func1("id", |v: &Vec<u64>| v.clone()));
//! let inputs: Vec<_> = (0..4u64)
//!     .map(|i| b.add(Key::with_index("in", [i as u32]), source.clone(), vec![Arg::literal(vec![i, i + 4])]).unwrap())
//!     .collect();
//! let outputs = staged_shuffle(&mut b, "shuffle", "abc", &inputs, 3, 2, &Ints).unwrap();
//! assert_eq!(outputs.len(), 3);
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::GraphError;
use crate::graph::{Arg, GraphBuilder, TaskId};
use crate::kernel::Kernel;
use crate::key::Key;

/// What one split task does: send each item to piece [`SplitStage::piece`] of its output
/// partition number. Kernels carry it in their parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitStage {
    /// The round, `0..stages` (which digit routes the items).
    pub stage: u32,
    /// How many pieces each partition is split into (the digits' base `k`).
    pub base: u32,
    /// How many output partitions the shuffle has: an item's output partition is
    /// `hash(key) % npartitions_out`.
    pub npartitions_out: u32,
}

impl SplitStage {
    /// The piece (`0..base`) an item bound for output partition `destination` goes to in this
    /// round: digit `stage` of `destination` in base `base`.
    pub fn piece(&self, destination: u32) -> u32 {
        let base = u64::from(self.base.max(1));
        let scale = base.checked_pow(self.stage).unwrap_or(u64::MAX);
        ((u64::from(destination) / scale) % base) as u32
    }
}

/// The shape of a staged shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShufflePlan {
    /// Input partitions.
    pub npartitions_in: u32,
    /// Output partitions.
    pub npartitions_out: u32,
    /// Rounds of splitting.
    pub stages: u32,
    /// Pieces per split (`<= max_branch`).
    pub base: u32,
}

impl ShufflePlan {
    /// The fewest rounds with at most `max_branch` pieces per split, then the smallest base
    /// that covers `max(n_in, n_out)` positions in that many rounds (Dask's choice).
    ///
    /// # Errors
    /// [`GraphError::InvalidShuffle`] for no input or output partitions, or `max_branch < 2`.
    pub fn new(npartitions_in: usize, npartitions_out: usize, max_branch: usize) -> Result<ShufflePlan, GraphError> {
        let invalid = |what: String| Err(GraphError::InvalidShuffle(what));
        if npartitions_in == 0 || npartitions_out == 0 {
            return invalid(format!(
                "{npartitions_in} input and {npartitions_out} output partitions; both must be at least 1"
            ));
        }
        if max_branch < 2 {
            return invalid(format!("max_branch is {max_branch}; it must be at least 2"));
        }
        let n = npartitions_in.max(npartitions_out) as u64;
        if n > u64::from(u32::MAX / 2) {
            return invalid(format!("{n} partitions are too many"));
        }
        let covers = |base: u64, stages: u32| base.checked_pow(stages).is_none_or(|w| w >= n);
        let mut stages = 1u32;
        while !covers(max_branch as u64, stages) {
            stages += 1;
        }
        let mut base = 1u64;
        while !covers(base, stages) {
            base += 1;
        }
        Ok(ShufflePlan {
            npartitions_in: npartitions_in as u32,
            npartitions_out: npartitions_out as u32,
            stages,
            base: base as u32,
        })
    }

    /// The number of positions, `base^stages`.
    pub fn width(&self) -> usize {
        (self.base as usize).pow(self.stages)
    }

    /// The split rule of round `stage`.
    pub fn stage(&self, stage: u32) -> SplitStage {
        SplitStage { stage, base: self.base, npartitions_out: self.npartitions_out }
    }
}

/// Makes the kernels of a shuffle for one partition type.
pub trait ShuffleKernels {
    /// A kernel taking one partition and returning its `stage.base` pieces, piece `j` holding
    /// the items `x` with `stage.piece(out(x)) == j`, in their original order.
    fn split(&self, stage: SplitStage) -> Arc<dyn Kernel>;
    /// A kernel taking a split's result and returning piece `piece` as a partition.
    fn select(&self, piece: u32) -> Arc<dyn Kernel>;
    /// A kernel concatenating any number (at least one) of partitions, in input order.
    fn concat(&self) -> Arc<dyn Kernel>;
}

/// Adds a staged shuffle of the partitions `inputs` into `npartitions_out` partitions and
/// returns the output partitions' tasks in order. Keys are `{label}-split-{token}`
/// `(stage, position)`, `{label}-select-{token}` `(stage, position, piece)` and
/// `{label}-{token}` `(stage, position)` (the outputs are the last stage's); `token` must
/// identify the input and the kernels, as every key does.
///
/// # Errors
/// As [`ShufflePlan::new`]; a builder error.
pub fn staged_shuffle(
    builder: &mut GraphBuilder,
    label: &str,
    token: &str,
    inputs: &[TaskId],
    npartitions_out: usize,
    max_branch: usize,
    kernels: &dyn ShuffleKernels,
) -> Result<Vec<TaskId>, GraphError> {
    let plan = ShufflePlan::new(inputs.len(), npartitions_out, max_branch)?;
    let split_name: Arc<str> = format!("{label}-split-{token}").into();
    let select_name: Arc<str> = format!("{label}-select-{token}").into();
    let concat_name: Arc<str> = format!("{label}-{token}").into();
    let concat = kernels.concat();
    let selects: Vec<Arc<dyn Kernel>> = (0..plan.base).map(|j| kernels.select(j)).collect();
    let width = plan.width();
    let n_out = npartitions_out;
    let base = plan.base as usize;
    let mut current: Vec<Option<TaskId>> = (0..width).map(|q| inputs.get(q).copied()).collect();
    let mut scale = 1usize; // base^stage
    for stage in 0..plan.stages {
        let split = kernels.split(plan.stage(stage));
        let routed = scale * base; // base^(stage+1): positions agreeing below this hold the same outputs
        // Pieces for each position of this round, made on first use.
        let mut pieces: Vec<Option<TaskId>> = vec![None; width];
        let mut next: Vec<Option<TaskId>> = vec![None; width];
        for (target, slot) in next.iter_mut().enumerate() {
            if target % routed >= n_out {
                continue; // no output partition agrees with `target` in the routed digits
            }
            let digit = (target / scale) % base;
            let group = target - digit * scale;
            let mut args = Vec::with_capacity(base);
            for i in 0..base {
                let source = group + i * scale;
                let Some(partition) = current[source] else { continue };
                let split_id = match pieces[source] {
                    Some(id) => id,
                    None => {
                        let key = Key::from_shared(&split_name, &[stage, source as u32]);
                        let id = builder.add(key, split.clone(), vec![Arg::Task(partition)])?;
                        pieces[source] = Some(id);
                        id
                    }
                };
                let key = Key::from_shared(&select_name, &[stage, source as u32, digit as u32]);
                args.push(Arg::Task(builder.add(key, selects[digit].clone(), vec![Arg::Task(split_id)])?));
            }
            if !args.is_empty() {
                let key = Key::from_shared(&concat_name, &[stage, target as u32]);
                *slot = Some(builder.add(key, concat.clone(), args)?);
            }
        }
        current = next;
        scale = routed;
    }
    (0..n_out)
        .map(|p| current[p].ok_or_else(|| GraphError::InvalidShuffle(format!("output partition {p} was not built"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{func1, input, slice_kernel};
    use crate::value::Value;
    use crate::{Graph, graph::Input};
    use proptest::prelude::*;

    fn destination(x: u64, n_out: u32) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes()) % u64::from(n_out)) as u32
    }

    struct Ints;

    impl ShuffleKernels for Ints {
        fn split(&self, stage: SplitStage) -> Arc<dyn Kernel> {
            Arc::new(func1("split", move |part: &Vec<u64>| {
                let mut pieces = vec![Vec::new(); stage.base as usize];
                for &x in part {
                    pieces[stage.piece(destination(x, stage.npartitions_out)) as usize].push(x);
                }
                pieces
            }))
        }
        fn select(&self, piece: u32) -> Arc<dyn Kernel> {
            Arc::new(func1("select", move |pieces: &Vec<Vec<u64>>| pieces[piece as usize].clone()))
        }
        fn concat(&self) -> Arc<dyn Kernel> {
            Arc::new(slice_kernel("concat", |parts: &[Value]| {
                let mut out: Vec<u64> = Vec::new();
                for i in 0..parts.len() {
                    out.extend(input::<Vec<u64>>(parts, i)?);
                }
                Ok(Value::new(out))
            }))
        }
    }

    /// Builds a shuffle of `partitions` and runs it in id order (ids are topological).
    fn run(partitions: &[Vec<u64>], n_out: usize, max_branch: usize) -> (Graph, Vec<Vec<u64>>) {
        let mut b = GraphBuilder::new();
        let source: Arc<dyn Kernel> = Arc::new(func1("source", |v: &Vec<u64>| v.clone()));
        let inputs: Vec<TaskId> = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| b.add(Key::with_index("in", [i as u32]), source.clone(), vec![Arg::literal(p.clone())]))
            .collect::<Result<_, _>>()
            .unwrap();
        let outputs = staged_shuffle(&mut b, "shuffle", "t", &inputs, n_out, max_branch, &Ints).unwrap();
        let graph = b.build().unwrap();
        let mut values: Vec<Option<Value>> = vec![None; graph.len()];
        for id in graph.ids() {
            let args: Vec<Value> = graph
                .inputs(id)
                .iter()
                .map(|i| match i {
                    Input::Task(t) => values[t.index()].clone().unwrap(),
                    Input::Literal(v) => v.clone(),
                })
                .collect();
            values[id.index()] = Some(graph.kernel(id).call(&args).unwrap());
        }
        let out = outputs
            .iter()
            .map(|o| values[o.index()].as_ref().unwrap().downcast_ref::<Vec<u64>>().unwrap().clone())
            .collect();
        (graph, out)
    }

    fn count(graph: &Graph, prefix: &str) -> usize {
        graph.keys().iter().filter(|k| k.name().starts_with(prefix)).count()
    }

    #[test]
    fn the_plan_uses_one_round_up_to_max_branch_and_the_smallest_base_beyond() {
        let p = ShufflePlan::new(32, 32, 32).unwrap();
        assert_eq!((p.stages, p.base), (1, 32));
        let p = ShufflePlan::new(33, 10, 32).unwrap();
        assert_eq!((p.stages, p.base), (2, 6));
        let p = ShufflePlan::new(1000, 1000, 32).unwrap();
        assert_eq!((p.stages, p.base), (2, 32));
        let p = ShufflePlan::new(1, 1, 2).unwrap();
        assert_eq!((p.stages, p.base), (1, 1));
        let p = ShufflePlan::new(4, 100, 8).unwrap();
        assert_eq!((p.stages, p.base), (3, 5));
        assert!(ShufflePlan::new(0, 3, 8).is_err());
        assert!(ShufflePlan::new(3, 0, 8).is_err());
        assert!(ShufflePlan::new(3, 3, 1).is_err());
    }

    #[test]
    fn a_one_round_shuffle_has_n_splits_n_times_m_selects_and_m_concats() {
        let parts: Vec<Vec<u64>> = (0..5).map(|i| vec![i]).collect();
        let (graph, _) = run(&parts, 3, 8);
        // Base 5 (max(n_in, n_out)); pieces 3 and 4 would go to no output, so they are not built.
        assert_eq!(count(&graph, "shuffle-split-"), 5);
        assert_eq!(count(&graph, "shuffle-select-"), 15);
        assert_eq!(count(&graph, "shuffle-t"), 3);
        assert_eq!(graph.len(), 5 + 5 + 15 + 3);
    }

    #[test]
    fn a_staged_shuffle_grows_as_n_log_n_not_n_squared() {
        let parts: Vec<Vec<u64>> = (0..64).map(|i| vec![i]).collect();
        let (graph, _) = run(&parts, 64, 8);
        // Two rounds of base 8: per round 64 splits, 64 × 8 selects and 64 concats.
        assert_eq!(count(&graph, "shuffle-split-"), 128);
        assert_eq!(count(&graph, "shuffle-select-"), 1024);
        assert_eq!(count(&graph, "shuffle-t"), 128);
        // A direct shuffle would need 64 × 64 = 4096 pieces.
        let (direct, _) = run(&parts, 64, 64);
        assert_eq!(count(&direct, "shuffle-select-"), 4096);
        // Every concat reads at most max_branch pieces.
        for id in graph.ids().filter(|&id| graph.key(id).name() == "shuffle-t") {
            assert!(graph.dependencies(id).len() <= 8);
        }
    }

    #[test]
    fn positions_holding_no_input_are_not_built() {
        // 3 inputs, 9 outputs, base 3 in 2 rounds: round 0 only has positions 0..3 to split.
        let parts: Vec<Vec<u64>> = (0..3).map(|i| vec![i, i + 100]).collect();
        let (graph, out) = run(&parts, 9, 3);
        let round0 = graph.keys().iter().filter(|k| k.name() == "shuffle-split-t" && k.index()[0] == 0).count();
        assert_eq!(round0, 3);
        assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 6);
    }

    proptest! {
        #[test]
        fn every_item_reaches_its_hash_partition_exactly_once(
            sizes in proptest::collection::vec(0usize..6, 1..40),
            n_out in 1usize..40,
            max_branch in 2usize..9,
        ) {
            let mut next = 0u64;
            let parts: Vec<Vec<u64>> = sizes
                .iter()
                .map(|&s| (0..s).map(|_| { next += 1; next * 7919 % 1000 }).collect())
                .collect();
            let (graph, out) = run(&parts, n_out, max_branch);
            prop_assert_eq!(out.len(), n_out);
            let mut seen: Vec<u64> = Vec::new();
            for (p, part) in out.iter().enumerate() {
                for &x in part {
                    prop_assert_eq!(destination(x, n_out as u32) as usize, p);
                    seen.push(x);
                }
            }
            let mut all: Vec<u64> = parts.concat();
            all.sort_unstable();
            seen.sort_unstable();
            prop_assert_eq!(seen, all);
            let plan = ShufflePlan::new(parts.len(), n_out, max_branch).unwrap();
            prop_assert!(plan.base as usize <= max_branch);
            let n = parts.len().max(n_out);
            // Splits + concats per round <= 2 × width, selects <= width × base.
            let bound = parts.len() + plan.stages as usize * plan.width() * (2 + plan.base as usize);
            prop_assert!(graph.len() <= bound, "{} tasks for n = {}", graph.len(), n);
        }
    }
}
