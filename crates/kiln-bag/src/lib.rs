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
//! - **Text and JSON**: [`read_text`], [`read_json`] (schemaless [`Json`] records: validated
//!   text, fields found on demand), [`read_json_lines`] (one partition per file; gzip, bz2
//!   and zstd by extension), [`Bag::to_textfiles`]. A file followed by elementwise steps and
//!   perhaps a reduction is read in chunks of [`Bag::chunk_size`] lines, each chunk run through
//!   the steps and folded into the partial result in the same task, so no file is held whole.
//! - **Clusters**: built-in operations on common element types run on any `kiln worker`;
//!   user functions are given an id with [`Bag::portable`] and registered with
//!   [`portable::register_map`] and friends in every process that runs them (see [`portable`]).
//!
//! - **Grouping**: [`Bag::foldby`] groups and reduces without moving elements (partial
//!   results per partition, combined in a tree): the fast path. [`Bag::groupby`] lists each
//!   group's elements, moving every element to its key's partition through the staged shuffle
//!   that dataframes use too ([`kiln_graph::shuffle`]).
//!
//! Elements are `Send + Sync + Clone + 'static`: partitions are shared between tasks on several
//! threads, and a step that owns nothing clones what it keeps.
#![deny(missing_docs)]

mod error;
mod groupby;
mod json;
mod node;
mod ops;
mod pipeline;
pub mod portable;
mod reduce;
mod steps;
mod stream;
mod text;

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use kiln_graph::kernel::slice_kernel;
use kiln_graph::{
    Collection, ComputeError, Graph, GraphBuilder, GraphError, Kernel, Key, Scheduler, TaskError, TaskId, Tokenizer,
    Value,
};

pub use error::BagError;
pub use groupby::{DEFAULT_MAX_BRANCH, GroupByOptions};
pub use json::{Json, JsonKind, JsonText};
pub use reduce::{Item, Numeric};
pub use stream::DEFAULT_CHUNK_SIZE;
pub use text::{
    BadLines, Compression, OnBadLine, SkippedLine, read_json, read_json_lines, read_json_lines_with, read_json_with,
    read_text, read_text_blocks,
};

use node::{ExternalTask, Node, NodeArg};
use pipeline::{Part, Step, Steps};

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
    /// How many elements a fused file task reads at a time (see [`Bag::chunk_size`]).
    chunk_size: usize,
    invalid: Option<BagError>,
    /// How [`Bag::portable`] rebuilds this bag when its newest user function is inside a
    /// reduction (`topk`'s key) rather than a pending step.
    rebuild: Option<Rebuild<T>>,
    _t: PhantomData<fn() -> T>,
}

type Rebuild<T> = Arc<dyn Fn(&str) -> Bag<T> + Send + Sync>;

