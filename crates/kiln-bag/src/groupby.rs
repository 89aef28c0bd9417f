//! `groupby`: every element moved to the partition its key hashes to, through the staged
//! shuffle that dataframes use ([`kiln_graph::shuffle::staged_shuffle`]), then grouped there.
//!
//! The shuffle's kernels for a bag of `T`:
//! - **split** of round `s`: a pipeline step sending each element to piece
//!   `stage.piece(destination(key(x)))` ([`Pieces`]). The first round's split is the last step
//!   of the input partition's fused pipeline, so a file is read in chunks straight into its
//!   pieces and an owned partition (after a `map`) is moved, not cloned.
//! - **select**: one piece of a split, as a partition (`kiln.bag.select/{tag}`).
//! - **concat**: the pieces bound for one position, in input order (`kiln.bag.concat/{tag}`).
//!
//! Every round keeps the input order of the elements it routes, so each output partition holds
//! its elements in bag order; the group step after the last round lists the groups in order of
//! first occurrence there, each group's elements in bag order.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use kiln_graph::graph::Input;
use kiln_graph::kernel::{input, slice_kernel};
use kiln_graph::shuffle::{ShuffleKernels, ShufflePlan, SplitStage, staged_shuffle};
use kiln_graph::{GraphBuilder, Kernel, KernelSpec, Key, TaskError, Tokenizer, Value};
use rustc_hash::{FxHashMap, FxHasher};

use crate::node::{Node, NodeArg};
use crate::pipeline::{self, Part, PipelineKernel, Stage, Step, Streaming};
use crate::portable::{SpecKernel, StepSpec, tag_of};
use crate::{Bag, BagError, Element, fresh_token, steps};

/// How [`Bag::groupby_with`] shuffles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupByOptions {
    /// How many partitions the groups land in; `None` keeps the bag's partition count (Dask's
    /// default).
    pub npartitions: Option<usize>,
    /// The most pieces one partition is split into per round (at least 2; Dask's `max_branch`,
    /// 32 by default). With more partitions than this the shuffle runs in several rounds, so
    /// its tasks grow as `n log n` rather than `n²`.
    pub max_branch: usize,
}

/// [`GroupByOptions::max_branch`]'s default, as in Dask.
pub const DEFAULT_MAX_BRANCH: usize = 32;

impl Default for GroupByOptions {
    fn default() -> Self {
        GroupByOptions { npartitions: None, max_branch: DEFAULT_MAX_BRANCH }
    }
}

/// The output partition of a key among `npartitions`: a hash that every process computes the
/// same way (FxHash of the key's `Hash`, mixed so that the low bits vary).
pub(crate) fn destination<K: Hash + ?Sized>(key: &K, npartitions: u32) -> u32 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    (steps::splitmix64(hasher.finish()) % u64::from(npartitions.max(1))) as u32
}

/// A split partition: piece `j` holds the elements bound for digit `j` of this round.
#[derive(Clone, Debug)]
pub(crate) struct Pieces<T>(pub(crate) Vec<Vec<T>>);

pub(crate) type KeyFn<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// Sends each of `items` to its piece.
fn route<T, K: Hash>(pieces: &mut [Vec<T>], items: impl Iterator<Item = T>, key: &KeyFn<T, K>, stage: SplitStage) {
    for x in items {
        let piece = stage.piece(destination(&key(&x), stage.npartitions_out));
        pieces[piece as usize].push(x);
    }
}

/// The split of one round as a pipeline step; it folds chunks, so a file partition streams
/// into its pieces.
struct SplitStep<T, K> {
    key: KeyFn<T, K>,
    stage: SplitStage,
}

impl<T: Element, K: Hash + 'static> SplitStep<T, K> {
    fn absorb_part(&self, pieces: &mut Pieces<T>, part: Part<'_, T>) {
        match part {
            Part::Borrowed(items) => route(&mut pieces.0, items.iter().cloned(), &self.key, self.stage),
            Part::Owned(items) => route(&mut pieces.0, items.into_iter(), &self.key, self.stage),
        }
    }
}

