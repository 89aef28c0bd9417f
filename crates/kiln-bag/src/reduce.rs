//! Tree reductions: one partial result per partition (the last step of the partition's fused
//! pipeline), then combine tasks of at most `split_every` partials per level, down to one.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use kiln_graph::kernel::input;
use kiln_graph::{
    Collection, ComputeError, Graph, GraphBuilder, GraphError, Kernel, KernelSpec, Key, TaskError, TaskId, Value,
};
use rustc_hash::FxHashMap;

use crate::node::{self, Node, NodeArg};
use crate::pipeline::{self, Part};
use crate::portable::StepSpec;
use crate::{Bag, BagError, Element, fresh_token};

/// A lazily computed single value, such as a bag's sum (Dask's `Item`).
pub struct Item<R> {
    node: Result<Arc<Node>, BagError>,
    /// How [`Item::portable`] rebuilds this value with its user functions named (`fold`,
    /// `reduction`).
    rebuild: Option<ItemRebuild<R>>,
    _r: PhantomData<fn() -> R>,
}

type ItemRebuild<R> = Arc<dyn Fn(&str) -> Item<R> + Send + Sync>;

impl<R> Clone for Item<R> {
    fn clone(&self) -> Self {
        Item { node: self.node.clone(), rebuild: self.rebuild.clone(), _r: PhantomData }
    }
}

impl<R> std::fmt::Debug for Item<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Ok(node) => write!(f, "Item({})", node.key),
            Err(error) => write!(f, "Item(invalid: {error})"),
        }
    }
}

impl<R: Element> Item<R> {
    pub(crate) fn from_node(node: Arc<Node>) -> Item<R> {
        Item { node: Ok(node), rebuild: None, _r: PhantomData }
    }

    pub(crate) fn invalid(error: BagError) -> Item<R> {
        Item { node: Err(error), rebuild: None, _r: PhantomData }
    }

    /// Marks the user functions of the reduction that made this value (`fold`, `reduction`)
    /// as registered under `id`, so a cluster can run it: every process that runs it registers
    /// the same functions under the same id ([`crate::portable::register_fold`],
    /// [`crate::portable::register_reduction`]). A value made otherwise reports an error.
    ///
    /// ```
    /// # use kiln_bag::{Bag, portable}; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// fn longest(best: u64, s: &String) -> u64 { best.max(s.len() as u64) }
    /// fn larger(a: u64, b: &u64) -> u64 { a.max(*b) }
    /// portable::register_fold("doc.longest", longest, larger); // in the client and every worker
    /// let words = Bag::from_sequence(["a", "abc", "ab"].map(String::from), 2);
    /// let most = words.fold(longest, larger, 0).portable("doc.longest");
    /// assert_eq!(most.compute_on(&LocalScheduler::new()).unwrap(), 3);
    /// ```
    pub fn portable(&self, id: &str) -> Item<R> {
        match &self.rebuild {
            Some(rebuild) => rebuild(id),
            None => Item::invalid(self.node.clone().err().unwrap_or(BagError::NoUserFunction { id: id.to_string() })),
        }
    }

    fn with_rebuild(mut self, rebuild: impl Fn(&str) -> Item<R> + Send + Sync + 'static) -> Item<R> {
        self.rebuild = Some(Arc::new(rebuild));
        self
    }

    /// This value's key, or the reason the value is invalid.
    ///
    /// # Errors
    /// When it was built from an invalid bag.
    pub fn key(&self) -> Result<&Key, &BagError> {
        self.node.as_ref().map(|n| &n.key)
    }
}

impl<R: Element> Collection for Item<R> {
    type Output = R;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        match &self.node {
            Ok(node) => node::lower(std::slice::from_ref(node), builder),
            Err(error) => Err(GraphError::invalid("bag", error.clone())),
        }
    }

    fn output_count(&self) -> usize {
        1
    }

    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<R, ComputeError> {
        let value = values.into_iter().next().ok_or_else(|| ComputeError::Internal("no value returned".into()))?;
        value.take::<R>().map_err(|m| ComputeError::ResultType {
            key: graph.key(outputs[0]).clone(),
            expected: m.expected,
            found: m.found,
        })
    }
}

/// Numbers a bag can sum and average.
pub trait Numeric: Element + Copy + PartialOrd {
    /// The additive identity.
    const ZERO: Self;
    /// `self + other`, or `None` when it overflows (never for floats).
    fn checked_add(self, other: Self) -> Option<Self>;
    /// The value as an `f64` (rounded for large integers), for `mean`, `var` and `std`.
    fn to_f64(self) -> f64;
}

