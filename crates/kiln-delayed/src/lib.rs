//! `delayed`: build a task graph from ordinary code.
//!
//! Wrap a function with [`func2`] (or another arity) and calling it returns a [`Delayed`]
//! instead of running: a typed handle on a task whose arguments may be other delayed values or
//! plain values. Nothing runs until the result is computed, and then independent calls run in
//! parallel.
//!
//! ```
//! use kiln_delayed::{func1, func2, collect};
//! use kiln_graph::Collection;
//! use kiln_local::LocalScheduler;
//! let inc = func1("inc", |x: &i64| x + 1);
//! let add = func2("add", |a: &i64, b: &i64| a + b);
//! let total = collect((0..10).map(|i| add.call(inc.call(i), 100)).collect());
//! let sum = total.map("sum", |v: &Vec<i64>| v.iter().sum::<i64>());
//! assert_eq!(sum.compute_on(&LocalScheduler::new()).unwrap(), 1055);
//! ```
//!
//! Keys are deterministic: calling the same function object with the same arguments gives the
//! same key, so repeated sub-expressions run once. Functions are treated as pure.
#![deny(missing_docs)]

pub mod portable;

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_graph::dot::{DotOptions, TooLargeToDraw, to_dot};
use kiln_graph::kernel::{self as k, Kernel};
use kiln_graph::{
    Arg, Collection, ComputeError, Graph, GraphBuilder, GraphError, Key, TaskError, TaskId, Tokenize, Tokenizer, Value,
};

/// One task of a delayed expression; shared by every expression that uses it.
struct Node {
    key: Key,
    kernel: Arc<dyn Kernel>,
    args: Vec<NodeArg>,
    /// The id this node got in the graph being lowered, tagged with that lowering's
    /// generation (high 32 bits), so lowering needs no hash map from nodes to ids.
    lowered: AtomicU64,
}

enum NodeArg {
    Node(Arc<Node>),
    Literal(Value),
    /// A task of another collection (a bag's partition): adds its tasks, returns its id.
    External(ExternalTask),
}

/// Adds another collection's task (and what it needs) to a graph; returns its id.
pub type ExternalTask = Arc<dyn Fn(&mut GraphBuilder) -> Result<TaskId, GraphError> + Send + Sync>;

impl Drop for Node {
    // Dropping a long chain of nodes recursively would overflow the stack; unlink iteratively.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = Vec::new();
        let take = |args: &mut Vec<NodeArg>, stack: &mut Vec<Arc<Node>>| {
            for arg in args.drain(..) {
                if let NodeArg::Node(n) = arg {
                    stack.push(n);
                }
            }
        };
        take(&mut self.args, &mut stack);
        while let Some(node) = stack.pop() {
            if let Ok(mut owned) = Arc::try_unwrap(node) {
                take(&mut owned.args, &mut stack);
            }
        }
    }
}

