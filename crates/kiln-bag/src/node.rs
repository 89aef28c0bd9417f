//! The task nodes a bag is made of: a DAG shared between bags, lowered into a `GraphBuilder`
//! and dropped without recursion (chains of nodes can be long).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_graph::{Arg, GraphBuilder, GraphError, Kernel, Key, TaskId, Value};

use crate::stream::ChunkSource;

/// Something from another collection used as a task input (a delayed value): it adds its own
/// tasks and returns the one whose value is the input.
pub(crate) trait ExternalTask: Send + Sync {
    fn add_to(&self, builder: &mut GraphBuilder) -> Result<TaskId, GraphError>;
}

pub(crate) struct Node {
    pub(crate) key: Key,
    kernel: Arc<dyn Kernel>,
    args: Vec<NodeArg>,
    /// Set when this node reads a file partition that later steps can read in chunks instead.
    pub(crate) source: Option<Arc<dyn ChunkSource>>,
    /// The id this node got in the graph being lowered, tagged with that lowering's generation
    /// (high 32 bits), so lowering needs no map from nodes to ids.
    lowered: AtomicU64,
}

pub(crate) enum NodeArg {
    Node(Arc<Node>),
    Literal(Value),
    External(Arc<dyn ExternalTask>),
}

impl Node {
    pub(crate) fn new(key: Key, kernel: Arc<dyn Kernel>, args: Vec<NodeArg>) -> Arc<Node> {
        Arc::new(Node { key, kernel, args, source: None, lowered: AtomicU64::new(0) })
    }

    /// A node reading `source` whole (its kernel), which fused pipelines read in chunks.
    pub(crate) fn with_source(key: Key, kernel: Arc<dyn Kernel>, source: Arc<dyn ChunkSource>) -> Arc<Node> {
        Arc::new(Node { key, kernel, args: Vec::new(), source: Some(source), lowered: AtomicU64::new(0) })
    }
}

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

/// Adds `roots` and everything below them to the builder, iteratively; returns their ids.
pub(crate) fn lower(roots: &[Arc<Node>], builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
    // Converting the graph for a cluster encodes partitions with the global codecs.
    crate::portable::ensure_registered();
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) << 32;
    let id_in_this_lowering = |node: &Node| {
        let tag = node.lowered.load(Ordering::Relaxed);
        (tag & !0xffff_ffff == generation).then_some(TaskId(tag as u32))
    };
    let mut stack: Vec<(&Arc<Node>, bool)> = roots.iter().rev().map(|r| (r, false)).collect();
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
                NodeArg::External(external) => Arg::Task(external.add_to(builder)?),
            });
        }
        let id = builder.add(node.key.clone(), Arc::clone(&node.kernel), args)?;
        node.lowered.store(generation | id.0 as u64, Ordering::Relaxed);
    }
    Ok(roots.iter().map(|r| id_in_this_lowering(r).expect("every root was added")).collect())
}