macro_rules! numeric_ints {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            const ZERO: Self = 0;
            fn checked_add(self, other: Self) -> Option<Self> {
                <$t>::checked_add(self, other)
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
numeric_ints!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);

macro_rules! numeric_floats {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            const ZERO: Self = 0.0;
            fn checked_add(self, other: Self) -> Option<Self> {
                Some(self + other)
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
numeric_floats!(f32, f64);

/// Count, mean and sum of squared deviations of some numbers, combinable (Chan et al.), so
/// `var` is stable without a second pass.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn of<T: Numeric>(items: &[T]) -> Moments {
        Moments::default().add(items)
    }

    /// These moments updated with `items`, one at a time (so any split of a partition into
    /// chunks gives the same bits as the whole).
    fn add<T: Numeric>(self, items: &[T]) -> Moments {
        let mut m = self;
        for x in items {
            m.count += 1;
            let x = x.to_f64();
            let delta = x - m.mean;
            m.mean += delta / m.count as f64;
            m.m2 += delta * (x - m.mean);
        }
        m
    }

    fn merge(a: Moments, b: &Moments) -> Moments {
        if a.count == 0 {
            return *b;
        }
        if b.count == 0 {
            return a;
        }
        let count = a.count + b.count;
        let delta = b.mean - a.mean;
        let mean = a.mean + delta * b.count as f64 / count as f64;
        let m2 = a.m2 + b.m2 + delta * delta * (a.count as f64 * b.count as f64 / count as f64);
        Moments { count, mean, m2 }
    }
}

/// Keys with values in first-seen order (so grouped results do not depend on hashing).
#[derive(Clone, Debug)]
pub(crate) struct OrderedMap<K, V> {
    pub(crate) entries: Vec<(K, V)>,
    index: FxHashMap<K, usize>,
}

impl<K: Eq + Hash + Clone, V> OrderedMap<K, V> {
    pub(crate) fn new() -> Self {
        OrderedMap { entries: Vec::new(), index: FxHashMap::default() }
    }

    /// A map of these entries (keys distinct, as they come from another map).
    pub(crate) fn from_entries(entries: Vec<(K, V)>) -> Self {
        let index = entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        OrderedMap { entries, index }
    }

    /// Updates the value under `key` (made with `init` when new) with `update`.
    fn upsert(&mut self, key: &K, init: impl FnOnce() -> V, update: impl FnOnce(V) -> V)
    where
        V: Default,
    {
        let at = match self.index.get(key) {
            Some(&at) => at,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key.clone(), init()));
                self.entries.len() - 1
            }
        };
        let slot = &mut self.entries[at].1;
        *slot = update(std::mem::take(slot));
    }
}

/// A value with a placeholder, so folds can move accumulators out of maps.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Acc<A>(Option<A>);

impl<A> Default for Acc<A> {
    fn default() -> Self {
        Acc(None)
    }
}

/// A fold's function: an accumulator and one more input.
pub(crate) type Binop<A, T> = Arc<dyn Fn(A, &T) -> A + Send + Sync>;
/// `reduction`'s function of one partition.
pub(crate) type PerPartition<T, R> = Arc<dyn Fn(&[T]) -> R + Send + Sync>;
/// `reduction`'s function of a list of partial results.
pub(crate) type Aggregate<R> = Arc<dyn Fn(Vec<R>) -> R + Send + Sync>;
/// A key function.
pub(crate) type KeyOf<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// `foldby`'s tree: per-partition groups of accumulators, finished as `(key, result)` pairs.
pub(crate) type FoldByReduction<T, K, A> = Reduction<T, OrderedMap<K, Acc<A>>, Vec<(K, A)>>;

/// `foldby`'s three user functions.
pub(crate) struct FoldBy<T, K, A> {
    pub(crate) key: KeyOf<T, K>,
    pub(crate) binop: Binop<A, T>,
    pub(crate) combine: Binop<A, A>,
}

impl<T, K, A> Clone for FoldBy<T, K, A> {
    fn clone(&self) -> Self {
        FoldBy { key: Arc::clone(&self.key), binop: Arc::clone(&self.binop), combine: Arc::clone(&self.combine) }
    }
}