/// A lazily computed value of type `T`.
pub struct Delayed<T> {
    node: Arc<Node>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Delayed<T> {
    fn clone(&self) -> Self {
        Delayed { node: Arc::clone(&self.node), _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for Delayed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Delayed({})", self.node.key)
    }
}

impl<T: Any + Send + Sync> Delayed<T> {
    fn from_node(key: Key, kernel: Arc<dyn Kernel>, args: Vec<NodeArg>) -> Self {
        Delayed { node: Arc::new(Node { key, kernel, args, lowered: AtomicU64::new(0) }), _t: PhantomData }
    }

    /// A value that already lives on a cluster under `key` (a future's result). `keep_alive`
    /// is held by the graph (e.g. the future itself, so the cluster keeps the data while this
    /// delayed value exists); it never travels. Only a distributed client can compute graphs
    /// that contain remote values.
    pub fn remote(key: Key, keep_alive: Value) -> Self {
        Delayed::from_node(key, Arc::new(kiln_graph::kernel::RemoteValue), vec![NodeArg::Literal(keep_alive)])
    }

    /// A delayed value standing for a task of another collection (Dask's `bag.to_delayed()`):
    /// `add` adds that task (and everything it needs) to a graph and returns its id; the
    /// delayed value's own task, under `key`, passes its value on.
    pub fn from_external(key: Key, add: ExternalTask) -> Self {
        Delayed::from_node(key, Arc::new(kiln_graph::kernel::Identity), vec![NodeArg::External(add)])
    }

    /// This value's key.
    pub fn key(&self) -> &Key {
        &self.node.key
    }

    /// A delayed call of `f` on this value (`x.map("double", |v| v * 2)`).
    pub fn map<R, F>(&self, name: &str, f: F) -> Delayed<R>
    where
        F: Fn(&T) -> R + Send + Sync + 'static,
        R: Any + Send + Sync,
    {
        func1(name, f).call(self)
    }

    /// The task graph of this value and its output task.
    ///
    /// # Errors
    /// Never for graphs built through this crate; the type allows for it.
    pub fn graph(&self) -> Result<(Graph, TaskId), GraphError> {
        let mut builder = GraphBuilder::new();
        let output = lower(&self.node, &mut builder)?;
        Ok((builder.build()?, output))
    }

    /// Graphviz DOT text of this value's graph (see `kiln::visualize` to render it).
    ///
    /// # Errors
    /// When the graph is too large to draw.
    pub fn to_dot(&self) -> Result<String, TooLargeToDraw> {
        let (graph, _) = self.graph().expect("delayed graphs are valid by construction");
        to_dot(&graph, &DotOptions::default())
    }
}

impl<T: Any + Send + Sync + Clone> Collection for Delayed<T> {
    type Output = T;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        Ok(vec![lower(&self.node, builder)?])
    }

    fn output_count(&self) -> usize {
        1
    }

    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<T, ComputeError> {
        let value = values.into_iter().next().ok_or_else(|| ComputeError::Internal("no value returned".into()))?;
        value.take::<T>().map_err(|m| ComputeError::ResultType {
            key: graph.key(outputs[0]).clone(),
            expected: m.expected,
            found: m.found,
        })
    }
}

/// Adds a node and everything below it to the builder (iteratively: chains may be deep).
fn lower(root: &Arc<Node>, builder: &mut GraphBuilder) -> Result<TaskId, GraphError> {
    // Converting the graph for a cluster encodes literals with the global codecs.
    ensure_registered();
    // Each lowering has its own generation; a node whose tag carries it is already added.
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) << 32;
    let id_in_this_lowering = |node: &Node| {
        let tag = node.lowered.load(Ordering::Relaxed);
        (tag & !0xffff_ffff == generation).then_some(TaskId(tag as u32))
    };
    let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
    while let Some((node, expanded)) = stack.pop() {
        if id_in_this_lowering(node).is_some() {
            continue;
        }
        if !expanded {
            stack.push((node, true));
            for arg in node.args.iter().rev() {
                if let NodeArg::Node(child) = arg
                    && id_in_this_lowering(child).is_none()
                {
                    stack.push((child, false));
                }
            }
            continue;
        }
        let mut args = Vec::with_capacity(node.args.len());
        for arg in &node.args {
            args.push(match arg {
                NodeArg::Node(child) => Arg::Task(id_in_this_lowering(child).expect("children are added first")),
                NodeArg::Literal(v) => Arg::Literal(v.clone()),
                NodeArg::External(add) => Arg::Task(add(builder)?),
            });
        }
        // Equal keys from distinct nodes (the same call made twice) dedupe in the builder.
        let id = builder.add(node.key.clone(), Arc::clone(&node.kernel), args)?;
        node.lowered.store(generation | id.0 as u64, Ordering::Relaxed);
    }
    Ok(id_in_this_lowering(root).expect("the root was added"))
}

/// An argument of a delayed call: another delayed value, or a plain value that becomes a
/// literal in the graph (and part of the key's token).
pub trait IntoArg<T> {
    /// Feeds the token and returns the graph argument.
    #[doc(hidden)]
    fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf;
}

/// Opaque argument carrier (see [`IntoArg`]).
#[doc(hidden)]
pub struct NodeArgOf(NodeArg);

impl<T> IntoArg<T> for Delayed<T> {
    fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf {
        tokens.feed(&self.node.key);
        NodeArgOf(NodeArg::Node(self.node))
    }
}

impl<T> IntoArg<T> for &Delayed<T> {
    fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf {
        self.clone().into_node_arg(tokens)
    }
}

macro_rules! literal_args {
    ($($ty:ty),*) => {$(
        impl IntoArg<$ty> for $ty {
            fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf {
                tokens.feed(&self);
                NodeArgOf(NodeArg::Literal(Value::new(self)))
            }
        }
    )*};
}
literal_args!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize, f32, f64, bool, String);

impl IntoArg<String> for &str {
    fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf {
        self.to_string().into_node_arg(tokens)
    }
}

impl<T: Tokenize + Any + Send + Sync> IntoArg<Vec<T>> for Vec<T> {
    fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf {
        tokens.feed(&self);
        NodeArgOf(NodeArg::Literal(Value::new(self)))
    }
}

pub use portable::{ensure_registered, register_portable};

fn unique_token() -> String {
    Tokenizer::new().add(&kiln_graph::unique_token()).finish()
}

/// Any value as a delayed value (Dask's `delayed(data)`). Each call gets a fresh key; for
/// content-addressed keys use [`value_tokenized`].
pub fn value<T: Any + Send + Sync>(data: T) -> Delayed<T> {
    let key = Key::new(format!("value-{}", unique_token()));
    portable::value_node(key, Value::new(data))
}

/// A value whose key is derived from its content: equal data gives equal keys.
pub fn value_tokenized<T: Any + Send + Sync + Tokenize>(data: T) -> Delayed<T> {
    let key = Key::new(format!("value-{}", Tokenizer::new().add(&data).finish()));
    portable::value_node(key, Value::new(data))
}

