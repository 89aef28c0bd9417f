//! Graphs: tasks in an arena, addressed by dense integer ids.
//!
//! Users name tasks with [`Key`]s; engines work on [`TaskId`]s, indices into flat arrays
//! (kernels, inputs, and dependency/dependent lists in compressed-row form). A million-task graph
//! is a handful of large allocations, not a million small ones.

use std::sync::Arc;

use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use smallvec::SmallVec;

use crate::error::GraphError;
use crate::kernel::Kernel;
use crate::key::Key;
use crate::value::Value;

/// A task's dense index in one [`Graph`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TaskId(pub u32);

impl TaskId {
    /// The id as an array index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// An argument given to [`GraphBuilder::add`].
#[derive(Clone, Debug)]
pub enum Arg {
    /// The result of a task already added.
    Task(TaskId),
    /// The result of the task with this key; it may be added later (resolved on build).
    Key(Key),
    /// A literal value.
    Literal(Value),
}

impl Arg {
    /// A literal argument.
    pub fn literal<T: std::any::Any + Send + Sync>(value: T) -> Arg {
        Arg::Literal(Value::new(value))
    }
}

impl From<TaskId> for Arg {
    fn from(id: TaskId) -> Arg {
        Arg::Task(id)
    }
}

/// One input of a task in a built graph.
#[derive(Clone, Debug)]
pub enum Input {
    /// The result of another task.
    Task(TaskId),
    /// A literal value.
    Literal(Value),
}

/// Builds a [`Graph`]. Adding a key twice returns the first task's id: equal keys mean equal
/// computations, which is how graphs from several collections merge and dedupe.
#[derive(Default)]
pub struct GraphBuilder {
    keys: Vec<Key>,
    kernels: Vec<Arc<dyn Kernel>>,
    input_offsets: Vec<u32>,
    inputs: Vec<Input>,
    /// Key arguments to resolve on build: (position in `inputs`, key).
    pending: Vec<(u32, Key)>,
    index: KeyIndex,
    /// Rebuilds of an existing graph (cull, fuse) know their keys are unique and skip the
    /// index; the graph then indexes lazily on its first key lookup.
    trusted: bool,
}

/// Key -> id without storing keys twice: the table holds ids and hashes keys from `keys`.
#[derive(Default)]
struct KeyIndex(HashTable<TaskId>);

fn hash_key(key: &Key) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl KeyIndex {
    fn with_capacity(n: usize) -> Self {
        KeyIndex(HashTable::with_capacity(n))
    }
    fn of(keys: &[Key]) -> Self {
        let mut index = KeyIndex::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            index.insert(keys, hash_key(key), TaskId(i as u32));
        }
        index
    }
    fn get(&self, keys: &[Key], key: &Key) -> Option<TaskId> {
        self.0.find(hash_key(key), |id| keys[id.index()] == *key).copied()
    }
    fn insert(&mut self, keys: &[Key], hash: u64, id: TaskId) {
        self.0.insert_unique(hash, id, |id| hash_key(&keys[id.index()]));
    }
}