type Combine<R> = Arc<dyn Fn(&[&R]) -> Result<R, TaskError> + Send + Sync>;
type Partial<T, R> = Arc<dyn Fn(Part<'_, T>) -> Result<R, TaskError> + Send + Sync>;
type Finalize<R, S> = Arc<dyn Fn(R) -> Result<S, TaskError> + Send + Sync>;
type Absorb<T, R> = Arc<dyn Fn(R, Part<'_, T>) -> Result<R, TaskError> + Send + Sync>;

/// A tree reduction's three functions: `partial` per partition (fused after the pending
/// steps), `combine` over at most `split_every` partials per task and level, and `finalize`
/// fused into the last combine. With an id (`kiln.bag.count/u64`, ...) and the same reduction
/// registered in another process ([`crate::portable`]), its tasks can run there.
pub(crate) struct Reduction<T, R, S> {
    pub(crate) name: &'static str,
    pub(crate) partial: Partial<T, R>,
    pub(crate) combine: Combine<R>,
    pub(crate) finalize: Finalize<R, S>,
    /// `partial` continued: the partial of a partition's elements so far folded with the next
    /// chunk's, equal to `partial` of both at once. With it, a partition read from a file is
    /// reduced chunk by chunk and never held whole.
    pub(crate) absorb: Option<Absorb<T, R>>,
}

impl<T: Element, R: Element, S: Element> Reduction<T, R, S> {
    pub(crate) fn new(
        name: &'static str,
        partial: impl Fn(Part<'_, T>) -> Result<R, TaskError> + Send + Sync + 'static,
        combine: impl Fn(&[&R]) -> Result<R, TaskError> + Send + Sync + 'static,
        finalize: impl Fn(R) -> Result<S, TaskError> + Send + Sync + 'static,
    ) -> Reduction<T, R, S> {
        Reduction {
            name,
            partial: Arc::new(partial),
            combine: Arc::new(combine),
            finalize: Arc::new(finalize),
            absorb: None,
        }
    }

    /// This reduction with `absorb` (see [`Reduction::absorb`]).
    pub(crate) fn absorbing(
        mut self,
        absorb: impl Fn(R, Part<'_, T>) -> Result<R, TaskError> + Send + Sync + 'static,
    ) -> Self {
        self.absorb = Some(Arc::new(absorb));
        self
    }

    /// The per-partition step (the last step of each partition's pipeline).
    pub(crate) fn partial_step(&self, id: Option<&ReductionId>) -> Arc<dyn pipeline::Step> {
        let step: Arc<dyn pipeline::Step> =
            Arc::new(PartialStep { name: self.name, partial: Arc::clone(&self.partial), absorb: self.absorb.clone() });
        pipeline::with_spec(step, id.map(|id| StepSpec { id: format!("{}.partial", id.id), params: id.params.clone() }))
    }

    /// A combine kernel; the last level's (`last`) also finalizes.
    pub(crate) fn combine_kernel(&self, last: bool, id: Option<&ReductionId>) -> Arc<dyn Kernel> {
        let combine = Arc::clone(&self.combine);
        let finalize = Arc::clone(&self.finalize);
        let run = move |inputs: &[Value]| -> Result<Value, TaskError> {
            let partials = (0..inputs.len()).map(|i| input::<R>(inputs, i)).collect::<Result<Vec<&R>, _>>()?;
            let combined = combine(&partials)?;
            if last { Ok(Value::new(finalize(combined)?)) } else { Ok(Value::new(combined)) }
        };
        let spec = id.map(|id| KernelSpec {
            id: format!("{}.{}", id.id, if last { "final" } else { "combine" }),
            params: id.params.clone(),
        });
        Arc::new(SpecKernel { name: self.name, run, spec })
    }
}

/// A reduction's per-partition step.
struct PartialStep<T, R> {
    name: &'static str,
    partial: Partial<T, R>,
    absorb: Option<Absorb<T, R>>,
}

impl<T: Element, R: Element> pipeline::Step for PartialStep<T, R> {
    fn name(&self) -> &str {
        self.name
    }

    fn apply(&self, input: pipeline::Stage<'_>) -> Result<Box<dyn std::any::Any + Send>, TaskError> {
        Ok(Box::new((self.partial)(pipeline::part_of::<T>(input)?)?))
    }

    fn finish(&self, output: Box<dyn std::any::Any + Send>) -> Result<Value, TaskError> {
        Ok(Value::new(*downcast_partial::<R>(output)?))
    }

    fn streaming(&self) -> pipeline::Streaming {
        if self.absorb.is_some() { pipeline::Streaming::Fold } else { pipeline::Streaming::Whole }
    }

    fn portable_hint(&self) -> String {
        crate::portable::hint(self.name, Some(std::any::type_name::<T>()))
    }

    fn absorb(
        &self,
        so_far: Box<dyn std::any::Any + Send>,
        chunk: pipeline::Stage<'_>,
    ) -> Result<Box<dyn std::any::Any + Send>, TaskError> {
        let absorb = self.absorb.as_ref().ok_or_else(|| TaskError::msg(format!("{} cannot fold chunks", self.name)))?;
        Ok(Box::new(absorb(*downcast_partial::<R>(so_far)?, pipeline::part_of::<T>(chunk)?)?))
    }
}

fn downcast_partial<R: 'static>(boxed: Box<dyn std::any::Any + Send>) -> Result<Box<R>, TaskError> {
    boxed.downcast::<R>().map_err(|_| TaskError::TypeMismatch {
        position: 0,
        expected: std::any::type_name::<R>(),
        found: "another type",
    })
}

/// Where a reduction is registered: its id prefix and the parameters its factory needs.
#[derive(Clone, Debug)]
pub(crate) struct ReductionId {
    pub(crate) id: String,
    pub(crate) params: Vec<u8>,
}

impl ReductionId {
    /// `kiln.bag.<name>/<tag of T>` when `T` is a registered element type.
    pub(crate) fn builtin<T: 'static>(name: &str) -> Option<ReductionId> {
        crate::portable::tag_of::<T>()
            .map(|tag| ReductionId { id: format!("kiln.bag.{name}/{tag}"), params: Vec::new() })
    }
}

/// A kernel from a function of its inputs, with a spec when it is registered elsewhere.
struct SpecKernel<F> {
    name: &'static str,
    run: F,
    spec: Option<KernelSpec>,
}

impl<F: Fn(&[Value]) -> Result<Value, TaskError> + Send + Sync + 'static> Kernel for SpecKernel<F> {
    fn name(&self) -> &str {
        self.name
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        (self.run)(inputs)
    }
    fn spec(&self) -> Option<KernelSpec> {
        self.spec.clone()
    }
    fn portable_hint(&self) -> Option<String> {
        Some(crate::portable::hint(self.name, None))
    }
}

impl<T: Element> Bag<T> {
    /// The tree of `reduction` over this bag's partitions (see [`Reduction`]).
    pub(crate) fn tree<R: Element, S: Element>(
        &self,
        reduction: Reduction<T, R, S>,
        id: Option<ReductionId>,
    ) -> Result<Arc<Node>, BagError> {
        if let Some(error) = &self.invalid {
            return Err(error.clone());
        }
        let name = reduction.name;
        let token = fresh_token();
        let partial_name: Arc<str> = format!("{name}-part-{token}").into();
        let steps = pipeline::append(&self.steps, &self.base_token, reduction.partial_step(id.as_ref()), &token);
        let mut level =
            crate::stream::pipeline_nodes(&partial_name, &self.partitions, pipeline::collect(&steps), self.chunk_size);
        let middle = reduction.combine_kernel(false, id.as_ref());
        let last = reduction.combine_kernel(true, id.as_ref());
        let combine_name: Arc<str> = format!("{name}-combine-{token}").into();
        let mut depth = 0u32;
        // The last level always combines (even a single partial), so `finalize` runs once.
        while level.len() > self.split_every {
            level = level
                .chunks(self.split_every)
                .enumerate()
                .map(|(j, group)| {
                    Node::new(
                        Key::from_shared(&combine_name, &[depth, j as u32]),
                        Arc::clone(&middle),
                        group.iter().map(|n| NodeArg::Node(Arc::clone(n))).collect(),
                    )
                })
                .collect();
            depth += 1;
        }
        let args = level.into_iter().map(NodeArg::Node).collect();
        Ok(Node::new(Key::new(format!("{name}-{token}")), last, args))
    }

    pub(crate) fn item<S: Element>(node: Result<Arc<Node>, BagError>) -> Item<S> {
        Item { node, rebuild: None, _r: PhantomData }
    }

    /// A one-partition bag of the reduction's list result.
    pub(crate) fn listed<U: Element>(node: Result<Arc<Node>, BagError>) -> Bag<U> {
        match node {
            Ok(node) => {
                let token = node.key.name().to_string();
                Bag::from_nodes(vec![node], token)
            }
            Err(error) => Bag::invalid(error),
        }
    }

    /// The number of elements (Dask's `count`).
    pub fn count(&self) -> Item<u64> {
        Self::item(self.tree(count_reduction::<T>(), ReductionId::builtin::<T>("count")))
    }

    /// `initial`, then `binop` with each element, per partition; the partials combined with
    /// `combine` (Dask's `fold`). `initial` is used once per partition, so it must leave
    /// `combine` unchanged (0 for sums, an empty set for unions). For a cluster, register both
    /// functions ([`crate::portable::register_fold`]) and call [`Item::portable`] on the result;
    /// `initial` then travels with the tasks.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let longest = Bag::from_sequence(["a", "abc", "ab"].map(String::from), 2)
    ///     .fold(|best: usize, s| best.max(s.len()), |a, b| a.max(*b), 0);
    /// assert_eq!(longest.compute_on(&LocalScheduler::new()).unwrap(), 3);
    /// ```
    pub fn fold<A: Element>(
        &self,
        binop: impl Fn(A, &T) -> A + Send + Sync + 'static,
        combine: impl Fn(A, &A) -> A + Send + Sync + 'static,
        initial: A,
    ) -> Item<A> {
        let (binop, combine): (Binop<A, T>, Binop<A, A>) = (Arc::new(binop), Arc::new(combine));
        let local = fold_reduction(Arc::clone(&binop), Arc::clone(&combine), initial.clone());
        let input = self.clone();
        Self::item(self.tree(local, None)).with_rebuild(move |id| {
            // The initial value travels as the reduction's parameters, through its codec.
            let params = match crate::portable::encode_value(&initial) {
                Ok(params) => params,
                Err(error) => return Item::invalid(error),
            };
            let id = ReductionId { id: format!("kiln.bag.fold/{id}"), params };
            let reduction = fold_reduction(Arc::clone(&binop), Arc::clone(&combine), initial.clone());
            Self::item(input.tree(reduction, Some(id)))
        })
    }

    /// `per_partition` of each partition, then `aggregate` of lists of those results, level by
    /// level of the tree (Dask's `reduction`): `aggregate` must accept its own outputs. For a
    /// cluster, register both functions ([`crate::portable::register_reduction`]) and call
    /// [`Item::portable`] on the result.
    pub fn reduction<R: Element>(
        &self,
        per_partition: impl Fn(&[T]) -> R + Send + Sync + 'static,
        aggregate: impl Fn(Vec<R>) -> R + Send + Sync + 'static,
    ) -> Item<R> {
        let (per_partition, aggregate): (PerPartition<T, R>, Aggregate<R>) =
            (Arc::new(per_partition), Arc::new(aggregate));
        let input = self.clone();
        Self::item(self.tree(user_reduction(Arc::clone(&per_partition), Arc::clone(&aggregate)), None)).with_rebuild(
            move |id| {
                let id = ReductionId { id: format!("kiln.bag.reduction/{id}"), params: Vec::new() };
                Self::item(input.tree(user_reduction(Arc::clone(&per_partition), Arc::clone(&aggregate)), Some(id)))
            },
        )
    }

    /// The `k` largest elements by `key`, largest first; equal keys keep their order in the
    /// bag (Dask's `topk`). A one-partition bag. For a cluster, register the key function
    /// ([`crate::portable::register_key`]) and call [`Bag::portable`] on the result.
    pub fn topk<K: Ord + 'static>(&self, k: usize, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Bag<T> {
        let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key);
        let mut out = Self::listed(self.tree(topk_reduction(k, Arc::clone(&key)), None));
        let input = self.clone();
        out.rebuild = Some(Arc::new(move |id: &str| {
            let params = postcard::to_allocvec(&(k as u64)).unwrap_or_default();
            let id = ReductionId { id: format!("kiln.bag.topk/{id}"), params };
            Self::listed(input.tree(topk_reduction(k, Arc::clone(&key)), Some(id)))
        }));
        out
    }

    /// The `k` smallest elements by `key`, smallest first (Dask's `topk` with a reversed key).
    pub fn bottomk<K: Ord + 'static>(&self, k: usize, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Bag<T> {
        self.topk(k, move |x| std::cmp::Reverse(key(x)))
    }
}