fn lost_pieces() -> TaskError {
    TaskError::msg("groupby: a split's pieces of another type")
}

impl<T: Element, K: Hash + 'static> Step for SplitStep<T, K> {
    fn name(&self) -> &str {
        "groupby-split"
    }

    fn apply(&self, input: Stage<'_>) -> Result<Box<dyn std::any::Any + Send>, TaskError> {
        let mut pieces = Pieces((0..self.stage.base).map(|_| Vec::new()).collect());
        self.absorb_part(&mut pieces, pipeline::part_of::<T>(input)?);
        Ok(Box::new(pieces))
    }

    fn finish(&self, output: Box<dyn std::any::Any + Send>) -> Result<Value, TaskError> {
        Ok(Value::new(*output.downcast::<Pieces<T>>().map_err(|_| lost_pieces())?))
    }

    fn streaming(&self) -> Streaming {
        Streaming::Fold
    }

    fn absorb(
        &self,
        so_far: Box<dyn std::any::Any + Send>,
        chunk: Stage<'_>,
    ) -> Result<Box<dyn std::any::Any + Send>, TaskError> {
        let mut pieces = so_far.downcast::<Pieces<T>>().map_err(|_| lost_pieces())?;
        self.absorb_part(&mut pieces, pipeline::part_of::<T>(chunk)?);
        Ok(pieces)
    }
}

/// The split step of `stage`, known to other processes when the key function has an id.
pub(crate) fn split_step<T: Element, K: Hash + 'static>(
    key: KeyFn<T, K>,
    stage: SplitStage,
    id: Option<&str>,
) -> Arc<dyn Step> {
    let spec = id.and_then(|id| {
        postcard::to_allocvec(&stage).ok().map(|params| StepSpec { id: format!("kiln.bag.groupby_split/{id}"), params })
    });
    pipeline::with_spec(Arc::new(SplitStep { key, stage }), spec)
}

/// The groups of one output partition, in order of first occurrence, each in bag order.
pub(crate) fn group_step<T: Element, K: Element + Eq + Hash>(key: KeyFn<T, K>, id: Option<&str>) -> Arc<dyn Step> {
    let step = pipeline::step("groupby", move |part: Part<'_, T>| {
        let mut groups: Vec<(K, Vec<T>)> = Vec::new();
        let mut index: FxHashMap<K, usize> = FxHashMap::default();
        let mut add = |x: T| {
            let k = key(&x);
            match index.get(&k) {
                Some(&at) => groups[at].1.push(x),
                None => {
                    index.insert(k.clone(), groups.len());
                    groups.push((k, vec![x]));
                }
            }
        };
        match part {
            Part::Borrowed(items) => items.iter().cloned().for_each(&mut add),
            Part::Owned(items) => items.into_iter().for_each(&mut add),
        }
        Ok(groups)
    });
    let spec = id.map(|id| StepSpec { id: format!("kiln.bag.groupby/{id}"), params: Vec::new() });
    pipeline::with_spec(step, spec)
}

/// The kernel taking piece `piece` of a split.
pub(crate) fn select_kernel<T: Element>(piece: u32, tag: Option<&str>) -> Arc<dyn Kernel> {
    let inner: Arc<dyn Kernel> = Arc::new(slice_kernel("groupby-select", move |inputs: &[Value]| {
        let pieces = input::<Pieces<T>>(inputs, 0)?;
        let chosen = pieces.0.get(piece as usize).ok_or_else(|| {
            TaskError::msg(format!("groupby: piece {piece} of a split into {} pieces", pieces.0.len()))
        })?;
        Ok(Value::new(chosen.clone()))
    }));
    let spec = tag.and_then(|tag| {
        postcard::to_allocvec(&piece).ok().map(|params| KernelSpec { id: format!("kiln.bag.select/{tag}"), params })
    });
    Arc::new(SpecKernel { inner, spec, element: std::any::type_name::<T>() })
}