impl GraphBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        let mut b = Self::default();
        b.input_offsets.push(0);
        b
    }

    /// An empty builder with room for `tasks` tasks.
    pub fn with_capacity(tasks: usize) -> Self {
        let mut b = GraphBuilder {
            keys: Vec::with_capacity(tasks),
            kernels: Vec::with_capacity(tasks),
            input_offsets: Vec::with_capacity(tasks + 1),
            inputs: Vec::with_capacity(tasks * 2),
            pending: Vec::new(),
            index: KeyIndex::with_capacity(tasks),
            trusted: false,
        };
        b.input_offsets.push(0);
        b
    }

    /// A builder for copying tasks of a valid graph: keys are known to be unique, arguments
    /// are task ids only, and no index is kept while adding.
    pub(crate) fn for_rebuild(tasks: usize) -> Self {
        let mut b = GraphBuilder::with_capacity(0);
        b.keys.reserve(tasks);
        b.kernels.reserve(tasks);
        b.input_offsets.reserve(tasks + 1);
        b.inputs.reserve(tasks * 2);
        b.trusted = true;
        b
    }

    /// How many tasks were added.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no task was added.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of a key added earlier.
    pub fn id_of(&self, key: &Key) -> Option<TaskId> {
        if self.trusted {
            return KeyIndex::of(&self.keys).get(&self.keys, key);
        }
        self.index.get(&self.keys, key)
    }

    /// Adds a task. Returns the existing id if the key is already present.
    ///
    /// # Errors
    /// [`GraphError::UnknownTask`] for an [`Arg::Task`] id that was not returned by this
    /// builder, [`GraphError::TooLarge`] past `u32::MAX` tasks.
    pub fn add(
        &mut self,
        key: Key,
        kernel: Arc<dyn Kernel>,
        args: impl IntoIterator<Item = Arg>,
    ) -> Result<TaskId, GraphError> {
        let hash = if self.trusted { 0 } else { hash_key(&key) };
        if !self.trusted
            && let Some(&id) = self.index.0.find(hash, |id| self.keys[id.index()] == key)
        {
            return Ok(id);
        }
        let id = u32::try_from(self.keys.len()).map_err(|_| GraphError::TooLarge)?;
        let start = self.inputs.len();
        let pending_start = self.pending.len();
        for arg in args {
            match arg {
                Arg::Task(dep) if dep.index() >= self.keys.len() => {
                    self.inputs.truncate(start);
                    self.pending.truncate(pending_start);
                    return Err(GraphError::UnknownTask(dep.0, self.keys.len()));
                }
                Arg::Task(dep) => self.inputs.push(Input::Task(dep)),
                Arg::Literal(v) => self.inputs.push(Input::Literal(v)),
                Arg::Key(k) => {
                    let position = u32::try_from(self.inputs.len()).map_err(|_| GraphError::TooLarge)?;
                    match self.index.get(&self.keys, &k) {
                        Some(dep) => self.inputs.push(Input::Task(dep)),
                        None => {
                            self.pending.push((position, k));
                            self.inputs.push(Input::Task(TaskId(u32::MAX)));
                        }
                    }
                }
            }
        }
        let end = u32::try_from(self.inputs.len()).map_err(|_| GraphError::TooLarge)?;
        self.input_offsets.push(end);
        self.keys.push(key);
        self.kernels.push(kernel);
        if !self.trusted {
            self.index.insert(&self.keys, hash, TaskId(id));
        }
        Ok(TaskId(id))
    }

    /// Validates and freezes the graph.
    ///
    /// # Errors
    /// [`GraphError::MissingDependency`] for a key argument nobody produces,
    /// [`GraphError::Cycle`] (naming keys along the cycle) when keys refer in a circle.
    pub fn build(self) -> Result<Graph, GraphError> {
        let GraphBuilder { keys, kernels, input_offsets, mut inputs, pending, index, trusted } = self;
        let n = keys.len();
        // Key arguments that named a task not yet added when they were given.
        let forward_refs = !pending.is_empty();
        for (position, key) in pending {
            let task = input_offsets.partition_point(|&o| o <= position) - 1;
            let id = index
                .get(&keys, &key)
                .ok_or_else(|| GraphError::MissingDependency { task: keys[task].clone(), missing: key.clone() })?;
            inputs[position as usize] = Input::Task(id);
        }

        // Unique dependencies per task, compressed rows.
        let mut dep_offsets = Vec::with_capacity(n + 1);
        let mut deps: Vec<TaskId> = Vec::with_capacity(inputs.len());
        dep_offsets.push(0u32);
        let mut dependent_counts = vec![0u32; n];
        for window in input_offsets.windows(2) {
            let start = deps.len();
            for input in &inputs[window[0] as usize..window[1] as usize] {
                if let Input::Task(id) = input
                    && !deps[start..].contains(id)
                {
                    deps.push(*id);
                    dependent_counts[id.index()] += 1;
                }
            }
            dep_offsets.push(deps.len() as u32);
        }
        let mut dependent_offsets = Vec::with_capacity(n + 1);
        dependent_offsets.push(0u32);
        let mut acc = 0u32;
        for c in &dependent_counts {
            acc += c;
            dependent_offsets.push(acc);
        }
        let mut fill = dependent_offsets[..n].to_vec();
        let mut dependents = vec![TaskId(0); deps.len()];
        for task in 0..n {
            for dep in &deps[dep_offsets[task] as usize..dep_offsets[task + 1] as usize] {
                let slot = &mut fill[dep.index()];
                dependents[*slot as usize] = TaskId(task as u32);
                *slot += 1;
            }
        }

        let mut graph = Graph {
            keys,
            kernels,
            input_offsets,
            inputs,
            dep_offsets,
            deps,
            dependent_offsets,
            dependents,
            index: if trusted { OnceLock::new() } else { OnceLock::from(index) },
            topo: Vec::new(),
            planned_order: None,
        };
        graph.topo = if forward_refs { graph.kahn_order()? } else { (0..n as u32).map(TaskId).collect() };
        Ok(graph)
    }
}