pub(crate) fn fold_reduction<T: Element, A: Element>(
    binop: Binop<A, T>,
    combine: Binop<A, A>,
    initial: A,
) -> Reduction<T, A, A> {
    let combine_initial = initial.clone();
    let absorb_binop = Arc::clone(&binop);
    Reduction::new(
        "fold",
        move |part| Ok(part.as_slice().iter().fold(initial.clone(), &*binop)),
        move |partials: &[&A]| Ok(partials.iter().fold(combine_initial.clone(), |acc, p| combine(acc, p))),
        Ok,
    )
    .absorbing(move |acc, part| Ok(part.as_slice().iter().fold(acc, &*absorb_binop)))
}

pub(crate) fn user_reduction<T: Element, R: Element>(
    per_partition: PerPartition<T, R>,
    aggregate: Aggregate<R>,
) -> Reduction<T, R, R> {
    Reduction::new(
        "reduction",
        move |part| Ok(per_partition(part.as_slice())),
        move |partials: &[&R]| Ok(aggregate(partials.iter().map(|p| (*p).clone()).collect())),
        Ok,
    )
}

pub(crate) fn foldby_reduction<T: Element, K: Element + Eq + Hash, A: Element>(
    fns: FoldBy<T, K, A>,
    initial: A,
    combine_initial: A,
) -> FoldByReduction<T, K, A> {
    let finish = |groups: OrderedMap<K, Acc<A>>| {
        groups
            .entries
            .into_iter()
            .map(|(k, acc)| acc.0.map(|a| (k, a)))
            .collect::<Option<Vec<(K, A)>>>()
            .ok_or_else(|| TaskError::msg("foldby: a group lost its accumulator"))
    };
    let FoldBy { key, binop, combine } = fns;
    let fold_in = move |mut groups: OrderedMap<K, Acc<A>>, part: Part<'_, T>| {
        for x in part.as_slice() {
            groups.upsert(&key(x), || Acc(Some(initial.clone())), |acc| Acc(acc.0.map(|a| binop(a, x))));
        }
        Ok(groups)
    };
    let fold_in = Arc::new(fold_in);
    let absorb = Arc::clone(&fold_in);
    Reduction::new(
        "foldby",
        move |part| fold_in(OrderedMap::new(), part),
        move |partials: &[&OrderedMap<K, Acc<A>>]| {
            let mut groups: OrderedMap<K, Acc<A>> = OrderedMap::new();
            for partial in partials {
                for (k, value) in &partial.entries {
                    let Some(value) = &value.0 else { continue };
                    groups.upsert(
                        k,
                        || Acc(Some(combine_initial.clone())),
                        |acc| Acc(acc.0.map(|a| combine(a, value))),
                    );
                }
            }
            Ok(groups)
        },
        finish,
    )
    .absorbing(move |groups, part| absorb(groups, part))
}