impl<T> Clone for Bag<T> {
    fn clone(&self) -> Self {
        Bag {
            partitions: Arc::clone(&self.partitions),
            base_token: Arc::clone(&self.base_token),
            steps: self.steps.clone(),
            split_every: self.split_every,
            chunk_size: self.chunk_size,
            invalid: self.invalid.clone(),
            rebuild: self.rebuild.clone(),
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
            chunk_size: DEFAULT_CHUNK_SIZE,
            invalid: None,
            rebuild: None,
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

    /// How many elements (lines, or records) a file partition reads at a time when it is fused
    /// with the steps after it (256 by default, [`DEFAULT_CHUNK_SIZE`]). A bag read with
    /// [`read_text`] or [`read_json_lines`] and followed by elementwise steps (`map`, `filter`,
    /// `pluck`, `flat_map`, ...) and perhaps a reduction (`count`, `frequencies`, `foldby`,
    /// `topk`, ...) runs as one task per file that reads, transforms and reduces chunk by
    /// chunk, so no file is held whole; the chunk size changes memory and speed, never the
    /// answer.
    ///
    /// ```
    /// # use kiln_bag::read_text; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let dir = std::env::temp_dir().join(format!("kiln-bag-doc-chunks-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("a.txt"), "a b\nc\n\nd e f\n").unwrap();
    /// let words = read_text(dir.join("a.txt").to_str().unwrap()).unwrap().chunk_size(1);
    /// let count = words.flat_map(|line| line.split_whitespace().map(String::from).collect::<Vec<_>>()).count();
    /// assert_eq!(count.compute_on(&LocalScheduler::new()).unwrap(), 6);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn chunk_size(&self, elements: usize) -> Bag<T> {
        let mut bag = self.clone();
        if elements == 0 {
            bag.invalid.get_or_insert(BagError::ZeroChunkSize);
        }
        bag.chunk_size = elements.max(1);
        bag
    }

    /// This bag with one more pending step.
    fn then<U: Element>(&self, step: Arc<dyn Step>, step_token: &str) -> Bag<U> {
        Bag {
            partitions: Arc::clone(&self.partitions),
            base_token: Arc::clone(&self.base_token),
            steps: Some(pipeline::append(&self.steps, &self.base_token, step, step_token)),
            split_every: self.split_every,
            chunk_size: self.chunk_size,
            invalid: self.invalid.clone(),
            rebuild: None,
            _t: PhantomData,
        }
    }

    /// The tasks whose values are this bag's partitions (with the pending steps fused into
    /// one task per partition).
    pub(crate) fn nodes(&self) -> Vec<Arc<Node>> {
        match &self.steps {
            None => self.partitions.to_vec(),
            Some(steps) => {
                let name: Arc<str> = format!("{}-{}", steps.step.name(), steps.token).into();
                stream::pipeline_nodes(&name, &self.partitions, pipeline::collect(steps), self.chunk_size)
            }
        }
    }

    /// `f` applied to every element (Dask's `map`).
    pub fn map<U: Element>(&self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> Bag<U> {
        self.then(steps::map(f), &fresh_token())
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
        self.then(steps::try_map(f), &fresh_token())
    }

    /// The elements for which `predicate` holds (Dask's `filter`).
    pub fn filter(&self, predicate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Bag<T> {
        self.then(steps::filter("filter", predicate), &fresh_token())
    }

    /// The elements for which `predicate` does not hold (Dask's `remove`).
    pub fn remove(&self, predicate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Bag<T> {
        self.then(steps::filter("remove", move |x| !predicate(x)), &fresh_token())
    }

    /// Every item of every `f(element)`, in order (Dask's `map(f).flatten()`).
    pub fn flat_map<U: Element, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(&T) -> I + Send + Sync + 'static,
    ) -> Bag<U> {
        self.then(steps::flat_map(f), &fresh_token())
    }

    /// `f` applied to each whole partition (Dask's `map_partitions`).
    pub fn map_partitions<U: Element>(&self, f: impl Fn(&[T]) -> Vec<U> + Send + Sync + 'static) -> Bag<U> {
        self.then(steps::map_partitions(f), &fresh_token())
    }

    /// Marks this bag's newest user function (the closure of the last `map`, `filter`,
    /// `remove`, `flat_map`, `try_map`, `map_partitions`, `starmap`, `join`'s key functions,
    /// `topk`'s key, `groupby`'s key, or `foldby`'s functions on its result) as registered
    /// under `id`, so a cluster can run it (like `delayed`'s `.portable(id)`). Every process
    /// that runs it registers the same function under the same id ([`portable::register_map`],
    /// [`portable::register_filter`], ...); the element types must be registered too
    /// ([`portable::register_element`]; common types are built in). For `fold` and
    /// `reduction`, whose results are single values, see [`Item::portable`].
    ///
    /// ```
    /// # use kiln_bag::{Bag, portable}; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// fn square(x: &u64) -> u64 { x * x }
    /// portable::register_map("doc.square", square); // in the client and every worker program
    /// let squares = Bag::range(4, 2).map(square).portable("doc.square");
    /// assert_eq!(squares.compute_on(&LocalScheduler::new()).unwrap(), vec![0, 1, 4, 9]);
    /// ```
    pub fn portable(&self, id: &str) -> Bag<T> {
        if let Some(rebuild) = &self.rebuild {
            return rebuild(id);
        }
        match &self.steps {
            Some(steps) if steps.step.spec().is_none() => {
                let spec = portable::user_step_spec(&*steps.step, id);
                let step = pipeline::with_spec(Arc::clone(&steps.step), Some(spec));
                let mut bag = self.clone();
                bag.steps = Some(Arc::new(Steps { step, prev: steps.prev.clone(), token: steps.token.clone() }));
                bag
            }
            _ => {
                let mut bag = self.clone();
                bag.invalid.get_or_insert(BagError::NoUserFunction { id: id.to_string() });
                bag
            }
        }
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
        let spec = portable::tag_of::<U>()
            .map(|tag| portable::StepSpec { id: format!("kiln.bag.flatten/{tag}"), params: Vec::new() });
        let step = pipeline::with_spec(steps::flatten::<U>(), spec);
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
                let kernel: Arc<dyn Kernel> = Arc::new(kiln_graph::kernel::Portable(RangeKernel { start, end }));
                start = end;
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
        self.pluck_path_with(&[PathSegment::Key(key.to_string())], None)
    }

    /// The value under `key` of every record, or `default` where it is missing (non-objects
    /// are still an error).
    pub fn pluck_or(&self, key: &str, default: serde_json::Value) -> Bag<serde_json::Value> {
        self.pluck_path_with(&[PathSegment::Key(key.to_string())], Some(default))
    }

    /// Item `index` of every record, which must be an array (Dask's `pluck(i)`); an index past
    /// the end is an error naming it.
    pub fn pluck_index(&self, index: usize) -> Bag<serde_json::Value> {
        self.pluck_path_with(&[PathSegment::Index(index)], None)
    }

    /// The value at `path` (keys of objects and indices of arrays, outermost first) of every
    /// record, e.g. `[PathSegment::key("actor"), PathSegment::key("login")]`; a missing step is
    /// an error naming the path.
    ///
    /// ```
    /// # use kiln_bag::{Bag, PathSegment}; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// use serde_json::json;
    /// let events = Bag::from_sequence([json!({"actor": {"logins": ["a", "b"]}})], 1);
    /// let second = events.pluck_path(&[PathSegment::key("actor"), PathSegment::key("logins"), 1.into()]);
    /// assert_eq!(second.compute_on(&LocalScheduler::new()).unwrap(), vec![json!("b")]);
    /// ```
    pub fn pluck_path(&self, path: &[PathSegment]) -> Bag<serde_json::Value> {
        self.pluck_path_with(path, None)
    }

    /// The value at `path` of every record, or `default` where a key or index is missing (a
    /// step into a value that is neither object nor array is still an error).
    pub fn pluck_path_or(&self, path: &[PathSegment], default: serde_json::Value) -> Bag<serde_json::Value> {
        self.pluck_path_with(path, Some(default))
    }

    fn pluck_path_with(&self, path: &[PathSegment], default: Option<serde_json::Value>) -> Bag<serde_json::Value> {
        if path.is_empty() {
            let mut bag = self.clone();
            bag.invalid.get_or_insert(BagError::EmptyPath);
            return bag;
        }
        let path = PluckPath(path.to_vec());
        let default_text = default.as_ref().map(|d| d.to_string());
        let token = Tokenizer::new().add(&path.to_string()).add(&default_text.clone().unwrap_or_default()).finish();
        let spec = postcard::to_allocvec(&(&path, &default_text))
            .ok()
            .map(|params| portable::StepSpec { id: "kiln.bag.pluck".into(), params });
        portable::ensure_registered();
        self.then(pipeline::with_spec(pluck_step(path, default), spec), &token)
    }
}

impl Bag<Json> {
    /// The value under `key` of every record, sharing the record's text (Dask's `pluck`). A
    /// record without the key, or a value that is not an object, fails the computation with an
    /// error naming the key.
    ///
    /// ```
    /// # use kiln_bag::{Bag, Json}; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let records = Bag::from_sequence([r#"{"type": "Push"}"#, r#"{"type": "Fork"}"#], 1)
    ///     .try_map(|line| Json::parse(line));
    /// let types = records.pluck("type").compute_on(&LocalScheduler::new()).unwrap();
    /// assert!(types[1] == "Fork");
    /// ```
    pub fn pluck(&self, key: &str) -> Bag<Json> {
        self.pluck_json(&[PathSegment::Key(key.to_string())], None)
    }

    /// The value under `key` of every record, or `default` where it is missing (non-objects
    /// are still an error).
    pub fn pluck_or(&self, key: &str, default: Json) -> Bag<Json> {
        self.pluck_json(&[PathSegment::Key(key.to_string())], Some(default))
    }

    /// Item `index` of every record, which must be an array; an index past the end is an error
    /// naming it.
    pub fn pluck_index(&self, index: usize) -> Bag<Json> {
        self.pluck_json(&[PathSegment::Index(index)], None)
    }

    /// The value at `path` (keys and indices, outermost first) of every record; a missing step
    /// is an error naming the path.
    pub fn pluck_path(&self, path: &[PathSegment]) -> Bag<Json> {
        self.pluck_json(path, None)
    }

    /// The value at `path` of every record, or `default` where a key or index is missing.
    pub fn pluck_path_or(&self, path: &[PathSegment], default: Json) -> Bag<Json> {
        self.pluck_json(path, Some(default))
    }

    fn pluck_json(&self, path: &[PathSegment], default: Option<Json>) -> Bag<Json> {
        if path.is_empty() {
            let mut bag = self.clone();
            bag.invalid.get_or_insert(BagError::EmptyPath);
            return bag;
        }
        let path = PluckPath(path.to_vec());
        let default_text = default.as_ref().map(|d| d.to_string());
        let token =
            Tokenizer::new().add("json").add(&path.to_string()).add(&default_text.clone().unwrap_or_default()).finish();
        let spec = postcard::to_allocvec(&(&path, &default_text))
            .ok()
            .map(|params| portable::StepSpec { id: "kiln.bag.pluck_json".into(), params });
        portable::ensure_registered();
        self.then(pipeline::with_spec(pluck_json_step(path, default), spec), &token)
    }
}

pub(crate) fn pluck_json_step(path: PluckPath, default: Option<Json>) -> Arc<dyn Step> {
    pipeline::elementwise("pluck", move |part: Part<'_, Json>| {
        part.as_slice()
            .iter()
            .map(|record| match (record.pluck(&path.0), &default) {
                (Ok(value), _) => Ok(value),
                (Err((step, kind)), default) => {
                    let found = kind.name();
                    Err(match (&path.0[step], default) {
                        (PathSegment::Key(key), _) if kind != JsonKind::Object => {
                            BagError::NotAnObject { key: key.clone(), found }
                        }
                        (PathSegment::Index(index), _) if kind != JsonKind::Array => {
                            BagError::NotAnArray { index: *index, found }
                        }
                        (_, Some(default)) => return Ok(default.clone()),
                        (PathSegment::Key(key), None) if path.0.len() == 1 => BagError::MissingKey { key: key.clone() },
                        _ => BagError::MissingPath { path: path.to_string() },
                    }
                    .into())
                }
            })
            .collect::<Result<Vec<_>, TaskError>>()
    })
}

/// One step of a [`Bag::pluck_path`] path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PathSegment {
    /// A key of an object.
    Key(String),
    /// An index into an array.
    Index(usize),
}

impl PathSegment {
    /// A key step.
    pub fn key(key: &str) -> PathSegment {
        PathSegment::Key(key.to_string())
    }
}

impl From<&str> for PathSegment {
    fn from(key: &str) -> Self {
        PathSegment::key(key)
    }
}

impl From<usize> for PathSegment {
    fn from(index: usize) -> Self {
        PathSegment::Index(index)
    }
}

/// A whole pluck path (serialized as the pluck step's parameters).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PluckPath(Vec<PathSegment>);

impl std::fmt::Display for PluckPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) if i == 0 => write!(f, "{key:?}")?,
                PathSegment::Key(key) => write!(f, ".{key:?}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn pluck_step(path: PluckPath, default: Option<serde_json::Value>) -> Arc<dyn Step> {
    pipeline::elementwise("pluck", move |part: Part<'_, serde_json::Value>| {
        part.as_slice().iter().map(|record| pluck_one(record, &path, default.as_ref())).collect::<Result<Vec<_>, _>>()
    })
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    use serde_json::Value as J;
    match value {
        J::Null => "null",
        J::Bool(_) => "bool",
        J::Number(_) => "number",
        J::String(_) => "string",
        J::Array(_) => "array",
        J::Object(_) => "object",
    }
}