/// A validated task graph. Ids are dense `0..len()`; [`Graph::topological_order`] lists them
/// with every task after its dependencies.
pub struct Graph {
    keys: Vec<Key>,
    kernels: Vec<Arc<dyn Kernel>>,
    input_offsets: Vec<u32>,
    inputs: Vec<Input>,
    dep_offsets: Vec<u32>,
    deps: Vec<TaskId>,
    dependent_offsets: Vec<u32>,
    dependents: Vec<TaskId>,
    index: OnceLock<KeyIndex>,
    topo: Vec<TaskId>,
    /// An order decided while optimizing, for these outputs (see [`Graph::with_planned_order`]).
    planned_order: Option<(Vec<TaskId>, Vec<u32>)>,
}

impl Graph {
    /// Attaches the order an optimization planned for running `outputs` (priorities as
    /// [`crate::order::order`] gives them), so [`crate::order::order`] returns it instead of
    /// computing its own: an optimization that placed tasks knowing why (a block read again just
    /// before its readers) keeps that placement in every engine.
    ///
    /// # Errors
    /// [`GraphError::InvalidOrder`] when `priority` has the wrong length or runs a task before one
    /// of its dependencies.
    pub fn with_planned_order(mut self, outputs: &[TaskId], priority: Vec<u32>) -> Result<Graph, GraphError> {
        self.check_outputs(outputs)?;
        if priority.len() != self.len() {
            return Err(GraphError::InvalidOrder(format!("{} priorities for {} tasks", priority.len(), self.len())));
        }
        for t in self.ids() {
            let p = priority[t.index()];
            if p != crate::order::NOT_NEEDED
                && let Some(d) = self.dependencies(t).iter().find(|d| priority[d.index()] >= p)
            {
                return Err(GraphError::InvalidOrder(format!(
                    "it runs {} before its dependency {}",
                    self.key(t),
                    self.key(*d)
                )));
            }
        }
        self.planned_order = Some((outputs.to_vec(), priority));
        Ok(self)
    }

    /// The order attached by [`Graph::with_planned_order`] when it was planned for `outputs`.
    pub fn planned_order(&self, outputs: &[TaskId]) -> Option<&[u32]> {
        self.planned_order.as_ref().filter(|(o, _)| o == outputs).map(|(_, p)| p.as_slice())
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the graph has no tasks.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All task ids.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = TaskId> + use<> {
        (0..self.keys.len() as u32).map(TaskId)
    }

    /// A task's key.
    pub fn key(&self, id: TaskId) -> &Key {
        &self.keys[id.index()]
    }

    /// All keys, indexed by id.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// A task's kernel.
    pub fn kernel(&self, id: TaskId) -> &Arc<dyn Kernel> {
        &self.kernels[id.index()]
    }

    /// A task's inputs in call order (repeats allowed).
    pub fn inputs(&self, id: TaskId) -> &[Input] {
        &self.inputs[self.input_offsets[id.index()] as usize..self.input_offsets[id.index() + 1] as usize]
    }

    /// The distinct tasks this task reads.
    pub fn dependencies(&self, id: TaskId) -> &[TaskId] {
        &self.deps[self.dep_offsets[id.index()] as usize..self.dep_offsets[id.index() + 1] as usize]
    }

    /// The distinct tasks that read this task.
    pub fn dependents(&self, id: TaskId) -> &[TaskId] {
        &self.dependents[self.dependent_offsets[id.index()] as usize..self.dependent_offsets[id.index() + 1] as usize]
    }

    /// The id of a key.
    pub fn id_of(&self, key: &Key) -> Option<TaskId> {
        self.index.get_or_init(|| KeyIndex::of(&self.keys)).get(&self.keys, key)
    }

    /// Ids for keys.
    ///
    /// # Errors
    /// [`GraphError::UnknownKey`] for a key not in the graph.
    pub fn ids_of<'a>(&self, keys: impl IntoIterator<Item = &'a Key>) -> Result<Vec<TaskId>, GraphError> {
        keys.into_iter().map(|k| self.id_of(k).ok_or_else(|| GraphError::UnknownKey(k.clone()))).collect()
    }

    /// Every task after all of its dependencies.
    pub fn topological_order(&self) -> &[TaskId] {
        &self.topo
    }