pub(crate) fn count_reduction<T: Element>() -> Reduction<T, u64, u64> {
    Reduction::new(
        "count",
        |part| Ok(part.as_slice().len() as u64),
        |counts: &[&u64]| Ok(counts.iter().copied().sum()),
        Ok,
    )
    .absorbing(|n, part| Ok(n + part.as_slice().len() as u64))
}

pub(crate) fn topk_reduction<T: Element, K: Ord + 'static>(
    k: usize,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
) -> Reduction<T, Vec<T>, Vec<T>> {
    // Partials are in bag order and each keeps bag order among equal keys; a stable sort of
    // their concatenation keeps it too.
    let best = move |key: &dyn Fn(&T) -> K, items: Vec<&T>| -> Vec<T> {
        let mut items = items;
        items.sort_by_key(|x| std::cmp::Reverse(key(x)));
        items.truncate(k);
        items.into_iter().cloned().collect()
    };
    let best = Arc::new(best);
    let (partial_best, absorb_best) = (Arc::clone(&best), Arc::clone(&best));
    let (partial_key, absorb_key) = (Arc::clone(&key), Arc::clone(&key));
    Reduction::new(
        "topk",
        move |part| Ok(partial_best(&*partial_key, part.as_slice().iter().collect())),
        move |partials: &[&Vec<T>]| Ok(best(&*key, partials.iter().flat_map(|p| p.iter()).collect())),
        Ok,
    )
    // The best so far come before the chunk in bag order, as in one partial of both.
    .absorbing(move |so_far: Vec<T>, part| {
        Ok(absorb_best(&*absorb_key, so_far.iter().chain(part.as_slice()).collect()))
    })
}

