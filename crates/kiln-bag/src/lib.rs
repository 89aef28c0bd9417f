//! `bag`: parallel lists of Rust values and JSON records (Dask's `dask.bag`).
//!
//! A [`Bag<T>`] is a list split into partitions, each a `Vec<T>` computed by one task. It is
//! made for semi-structured data (log lines, JSON records) and for plain Rust values:
//!
//! ```
//! use kiln_bag::Bag;
//! use kiln_graph::Collection;
//! use kiln_local::LocalScheduler;
//! let scheduler = LocalScheduler::new();
//! let numbers = Bag::range(10, 3);
//! let odd_squares = numbers.filter(|x| x % 2 == 1).map(|x| x * x);
//! assert_eq!(odd_squares.compute_on(&scheduler).unwrap(), vec![1, 9, 25, 49, 81]);
//! assert_eq!(odd_squares.sum().compute_on(&scheduler).unwrap(), 165);
//! ```
//!
//! - **Elementwise** operations ([`Bag::map`], [`Bag::filter`], [`Bag::flat_map`],
//!   [`Bag::map_partitions`], [`Bag::pluck`], ...) are fused: a chain of them runs as one task
//!   per partition, and only the first step borrows the partition.
//! - **Reductions** ([`Bag::count`], [`Bag::sum`], [`Bag::fold`], [`Bag::frequencies`],
//!   [`Bag::foldby`], ...) are trees: a partial result per partition (fused with the steps
//!   before it), then combines of at most [`Bag::split_every`] partials (8 by default). Scalar
//!   results are [`Item`]s; results that are lists (`frequencies`, `topk`, `distinct`,
//!   `foldby`) are one-partition bags, so they chain (`.frequencies().topk(10, ..)`).
//! - **Text and JSON**: [`read_text`], [`read_json_lines`] (one partition per file, gzip by
//!   extension), [`Bag::to_textfiles`].
//!
//! `groupby` (a full shuffle) is not here yet: it will use the staged shuffle the dataframe
//! collection builds. [`Bag::foldby`] is the fast path for grouped reductions and needs no
//! shuffle.
//!
//! Elements are `Send + Sync + Clone + 'static`: partitions are shared between tasks on several
//! threads, and a step that owns nothing clones what it keeps.
#![deny(missing_docs)]

mod error;
mod node;
mod pipeline;
mod reduce;
mod text;

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use kiln_graph::kernel::{func0, slice_kernel};
use kiln_graph::{
    Collection, ComputeError, Graph, GraphBuilder, GraphError, Kernel, Key, Scheduler, TaskError, TaskId, Tokenizer,
    Value,
};

pub use error::BagError;
pub use reduce::{Item, Numeric};
pub use text::{
    BadLines, Compression, OnBadLine, SkippedLine, read_json_lines, read_json_lines_with, read_text, read_text_blocks,
};

use node::{ExternalTask, Node, NodeArg};
use pipeline::{Part, PipelineKernel, Step, Steps};

/// The bounds every bag element meets: shared between threads, cloned when kept.
pub trait Element: Any + Send + Sync + Clone {}
impl<T: Any + Send + Sync + Clone> Element for T {}

/// The tree reductions' default fan-in (Dask's `split_every` default).
pub const DEFAULT_SPLIT_EVERY: usize = 8;