fn pluck_one(
    record: &serde_json::Value,
    path: &PluckPath,
    default: Option<&serde_json::Value>,
) -> Result<serde_json::Value, TaskError> {
    use serde_json::Value as J;
    let mut at = record;
    for segment in &path.0 {
        let next = match (segment, at) {
            (PathSegment::Key(key), J::Object(object)) => object.get(key),
            (PathSegment::Index(index), J::Array(items)) => items.get(*index),
            (PathSegment::Key(key), other) => {
                return Err(BagError::NotAnObject { key: key.clone(), found: kind_of(other) }.into());
            }
            (PathSegment::Index(index), other) => {
                return Err(BagError::NotAnArray { index: *index, found: kind_of(other) }.into());
            }
        };
        match (next, default) {
            (Some(next), _) => at = next,
            (None, Some(default)) => return Ok(default.clone()),
            (None, None) => {
                return Err(match (segment, path.0.len()) {
                    (PathSegment::Key(key), 1) => BagError::MissingKey { key: key.clone() },
                    _ => BagError::MissingPath { path: path.to_string() },
                }
                .into());
            }
        }
    }
    Ok(at.clone())
}

/// The numbers `start..end`: a `range` partition.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RangeKernel {
    start: u64,
    end: u64,
}

impl kiln_graph::kernel::PortableKernel for RangeKernel {
    const ID: &'static str = "kiln.bag.range";
    fn name(&self) -> &str {
        "range"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        Ok(Value::new((self.start..self.end).collect::<Vec<u64>>()))
    }
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