macro_rules! delayed_fns {
    ($(($ty:ident, $plain:ident, $fallible:ident $(, $a:ident : $arg:ident)*)),* $(,)?) => {$(
        /// A function wrapped for delayed calls; see the crate docs.
        pub struct $ty<$($a,)* R> {
            name: Arc<str>,
            token: String,
            kernel: Arc<dyn Kernel>,
            _t: PhantomData<fn($($a,)*) -> R>,
        }

        impl<$($a,)* R> Clone for $ty<$($a,)* R> {
            fn clone(&self) -> Self {
                $ty { name: self.name.clone(), token: self.token.clone(), kernel: self.kernel.clone(), _t: PhantomData }
            }
        }

        impl<$($a: Any + Send + Sync,)* R: Any + Send + Sync> $ty<$($a,)* R> {
            fn wrap(name: &str, kernel: Arc<dyn Kernel>) -> Self {
                // A registered (portable) kernel is identified by its id in every process; a
                // closure only by this wrapper instance.
                let token = match kernel.spec() {
                    Some(spec) => Tokenizer::new().add(spec.id.as_str()).add(&spec.params).finish(),
                    None => unique_token(),
                };
                $ty { name: name.into(), token, kernel, _t: PhantomData }
            }

            /// Marks the function portable under a registered `id` (see
            /// `kiln_graph::KernelRegistry`), so remote workers can run it.
            pub fn portable(self, id: &str) -> Self
            where
                Self: Sized,
            {
                let spec_kernel = PortableAlias { inner: self.kernel.clone(), id: id.to_string() };
                Self::wrap(&self.name, Arc::new(spec_kernel))
            }

            /// The kernel, for registering it in a `KernelRegistry`.
            pub fn kernel(&self) -> Arc<dyn Kernel> {
                self.kernel.clone()
            }

            /// A delayed call: builds a task, runs nothing.
            #[allow(clippy::too_many_arguments)]
            pub fn call(&self $(, $arg: impl IntoArg<$a>)*) -> Delayed<R> {
                let mut tokens = Tokenizer::new();
                tokens.feed(self.token.as_str());
                let args = vec![$($arg.into_node_arg(&mut tokens).0),*];
                let key = tokens.key(&self.name);
                Delayed::from_node(key, self.kernel.clone(), args)
            }
        }

        /// Wraps an infallible function of this many arguments (taken by reference).
        pub fn $plain<$($a: Any + Send + Sync,)* R: Any + Send + Sync>(
            name: &str,
            f: impl Fn($(&$a),*) -> R + Send + Sync + 'static,
        ) -> $ty<$($a,)* R> {
            $ty::wrap(name, Arc::new(k::$plain(name, f)))
        }

        /// Wraps a fallible function: an `Err` fails the task with its message.
        pub fn $fallible<$($a: Any + Send + Sync,)* R: Any + Send + Sync, E: std::fmt::Display + 'static>(
            name: &str,
            f: impl Fn($(&$a),*) -> Result<R, E> + Send + Sync + 'static,
        ) -> $ty<$($a,)* R> {
            $ty::wrap(name, Arc::new(k::$fallible(name, f)))
        }
    )*};
}

delayed_fns!(
    (Func0, func0, try_func0),
    (Func1, func1, try_func1, A: a),
    (Func2, func2, try_func2, A: a, B: b),
    (Func3, func3, try_func3, A: a, B: b, C: c),
    (Func4, func4, try_func4, A: a, B: b, C: c, D: d),
);

/// A kernel given a portable id after the fact.
struct PortableAlias {
    inner: Arc<dyn Kernel>,
    id: String,
}

impl Kernel for PortableAlias {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        self.inner.call(inputs)
    }
    fn spec(&self) -> Option<kiln_graph::KernelSpec> {
        Some(kiln_graph::KernelSpec { id: self.id.clone(), params: Vec::new() })
    }
}

/// Gathers many delayed values into one delayed `Vec` (Dask's `delayed(list_of_delayed)`).
pub fn collect<T: Any + Send + Sync + Clone>(items: Vec<Delayed<T>>) -> Delayed<Vec<T>> {
    let mut tokens = Tokenizer::new();
    tokens.feed("collect");
    let args = items.into_iter().map(|d| d.into_node_arg(&mut tokens).0).collect();
    Delayed::from_node(tokens.key("collect"), portable::collect_kernel::<T>(), args)
}

/// Gathers a map of delayed values into one delayed map (the seeds' `results[a, b, c] = r3`).
pub fn collect_map<K, V>(items: BTreeMap<K, Delayed<V>>) -> Delayed<BTreeMap<K, V>>
where
    K: Ord + Clone + Tokenize + Any + Send + Sync,
    V: Any + Send + Sync + Clone,
{
    let mut tokens = Tokenizer::new();
    tokens.feed("collect_map");
    let keys: Vec<K> = items.keys().cloned().collect();
    for k in &keys {
        tokens.feed(k);
    }
    let args = items.into_values().map(|d| d.into_node_arg(&mut tokens).0).collect();
    Delayed::from_node(tokens.key("collect_map"), portable::collect_map_kernel::<K, V>(keys), args)
}

impl<T: Any + Send + Sync + Clone> kiln_graph::Persist for Delayed<T> {
    fn with_remote_outputs(&self, keep_alive: Value) -> Self {
        Delayed::remote(self.key().clone(), keep_alive)
    }
}