/// A lazily computed list of `T`s in partitions; computing it gives every element in partition
/// order. See the crate docs.
pub struct Bag<T> {
    /// The tasks whose values are the partitions before the pending steps.
    partitions: Arc<[Arc<Node>]>,
    /// Identifies `partitions` (part of every later key).
    base_token: Arc<str>,
    /// Elementwise steps not yet given tasks, run per partition in one task.
    steps: Option<Arc<Steps>>,
    split_every: usize,
    invalid: Option<BagError>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Bag<T> {
    fn clone(&self) -> Self {
        Bag {
            partitions: Arc::clone(&self.partitions),
            base_token: Arc::clone(&self.base_token),
            steps: self.steps.clone(),
            split_every: self.split_every,
            invalid: self.invalid.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Bag<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bag<{}>({} partitions)", std::any::type_name::<T>(), self.partitions.len())
    }
}

fn fresh_token() -> String {
    Tokenizer::new().add(&kiln_graph::unique_token()).finish()
}

/// The kernel of a partition given as a literal: returns it.
fn literal_kernel() -> Arc<dyn Kernel> {
    static KERNEL: std::sync::OnceLock<Arc<dyn Kernel>> = std::sync::OnceLock::new();
    Arc::clone(KERNEL.get_or_init(|| Arc::new(kiln_graph::kernel::Identity)))
}

impl<T: Element> Bag<T> {
    /// A bag over these partition tasks.
    pub(crate) fn from_nodes(partitions: Vec<Arc<Node>>, base_token: String) -> Bag<T> {
        Bag {
            partitions: partitions.into(),
            base_token: base_token.into(),
            steps: None,
            split_every: DEFAULT_SPLIT_EVERY,
            invalid: None,
            _t: PhantomData,
        }
    }

    /// A bag that reports `error` when computed.
    pub(crate) fn invalid(error: BagError) -> Bag<T> {
        let mut bag = Bag::from_nodes(Vec::new(), String::new());
        bag.invalid = Some(error);
        bag
    }

    /// A bag with exactly these partitions (possibly empty ones), in this order.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let bag = Bag::from_partitions(vec![vec![1, 2], vec![], vec![3]]);
    /// assert_eq!(bag.npartitions(), 3);
    /// assert_eq!(bag.compute_on(&LocalScheduler::new()).unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn from_partitions(partitions: Vec<Vec<T>>) -> Bag<T> {
        if partitions.is_empty() {
            return Bag::invalid(BagError::ZeroPartitions { operation: "from_partitions" });
        }
        let token = fresh_token();
        let name: Arc<str> = format!("from_sequence-{token}").into();
        let nodes = partitions
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                Node::new(
                    Key::from_shared(&name, &[i as u32]),
                    literal_kernel(),
                    vec![NodeArg::Literal(Value::new(part))],
                )
            })
            .collect();
        Bag::from_nodes(nodes, token)
    }

    /// A bag of `items` in `npartitions` partitions of nearly equal length (fewer when there
    /// are fewer items; one empty partition for no items). Dask's `from_sequence(seq,
    /// npartitions=n)`.
    ///
    /// ```
    /// # use kiln_bag::Bag;
    /// assert_eq!(Bag::from_sequence(0..10, 4).npartitions(), 4);
    /// assert_eq!(Bag::from_sequence(0..2, 4).npartitions(), 2);
    /// ```
    pub fn from_sequence(items: impl IntoIterator<Item = T>, npartitions: usize) -> Bag<T> {
        if npartitions == 0 {
            return Bag::invalid(BagError::ZeroPartitions { operation: "from_sequence" });
        }
        let items: Vec<T> = items.into_iter().collect();
        let parts = npartitions.min(items.len()).max(1);
        let (base, extra) = (items.len() / parts, items.len() % parts);
        let mut rest = items.into_iter();
        let partitions = (0..parts).map(|i| rest.by_ref().take(base + usize::from(i < extra)).collect()).collect();
        Bag::from_partitions(partitions)
    }

    /// A bag of `items` in partitions of `partition_size` elements (the last may be shorter).
    /// Dask's `from_sequence(seq, partition_size=k)`.
    pub fn from_sequence_sized(items: impl IntoIterator<Item = T>, partition_size: usize) -> Bag<T> {
        if partition_size == 0 {
            return Bag::invalid(BagError::ZeroPartitionSize);
        }
        let mut items = items.into_iter().peekable();
        let mut partitions = Vec::new();
        while items.peek().is_some() {
            partitions.push(items.by_ref().take(partition_size).collect());
        }
        if partitions.is_empty() {
            partitions.push(Vec::new());
        }
        Bag::from_partitions(partitions)
    }

    /// A bag whose partitions are delayed values (Dask's `from_delayed`): each computes one
    /// partition.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let load = kiln_delayed::func1("load", |n: &u32| vec![*n; *n as usize]);
    /// let bag = Bag::from_delayed(vec![load.call(1u32), load.call(2u32)]);
    /// assert_eq!(bag.compute_on(&LocalScheduler::new()).unwrap(), vec![1, 2, 2]);
    /// ```
    pub fn from_delayed(parts: Vec<kiln_delayed::Delayed<Vec<T>>>) -> Bag<T> {
        if parts.is_empty() {
            return Bag::invalid(BagError::ZeroPartitions { operation: "from_delayed" });
        }
        let mut tokens = Tokenizer::new();
        for part in &parts {
            tokens.feed(part.key());
        }
        let token = tokens.finish();
        let name: Arc<str> = format!("from_delayed-{token}").into();
        let nodes = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let external: Arc<dyn ExternalTask> = Arc::new(DelayedPartition(part));
                Node::new(Key::from_shared(&name, &[i as u32]), literal_kernel(), vec![NodeArg::External(external)])
            })
            .collect();
        Bag::from_nodes(nodes, token)
    }

    /// The partitions of all `bags`, one after another (Dask's `db.concat`). Each bag's
    /// pending steps stay fused with its own partitions.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let both = Bag::concat(&[Bag::range(3, 2), Bag::range(2, 1).map(|x| x + 10)]);
    /// assert_eq!(both.npartitions(), 3);
    /// assert_eq!(both.compute_on(&LocalScheduler::new()).unwrap(), vec![0, 1, 2, 10, 11]);
    /// ```
    pub fn concat(bags: &[Bag<T>]) -> Bag<T> {
        if let Some(error) = bags.iter().find_map(|b| b.invalid.clone()) {
            return Bag::invalid(error);
        }
        let nodes: Vec<Arc<Node>> = bags.iter().flat_map(|b| b.nodes()).collect();
        if nodes.is_empty() {
            return Bag::invalid(BagError::ZeroPartitions { operation: "concat" });
        }
        let mut tokens = Tokenizer::new();
        tokens.feed("concat");
        for node in &nodes {
            tokens.feed(&node.key);
        }
        Bag::from_nodes(nodes, tokens.finish())
    }

    /// How many partitions (tasks per step) the bag has.
    pub fn npartitions(&self) -> usize {
        self.partitions.len()
    }

    /// The fan-in of this bag's tree reductions (at least 2; 8 by default): each combine task
    /// reads at most this many partial results.
    pub fn split_every(&self, split_every: usize) -> Bag<T> {
        let mut bag = self.clone();
        if split_every < 2 {
            bag.invalid.get_or_insert(BagError::SplitEvery(split_every));
        }
        bag.split_every = split_every;
        bag
    }

    /// This bag with one more pending step.
    fn then<U: Element>(&self, step: Arc<dyn Step>, step_token: &str) -> Bag<U> {
        Bag {
            partitions: Arc::clone(&self.partitions),
            base_token: Arc::clone(&self.base_token),
            steps: Some(pipeline::append(&self.steps, &self.base_token, step, step_token)),
            split_every: self.split_every,
            invalid: self.invalid.clone(),
            _t: PhantomData,
        }
    }

    /// The tasks whose values are this bag's partitions (with the pending steps fused into
    /// one task per partition).
    pub(crate) fn nodes(&self) -> Vec<Arc<Node>> {
        match &self.steps {
            None => self.partitions.to_vec(),
            Some(steps) => pipeline_nodes(&self.partitions, steps),
        }
    }

    /// `f` applied to every element (Dask's `map`).
    pub fn map<U: Element>(&self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> Bag<U> {
        let step =
            pipeline::step("map", move |part: Part<'_, T>| Ok(part.as_slice().iter().map(&f).collect::<Vec<U>>()));
        self.then(step, &fresh_token())
    }

    /// `f` applied to every element; an `Err` fails the partition's task with its message
    /// (parsing, say).
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let numbers = Bag::from_sequence(["1", "x"].map(String::from), 1).try_map(|s| s.parse::<i64>());
    /// let error = numbers.compute_on(&LocalScheduler::new()).unwrap_err();
    /// assert!(error.to_string().contains("invalid digit"), "{error}");
    /// ```
    pub fn try_map<U: Element, E: std::fmt::Display>(
        &self,
        f: impl Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    ) -> Bag<U> {
        let step = pipeline::step("map", move |part: Part<'_, T>| {
            part.as_slice().iter().map(|x| f(x).map_err(|e| TaskError::msg(e))).collect::<Result<Vec<U>, _>>()
        });
        self.then(step, &fresh_token())
    }

    /// The elements for which `predicate` holds (Dask's `filter`).
    pub fn filter(&self, predicate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Bag<T> {
        let step = pipeline::step("filter", move |part: Part<'_, T>| {
            Ok(match part {
                Part::Borrowed(items) => items.iter().filter(|x| predicate(x)).cloned().collect(),
                Part::Owned(mut items) => {
                    items.retain(|x| predicate(x));
                    items
                }
            })
        });
        self.then(step, &fresh_token())
    }

    /// The elements for which `predicate` does not hold (Dask's `remove`).
    pub fn remove(&self, predicate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Bag<T> {
        self.filter(move |x| !predicate(x))
    }

    /// Every item of every `f(element)`, in order (Dask's `map(f).flatten()`).
    pub fn flat_map<U: Element, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(&T) -> I + Send + Sync + 'static,
    ) -> Bag<U> {
        let step = pipeline::step("flat_map", move |part: Part<'_, T>| {
            Ok(part.as_slice().iter().flat_map(&f).collect::<Vec<U>>())
        });
        self.then(step, &fresh_token())
    }

    /// `f` applied to each whole partition (Dask's `map_partitions`).
    pub fn map_partitions<U: Element>(&self, f: impl Fn(&[T]) -> Vec<U> + Send + Sync + 'static) -> Bag<U> {
        let step = pipeline::step("map_partitions", move |part: Part<'_, T>| Ok(f(part.as_slice())));
        self.then(step, &fresh_token())
    }

    /// The first `k` elements (Dask's `take`), computing only the partitions needed: the first
    /// partition, then twice as many more each time the ones so far hold fewer than `k`.
    ///
    /// # Errors
    /// The first failing task of the partitions computed.
    pub fn take(&self, k: usize, scheduler: &dyn Scheduler) -> Result<Vec<T>, ComputeError> {
        if let Some(error) = &self.invalid {
            return Err(GraphError::invalid("bag", error.clone()).into());
        }
        let nodes = self.nodes();
        let mut taken = Vec::new();
        let (mut start, mut batch) = (0, 1);
        while taken.len() < k && start < nodes.len() {
            let end = (start + batch).min(nodes.len());
            let part = Bag::<T>::from_nodes(nodes[start..end].to_vec(), String::new());
            for item in part.compute_on(scheduler)? {
                if taken.len() == k {
                    break;
                }
                taken.push(item);
            }
            start = end;
            batch *= 2;
        }
        Ok(taken)
    }
}