/// The shuffle's kernels for a bag of `T` keyed by `key`.
struct BagShuffle<T, K> {
    key: KeyFn<T, K>,
    id: Option<String>,
    tag: Option<Arc<str>>,
}

impl<T: Element, K: Hash + 'static> ShuffleKernels for BagShuffle<T, K> {
    fn split(&self, stage: SplitStage) -> Arc<dyn Kernel> {
        let step = split_step(Arc::clone(&self.key), stage, self.id.as_deref());
        Arc::new(PipelineKernel::from_steps(vec![step]))
    }

    fn select(&self, piece: u32) -> Arc<dyn Kernel> {
        select_kernel::<T>(piece, self.tag.as_deref())
    }

    fn concat(&self) -> Arc<dyn Kernel> {
        crate::ops::concat_kernel::<T>(self.tag.as_deref())
    }
}

impl<T: Element> Bag<T> {
    /// The elements grouped by `key` (Dask's `groupby`): a bag of `(key, elements)` pairs, one
    /// per distinct key, each group's elements in bag order. Every element moves to the
    /// partition its key hashes to through a staged shuffle, so this costs a full pass over
    /// the data and its copies; when the groups are only reduced, [`Bag::foldby`] is much
    /// faster. As many partitions as this bag; see [`Bag::groupby_with`] for more control. For
    /// a cluster, register the key function ([`crate::portable::register_group_key`]) and call
    /// [`Bag::portable`] on the result.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let mut groups = Bag::range(10, 3).groupby(|x| x % 3).compute_on(&LocalScheduler::new()).unwrap();
    /// groups.sort();
    /// assert_eq!(groups, vec![(0, vec![0, 3, 6, 9]), (1, vec![1, 4, 7]), (2, vec![2, 5, 8])]);
    /// ```
    pub fn groupby<K: Element + Eq + Hash>(&self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Bag<(K, Vec<T>)> {
        self.groupby_with(key, GroupByOptions::default())
    }

    /// [`Bag::groupby`] into `options.npartitions` partitions, splitting each partition into
    /// at most `options.max_branch` pieces per shuffle round.
    ///
    /// ```
    /// # use kiln_bag::{Bag, GroupByOptions}; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let options = GroupByOptions { npartitions: Some(5), max_branch: 2 };
    /// let groups = Bag::range(100, 8).groupby_with(|x| x % 7, options);
    /// assert_eq!(groups.npartitions(), 5);
    /// assert_eq!(groups.count().compute_on(&LocalScheduler::new()).unwrap(), 7);
    /// ```
    pub fn groupby_with<K: Element + Eq + Hash>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        options: GroupByOptions,
    ) -> Bag<(K, Vec<T>)> {
        let key: KeyFn<T, K> = Arc::new(key);
        let mut out = self.grouped(Arc::clone(&key), options, None);
        let input = self.clone();
        out.rebuild = Some(Arc::new(move |id: &str| input.grouped(Arc::clone(&key), options, Some(id))));
        out
    }