    /// Checks that output ids belong to this graph.
    ///
    /// # Errors
    /// [`GraphError::UnknownTask`] for an id out of range.
    pub fn check_outputs(&self, outputs: &[TaskId]) -> Result<(), GraphError> {
        match outputs.iter().find(|o| o.index() >= self.len()) {
            Some(o) => Err(GraphError::UnknownTask(o.0, self.len())),
            None => Ok(()),
        }
    }

    /// Kahn's algorithm; on a cycle, extracts one for the error message.
    fn kahn_order(&self) -> Result<Vec<TaskId>, GraphError> {
        let n = self.len();
        let mut missing: Vec<u32> = (0..n).map(|i| self.dependencies(TaskId(i as u32)).len() as u32).collect();
        let mut order: Vec<TaskId> = self.ids().filter(|t| missing[t.index()] == 0).collect();
        let mut head = 0;
        while head < order.len() {
            let t = order[head];
            head += 1;
            for &d in self.dependents(t) {
                missing[d.index()] -= 1;
                if missing[d.index()] == 0 {
                    order.push(d);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        // Every unfinished task has an unfinished dependency: walk those until one repeats.
        let start = self.ids().find(|t| missing[t.index()] > 0).expect("an unfinished task exists");
        let mut seen = FxHashMap::default();
        let mut path: SmallVec<[TaskId; 16]> = SmallVec::new();
        let mut t = start;
        while !seen.contains_key(&t) {
            seen.insert(t, path.len());
            path.push(t);
            t = *self.dependencies(t).iter().find(|d| missing[d.index()] > 0).expect("cycle continues");
        }
        let mut cycle: Vec<Key> = path[seen[&t]..].iter().rev().map(|id| self.key(*id).clone()).collect();
        cycle.push(cycle[0].clone());
        Err(GraphError::Cycle { cycle })
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph<{} tasks, {} edges>", self.len(), self.deps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{func1, func2};

    fn inc() -> Arc<dyn Kernel> {
        Arc::new(func1("inc", |x: &i64| x + 1))
    }

    #[test]
    fn builds_adjacency_and_dedupes_keys() {
        let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
        let mut g = GraphBuilder::new();
        let a = g.add(Key::new("a"), inc(), [Arg::literal(1i64)]).unwrap();
        let again = g.add(Key::new("a"), inc(), [Arg::literal(99i64)]).unwrap();
        assert_eq!(a, again);
        let b = g.add(Key::new("b"), add, [Arg::Task(a), Arg::Task(a)]).unwrap();
        let g = g.build().unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.dependencies(b), &[a]);
        assert_eq!(g.dependents(a), &[b]);
        assert_eq!(g.inputs(b).len(), 2);
    }

    #[test]
    fn missing_dependency_names_both_keys() {
        let mut g = GraphBuilder::new();
        g.add(Key::new("b"), inc(), [Arg::Key(Key::new("a"))]).unwrap();
        let err = g.build().unwrap_err();
        assert_eq!(err, GraphError::MissingDependency { task: Key::new("b"), missing: Key::new("a") });
        assert_eq!(err.to_string(), "task 'b' depends on 'a', which is not in the graph");
    }

    #[test]
    fn cycle_is_reported_with_its_keys() {
        let mut g = GraphBuilder::new();
        g.add(Key::new("a"), inc(), [Arg::Key(Key::new("c"))]).unwrap();
        g.add(Key::new("b"), inc(), [Arg::Key(Key::new("a"))]).unwrap();
        g.add(Key::new("c"), inc(), [Arg::Key(Key::new("b"))]).unwrap();
        g.add(Key::new("d"), inc(), [Arg::literal(0i64)]).unwrap();
        match g.build().unwrap_err() {
            GraphError::Cycle { cycle } => {
                assert_eq!(cycle.len(), 4);
                assert_eq!(cycle.first(), cycle.last());
            }
            other => panic!("expected a cycle, got {other}"),
        }
    }

    #[test]
    fn forward_references_get_a_topological_order() {
        let mut g = GraphBuilder::new();
        g.add(Key::new("b"), inc(), [Arg::Key(Key::new("a"))]).unwrap();
        g.add(Key::new("a"), inc(), [Arg::literal(0i64)]).unwrap();
        let g = g.build().unwrap();
        let order: Vec<&str> = g.topological_order().iter().map(|t| g.key(*t).name()).collect();
        assert_eq!(order, ["a", "b"]);
    }

    #[test]
    fn unknown_task_id_is_an_error() {
        let mut g = GraphBuilder::new();
        assert_eq!(g.add(Key::new("a"), inc(), [Arg::Task(TaskId(5))]).unwrap_err(), GraphError::UnknownTask(5, 0));
    }
}