impl<U: Element> Bag<Vec<U>> {
    /// The items of every element, in order (Dask's `flatten`); owned lists are moved, not
    /// cloned.
    pub fn flatten(&self) -> Bag<U> {
        let step = pipeline::step("flatten", |part: Part<'_, Vec<U>>| {
            Ok(match part {
                Part::Borrowed(lists) => lists.iter().flatten().cloned().collect::<Vec<U>>(),
                Part::Owned(lists) => lists.into_iter().flatten().collect(),
            })
        });
        self.then(step, "")
    }
}

impl Bag<u64> {
    /// The numbers `0..n` in `npartitions` partitions, each generated by its own task (Dask's
    /// `range`).
    pub fn range(n: u64, npartitions: usize) -> Bag<u64> {
        if npartitions == 0 {
            return Bag::invalid(BagError::ZeroPartitions { operation: "range" });
        }
        let parts = (npartitions as u64).min(n).max(1);
        let token = Tokenizer::new().add("range").add(&n).add(&parts).finish();
        let name: Arc<str> = format!("range-{token}").into();
        let (base, extra) = (n / parts, n % parts);
        let mut start = 0;
        let nodes = (0..parts)
            .map(|i| {
                let end = start + base + u64::from(i < extra);
                let range = start..end;
                start = end;
                let kernel: Arc<dyn Kernel> = Arc::new(func0("range", move || range.clone().collect::<Vec<u64>>()));
                Node::new(Key::from_shared(&name, &[i as u32]), kernel, Vec::new())
            })
            .collect();
        Bag::from_nodes(nodes, token)
    }
}