    /// The groupby's bag, its kernels and steps known to other processes under `id` when given.
    fn grouped<K: Element + Eq + Hash>(
        &self,
        key: KeyFn<T, K>,
        options: GroupByOptions,
        id: Option<&str>,
    ) -> Bag<(K, Vec<T>)> {
        if let Some(error) = &self.invalid {
            return Bag::invalid(error.clone());
        }
        let npartitions = options.npartitions.unwrap_or(self.npartitions());
        if npartitions == 0 {
            return Bag::invalid(BagError::ZeroPartitions { operation: "groupby" });
        }
        if options.max_branch < 2 {
            return Bag::invalid(BagError::MaxBranch(options.max_branch));
        }
        let base = self.steps.as_ref().map_or(self.base_token.as_ref(), |s| s.token.as_str());
        let token = match id {
            Some(id) => Tokenizer::new()
                .add(base)
                .add("groupby")
                .add(id)
                .add(&(npartitions as u64))
                .add(&(options.max_branch as u64))
                .finish(),
            None => fresh_token(),
        };
        let kernels = BagShuffle::<T, K> { key: Arc::clone(&key), id: id.map(str::to_string), tag: tag_of::<T>() };
        let shuffled = match self.shuffle_nodes(&token, npartitions, options.max_branch, &kernels) {
            Ok(nodes) => nodes,
            Err(error) => return Bag::invalid(error),
        };
        let mut bag = Bag::<T>::from_nodes(shuffled, token.clone());
        bag.split_every = self.split_every;
        bag.chunk_size = self.chunk_size;
        bag.then(group_step(key, id), &token)
    }

    /// The output partitions of a staged shuffle of this bag (its pending steps fused with the
    /// first round's splits). The shared builder wires the tasks into a scratch graph over
    /// placeholder inputs; its tasks become bag nodes, so the shuffle lowers, dedupes and fuses
    /// like every other bag task.
    fn shuffle_nodes<K: Hash + 'static>(
        &self,
        token: &str,
        npartitions: usize,
        max_branch: usize,
        kernels: &BagShuffle<T, K>,
    ) -> Result<Vec<Arc<Node>>, BagError> {
        let shuffle_error = |e: kiln_graph::GraphError| BagError::Shuffle(e.to_string());
        let plan = ShufflePlan::new(self.npartitions(), npartitions, max_branch).map_err(shuffle_error)?;
        let mut scratch = GraphBuilder::new();
        let placeholder_name: Arc<str> = format!("groupby-input-{token}").into();
        let placeholders = (0..self.npartitions())
            .map(|i| {
                scratch.add(
                    Key::from_shared(&placeholder_name, &[i as u32]),
                    Arc::new(kiln_graph::kernel::Identity),
                    [],
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(shuffle_error)?;
        let outputs = staged_shuffle(&mut scratch, "groupby", token, &placeholders, npartitions, max_branch, kernels)
            .map_err(shuffle_error)?;
        let graph = scratch.build().map_err(shuffle_error)?;

        // The first round's splits end the input partitions' pipelines.
        let mut first_round = self.steps.as_ref().map(pipeline::collect).unwrap_or_default();
        first_round.push(split_step(Arc::clone(&kernels.key), plan.stage(0), kernels.id.as_deref()));
        let whole: Arc<dyn Kernel> = Arc::new(PipelineKernel::from_steps(first_round.clone()));

        let n_in = placeholders.len();
        let mut nodes: Vec<Option<Arc<Node>>> = vec![None; graph.len()];
        for id in graph.ids() {
            if id.index() < n_in {
                continue;
            }
            let inputs = graph.inputs(id);
            let node = match inputs {
                [Input::Task(t)] if t.index() < n_in => crate::stream::pipeline_node(
                    graph.key(id).clone(),
                    &self.partitions[t.index()],
                    &first_round,
                    &whole,
                    self.chunk_size,
                ),
                _ => {
                    let args = inputs
                        .iter()
                        .map(|input| match input {
                            Input::Task(t) => nodes[t.index()].clone().map(NodeArg::Node).ok_or_else(|| {
                                BagError::Shuffle(format!("task {} reads a task not built before it", graph.key(id)))
                            }),
                            Input::Literal(v) => Ok(NodeArg::Literal(v.clone())),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Node::new(graph.key(id).clone(), Arc::clone(graph.kernel(id)), args)
                }
            };
            nodes[id.index()] = Some(node);
        }
        outputs
            .iter()
            .map(|o| nodes[o.index()].clone().ok_or_else(|| BagError::Shuffle(format!("output {} was not built", o.0))))
            .collect()
    }
}