pub(crate) fn frequencies_reduction<T: Element + Eq + Hash>() -> Reduction<T, OrderedMap<T, u64>, Vec<(T, u64)>> {
    Reduction::new(
        "frequencies",
        |part| Ok(count_into(OrderedMap::new(), part.as_slice())),
        |partials: &[&OrderedMap<T, u64>]| {
            let mut counts = OrderedMap::new();
            for partial in partials {
                for (x, n) in &partial.entries {
                    counts.upsert(x, || 0, |total| total + n);
                }
            }
            Ok(counts)
        },
        |map: OrderedMap<T, u64>| Ok(map.entries),
    )
    .absorbing(|counts, part| Ok(count_into(counts, part.as_slice())))
}

fn count_into<T: Element + Eq + Hash>(mut counts: OrderedMap<T, u64>, items: &[T]) -> OrderedMap<T, u64> {
    for x in items {
        counts.upsert(x, || 0, |n| n + 1);
    }
    counts
}

pub(crate) fn distinct_reduction<T: Element + Eq + Hash>() -> Reduction<T, OrderedMap<T, ()>, Vec<T>> {
    let distinct_of = |mut seen: OrderedMap<T, ()>, items: &mut dyn Iterator<Item = &T>| -> OrderedMap<T, ()> {
        for x in items {
            seen.upsert(x, || (), |()| ());
        }
        seen
    };
    Reduction::new(
        "distinct",
        move |part| Ok(distinct_of(OrderedMap::new(), &mut part.as_slice().iter())),
        move |partials: &[&OrderedMap<T, ()>]| {
            Ok(distinct_of(OrderedMap::new(), &mut partials.iter().flat_map(|p| p.entries.iter().map(|(x, ())| x))))
        },
        |seen: OrderedMap<T, ()>| Ok(seen.entries.into_iter().map(|(x, ())| x).collect::<Vec<T>>()),
    )
    .absorbing(move |seen, part| Ok(distinct_of(seen, &mut part.as_slice().iter())))
}