impl Bag<serde_json::Value> {
    /// The value under `key` of every record (Dask's `pluck`). A record without the key, or a
    /// value that is not an object, fails the computation with an error naming the key.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// use serde_json::json;
    /// let records = Bag::from_sequence([json!({"name": "Alice"}), json!({"id": 1})], 2);
    /// let error = records.pluck("name").compute_on(&LocalScheduler::new()).unwrap_err();
    /// assert!(error.to_string().contains(r#"no key "name""#), "{error}");
    /// ```
    pub fn pluck(&self, key: &str) -> Bag<serde_json::Value> {
        self.pluck_with(key, None)
    }

    /// The value under `key` of every record, or `default` where it is missing (non-objects
    /// are still an error).
    pub fn pluck_or(&self, key: &str, default: serde_json::Value) -> Bag<serde_json::Value> {
        self.pluck_with(key, Some(default))
    }

    fn pluck_with(&self, key: &str, default: Option<serde_json::Value>) -> Bag<serde_json::Value> {
        let token =
            Tokenizer::new().add(key).add(&default.as_ref().map(|d| d.to_string()).unwrap_or_default()).finish();
        let key = key.to_string();
        let step = pipeline::step("pluck", move |part: Part<'_, serde_json::Value>| {
            part.as_slice()
                .iter()
                .map(|record| pluck_one(record, &key, default.as_ref()))
                .collect::<Result<Vec<_>, _>>()
        });
        self.then(step, &token)
    }
}

fn pluck_one(
    record: &serde_json::Value,
    key: &str,
    default: Option<&serde_json::Value>,
) -> Result<serde_json::Value, TaskError> {
    use serde_json::Value as J;
    let object = match record {
        J::Object(object) => object,
        other => {
            let found = match other {
                J::Null => "null",
                J::Bool(_) => "bool",
                J::Number(_) => "number",
                J::String(_) => "string",
                J::Array(_) => "array",
                J::Object(_) => "object",
            };
            return Err(BagError::NotAnObject { key: key.to_string(), found }.into());
        }
    };
    match (object.get(key), default) {
        (Some(value), _) => Ok(value.clone()),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(BagError::MissingKey { key: key.to_string() }.into()),
    }
}

/// One task per partition running all of `steps` on it.
fn pipeline_nodes(partitions: &[Arc<Node>], steps: &Arc<Steps>) -> Vec<Arc<Node>> {
    let kernel: Arc<dyn Kernel> = Arc::new(PipelineKernel::new(steps));
    let name: Arc<str> = format!("{}-{}", steps.step.name(), steps.token).into();
    partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Node::new(Key::from_shared(&name, &[i as u32]), Arc::clone(&kernel), vec![NodeArg::Node(Arc::clone(p))])
        })
        .collect()
}

struct DelayedPartition<T>(kiln_delayed::Delayed<Vec<T>>);

impl<T: Element> ExternalTask for DelayedPartition<T> {
    fn add_to(&self, builder: &mut GraphBuilder) -> Result<TaskId, GraphError> {
        Ok(self.0.add_to(builder)?[0])
    }
}

impl<T: Element> Collection for Bag<T> {
    type Output = Vec<T>;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        if let Some(error) = &self.invalid {
            return Err(GraphError::invalid("bag", error.clone()));
        }
        node::lower(&self.nodes(), builder)
    }

    fn output_count(&self) -> usize {
        self.partitions.len()
    }

    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<Vec<T>, ComputeError> {
        let mut all = Vec::new();
        for (value, &id) in values.into_iter().zip(outputs) {
            let part = value.take::<Vec<T>>().map_err(|m| ComputeError::ResultType {
                key: graph.key(id).clone(),
                expected: m.expected,
                found: m.found,
            })?;
            if all.is_empty() {
                all = part;
            } else {
                all.extend(part);
            }
        }
        Ok(all)
    }
}

/// A kernel gathering its inputs (each a `T`) into a `Vec<T>`.
pub(crate) fn gather_kernel<T: Element>(name: &str) -> Arc<dyn Kernel> {
    Arc::new(slice_kernel(name, |inputs: &[Value]| {
        let mut out: Vec<T> = Vec::with_capacity(inputs.len());
        for i in 0..inputs.len() {
            out.push(kiln_graph::kernel::input::<T>(inputs, i)?.clone());
        }
        Ok(Value::new(out))
    }))
}