impl<T: Element + Eq + Hash> Bag<T> {
    /// Each distinct element with how often it occurs, in order of first occurrence (Dask's
    /// `frequencies`). A one-partition bag.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let words = Bag::from_sequence(["b", "a", "b"].map(String::from), 2);
    /// let counts = words.frequencies().compute_on(&LocalScheduler::new()).unwrap();
    /// assert_eq!(counts, vec![("b".to_string(), 2), ("a".to_string(), 1)]);
    /// ```
    pub fn frequencies(&self) -> Bag<(T, u64)> {
        Self::listed(self.tree(frequencies_reduction::<T>(), ReductionId::builtin::<T>("frequencies")))
    }

    /// The distinct elements in order of first occurrence (Dask's `distinct`). A one-partition
    /// bag.
    pub fn distinct(&self) -> Bag<T> {
        Self::listed(self.tree(distinct_reduction::<T>(), ReductionId::builtin::<T>("distinct")))
    }
}

impl<T: Element> Bag<T> {
    /// Groups by `key` and folds each group, without a shuffle (Dask's `foldby`, its fast path
    /// for grouped reductions): per partition, each group starts at `initial` and takes
    /// elements with `binop`; the per-partition results of a group are folded with `combine`
    /// from `combine_initial`. Groups come in order of first occurrence. A one-partition bag of
    /// `(key, result)` pairs. `combine_initial` is used once per group and tree task, so it must
    /// leave `combine` unchanged. For a cluster, register the functions
    /// ([`crate::portable::register_foldby`]) and call [`Bag::portable`] on the result; the
    /// initial values then travel with the tasks.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let sums = Bag::range(10, 3).foldby(|x| x % 2 == 0, |acc, x| acc + x, 0, |a, b| a + b, 0);
    /// assert_eq!(sums.compute_on(&LocalScheduler::new()).unwrap(), vec![(true, 20), (false, 25)]);
    /// ```
    pub fn foldby<K, A>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        binop: impl Fn(A, &T) -> A + Send + Sync + 'static,
        initial: A,
        combine: impl Fn(A, &A) -> A + Send + Sync + 'static,
        combine_initial: A,
    ) -> Bag<(K, A)>
    where
        K: Element + Eq + Hash,
        A: Element,
    {
        let fns = FoldBy {
            key: Arc::new(key) as KeyOf<T, K>,
            binop: Arc::new(binop) as Binop<A, T>,
            combine: Arc::new(combine) as Binop<A, A>,
        };
        let local = foldby_reduction(fns.clone(), initial.clone(), combine_initial.clone());
        let mut out = Self::listed(self.tree(local, None));
        let input = self.clone();
        out.rebuild = Some(Arc::new(move |id: &str| {
            // Both initial values travel as the reduction's parameters, through their codec.
            let params = crate::portable::encoded(&initial)
                .and_then(|a| Ok((a, crate::portable::encoded(&combine_initial)?)))
                .and_then(|both| postcard::to_allocvec(&both).map_err(|e| BagError::Encode(e.to_string())));
            let params = match params {
                Ok(params) => params,
                Err(error) => return Bag::invalid(error),
            };
            let id = ReductionId { id: format!("kiln.bag.foldby/{id}"), params };
            let reduction = foldby_reduction(fns.clone(), initial.clone(), combine_initial.clone());
            Self::listed(input.tree(reduction, Some(id)))
        }));
        out
    }
}

pub(crate) fn sum_reduction<T: Numeric>() -> Reduction<T, T, T> {
    let add_all = |total: T, items: &mut dyn Iterator<Item = T>| {
        let mut total = total;
        for x in items {
            total = total.checked_add(x).ok_or(BagError::Overflow { type_name: std::any::type_name::<T>() })?;
        }
        Ok::<T, BagError>(total)
    };
    Reduction::new(
        "sum",
        move |part| Ok(add_all(T::ZERO, &mut part.as_slice().iter().copied())?),
        move |partials: &[&T]| Ok(add_all(T::ZERO, &mut partials.iter().map(|p| **p))?),
        Ok,
    )
    .absorbing(move |total, part| Ok(add_all(total, &mut part.as_slice().iter().copied())?))
}

/// `min` (`largest` false) or `max`.
pub(crate) fn extreme_reduction<T: Numeric>(largest: bool) -> Reduction<T, Option<T>, T> {
    let name = if largest { "max" } else { "min" };
    let better = move |x: &T, best: &T| if largest { x > best } else { x < best };
    let pick = move |items: &mut dyn Iterator<Item = T>| {
        items.fold(None, |best: Option<T>, x| match best {
            Some(b) if !better(&x, &b) => Some(b),
            _ => Some(x),
        })
    };
    Reduction::new(
        name,
        move |part| Ok(pick(&mut part.as_slice().iter().copied())),
        move |partials: &[&Option<T>]| Ok(pick(&mut partials.iter().filter_map(|p| **p))),
        move |best: Option<T>| best.ok_or_else(|| BagError::Empty { operation: name }.into()),
    )
    // The best so far comes first, as it would in one pass over both.
    .absorbing(move |best, part| Ok(pick(&mut best.into_iter().chain(part.as_slice().iter().copied()))))
}

/// What `mean`, `var` and `std` make of the moments.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum MomentsOf {
    Mean,
    Var(u64),
    Std(u64),
}

pub(crate) fn moments_reduction<T: Numeric>(of: MomentsOf) -> Reduction<T, Moments, f64> {
    let name = match of {
        MomentsOf::Mean => "mean",
        MomentsOf::Var(_) => "var",
        MomentsOf::Std(_) => "std",
    };
    Reduction::new(
        name,
        |part| Ok(Moments::of(part.as_slice())),
        |partials: &[&Moments]| Ok(partials.iter().fold(Moments::default(), |a, b| Moments::merge(a, b))),
        move |m: Moments| match of {
            MomentsOf::Mean => {
                if m.count == 0 {
                    Err(BagError::Empty { operation: "mean" }.into())
                } else {
                    Ok(m.mean)
                }
            }
            MomentsOf::Var(ddof) => variance(m, ddof, "var"),
            MomentsOf::Std(ddof) => variance(m, ddof, "std").map(f64::sqrt),
        },
    )
    .absorbing(|m, part| Ok(m.add(part.as_slice())))
}

impl<T: Numeric> Bag<T> {
    /// The sum of the elements; an integer sum that overflows `T` is an error (Dask's `sum`).
    pub fn sum(&self) -> Item<T> {
        Self::item(self.tree(sum_reduction::<T>(), ReductionId::builtin::<T>("sum")))
    }

    /// The smallest element; an empty bag is an error (Dask's `min`). NaNs are skipped unless
    /// they come first.
    pub fn min(&self) -> Item<T> {
        Self::item(self.tree(extreme_reduction::<T>(false), ReductionId::builtin::<T>("min")))
    }

    /// The largest element; an empty bag is an error (Dask's `max`).
    pub fn max(&self) -> Item<T> {
        Self::item(self.tree(extreme_reduction::<T>(true), ReductionId::builtin::<T>("max")))
    }

    fn moments(&self, of: MomentsOf) -> Item<f64> {
        let id = ReductionId::builtin::<T>("moments").map(|mut id| {
            id.params = postcard::to_allocvec(&of).unwrap_or_default();
            id
        });
        Self::item(self.tree(moments_reduction::<T>(of), id))
    }

    /// The arithmetic mean as an `f64`; an empty bag is an error (Dask's `mean`).
    pub fn mean(&self) -> Item<f64> {
        self.moments(MomentsOf::Mean)
    }

    /// The variance with `ddof` delta degrees of freedom (0: population, 1: sample), computed
    /// in one pass with stable merges (Dask's `var`).
    pub fn var(&self, ddof: u64) -> Item<f64> {
        self.moments(MomentsOf::Var(ddof))
    }

    /// The standard deviation: the square root of [`Bag::var`] (Dask's `std`).
    pub fn std(&self, ddof: u64) -> Item<f64> {
        self.moments(MomentsOf::Std(ddof))
    }
}

fn variance(m: Moments, ddof: u64, operation: &'static str) -> Result<f64, TaskError> {
    if m.count <= ddof {
        return Err(BagError::TooFewElements { operation, ddof, count: m.count }.into());
    }
    Ok(m.m2 / (m.count - ddof) as f64)
}

/// `any` (`every` false) or `all`.
pub(crate) fn truth_reduction(every: bool) -> Reduction<bool, bool, bool> {
    Reduction::new(
        if every { "all" } else { "any" },
        move |part| Ok(if every { part.as_slice().iter().all(|&x| x) } else { part.as_slice().iter().any(|&x| x) }),
        move |partials: &[&bool]| Ok(if every { partials.iter().all(|&&x| x) } else { partials.iter().any(|&&x| x) }),
        Ok,
    )
    .absorbing(move |so_far, part| {
        Ok(if every {
            so_far && part.as_slice().iter().all(|&x| x)
        } else {
            so_far || part.as_slice().iter().any(|&x| x)
        })
    })
}

impl Bag<bool> {
    /// Whether any element is `true` (`false` for an empty bag; Dask's `any`).
    pub fn any(&self) -> Item<bool> {
        Self::item(self.tree(truth_reduction(false), ReductionId::builtin::<bool>("any")))
    }

    /// Whether every element is `true` (`true` for an empty bag; Dask's `all`).
    pub fn all(&self) -> Item<bool> {
        Self::item(self.tree(truth_reduction(true), ReductionId::builtin::<bool>("all")))
    }
}
