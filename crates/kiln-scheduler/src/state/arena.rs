//! The task arena: every task the scheduler knows lives in one `Vec`, addressed by a typed
//! [`TaskSlot`], with a hash index from key to slot and a free list for forgotten slots.
//!
//! Dense slots instead of keys inside the state keep per-task bookkeeping to integer work
//! (principle 4: integer ids inside, keys outside); interning names, kernels and prefixes here
//! keeps a million similar tasks from holding a million copies of the same strings.

use std::hash::BuildHasher;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use kiln_graph::{Encoded, KernelSpec, Key};
use kiln_protocol::messages::{ClientId, Priority, TaskFailure, WorkerId};
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use super::{SchedulerState, TaskState};

kiln_protocol::define_id! {
    /// A task's place in the arena. Slots are reused after a task is forgotten, so a slot is
    /// only meaningful while its task is live.
    pub(crate) struct TaskSlot;
}

/// What a task runs, kept for (re)computation: lineage lets the scheduler recompute a value
/// lost with a worker.
pub(super) struct Body {
    /// Shared: the tasks of one array operation usually run the same kernel with the same
    /// parameters.
    pub(super) kernel: Arc<KernelSpec>,
    /// Inline for the common one- and two-input tasks: one allocation per body.
    pub(super) inputs: SmallVec<[BodyInput; 2]>,
}

pub(super) enum BodyInput {
    /// A dependency, by arena slot (deps outlive their dependents' bodies).
    Dep(TaskSlot),
    /// Boxed: literals are rarer than dependencies and much larger.
    Literal(Box<Encoded>),
}

pub(super) struct Task {
    pub(super) key: Key,
    /// `None` for data placed by a client (scatter): it cannot be recomputed.
    pub(super) body: Option<Box<Body>>,
    pub(super) deps: SmallVec<[TaskSlot; 2]>,
    pub(super) dependents: SmallVec<[TaskSlot; 2]>,
    pub(super) state: TaskState,
    pub(super) priority: Priority,
    /// While waiting: dependencies not in memory.
    pub(super) waiting_on: u32,
    /// Dependents in an active state (they still need this value).
    pub(super) waiters: u32,
    pub(super) wanted_by: SmallVec<[ClientId; 1]>,
    pub(super) who_has: SmallVec<[WorkerId; 1]>,
    /// The worker it is assigned to, while processing. (`Option` fits in the padding after
    /// the other four-byte fields: the task is 200 bytes, as with the old `u32::MAX` sentinel;
    /// a test keeps it so.)
    pub(super) processing_on: Option<WorkerId>,
    pub(super) nbytes: u64,
    pub(super) prefix: u32,
    pub(super) failure: Option<Box<TaskFailure>>,
    /// Workers that died while running it.
    pub(super) suspicious: u32,
    /// The run-time estimate charged to its worker's occupancy when assigned, so the same
    /// amount comes off again even if the estimate has been learned since.
    pub(super) charged_us: f32,
    /// False once forgotten (its slot is on the free list).
    pub(super) live: bool,
}

/// An interned task name's tasks: how many the scheduler knows, and how many of them went
/// from processing to memory (a client's progress bar, [`SchedulerState::name_progress`]).
pub(super) struct NameCount {
    pub(super) tasks: u32,
    pub(super) done: u64,
}

/// What the scheduler learned about one kind of task (a key prefix).
pub(super) struct PrefixStats {
    pub(super) name: Arc<str>,
    pub(super) duration_us: f64,
    pub(super) nbytes: f64,
    pub(super) finished: u64,
    /// Live tasks per state, indexed by `TaskState as usize`: kept here, a few increments
    /// per transition, so observers read progress in O(prefixes) without an event per
    /// transition (the dashboard's cost when nobody watches).
    pub(super) counts: [u64; 7],
    /// Tasks that went from processing to memory since this prefix last had nothing left
    /// to do (a progress bar's filled part).
    pub(super) done: u64,
    /// Tasks that erred in the same window.
    pub(super) erred: u64,
    /// Tasks that erred, ever.
    pub(super) erred_total: u64,
    /// Compute time of every finished task, ever, in microseconds.
    pub(super) compute_us: f64,
    /// Bytes of every result produced, ever.
    pub(super) output_bytes: u64,
}

impl PrefixStats {
    fn new(name: Arc<str>) -> Self {
        PrefixStats {
            name,
            duration_us: 0.0,
            nbytes: 0.0,
            finished: 0,
            counts: [0; 7],
            done: 0,
            erred: 0,
            erred_total: 0,
            compute_us: 0.0,
            output_bytes: 0,
        }
    }

    /// Tasks not finished yet: waiting, queued, no-worker or processing.
    pub(super) fn remaining(&self) -> u64 {
        self.counts[TaskState::Waiting as usize]
            + self.counts[TaskState::Queued as usize]
            + self.counts[TaskState::NoWorker as usize]
            + self.counts[TaskState::Processing as usize]
    }
}

/// The tasks, indexed by [`TaskSlot`].
#[derive(Default)]
pub(super) struct TaskArena {
    slots: Vec<Task>,
}

impl TaskArena {
    /// Appends a task in a new slot.
    pub(super) fn push(&mut self, task: Task) -> TaskSlot {
        self.slots.push(task);
        TaskSlot::new((self.slots.len() - 1) as u32)
    }

    /// The task in `slot`, if the slot exists (live or not).
    pub(super) fn get(&self, slot: TaskSlot) -> Option<&Task> {
        self.slots.get(slot.index())
    }

    /// Slots ever used (live and free).
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Allocated slots.
    pub(super) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Every slot's task, live or forgotten, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Task> {
        self.slots.iter()
    }

    /// Live tasks.
    pub(super) fn live(&self) -> impl Iterator<Item = &Task> {
        self.slots.iter().filter(|t| t.live)
    }
}

impl Index<TaskSlot> for TaskArena {
    type Output = Task;
    #[inline]
    fn index(&self, slot: TaskSlot) -> &Task {
        &self.slots[slot.index()]
    }
}

impl IndexMut<TaskSlot> for TaskArena {
    #[inline]
    fn index_mut(&mut self, slot: TaskSlot) -> &mut Task {
        &mut self.slots[slot.index()]
    }
}

pub(super) fn hash_key(key: &Key) -> u64 {
    FxBuildHasher.hash_one(key)
}

thread_local! {
    /// The name a forgotten slot's key is reset to, shared so forgetting does not allocate.
    static EMPTY_NAME: Arc<str> = Arc::from("");
}

impl SchedulerState {
    pub(super) fn find(&self, key: &Key) -> Option<TaskSlot> {
        let tasks = &self.tasks;
        self.index.find(hash_key(key), |&t| tasks[t].key == *key).copied()
    }

    /// Shares one name allocation among a name's tasks, counting them so the name goes with
    /// its last task (names are per graph in delayed code; a long-running scheduler must not
    /// keep them all).
    pub(super) fn intern(&mut self, key: Key) -> Key {
        match self.names.get_key_value_mut(key.shared_name()) {
            Some((name, count)) => {
                count.tasks += 1;
                Key::from_shared(name, key.index())
            }
            None => {
                self.names.insert(key.shared_name().clone(), NameCount { tasks: 1, done: 0 });
                key
            }
        }
    }

    /// One task of this name is gone; the name goes with the last one.
    pub(super) fn forget_name(&mut self, key: Key) {
        if let Some(count) = self.names.get_mut(key.shared_name()) {
            count.tasks -= 1;
            if count.tasks == 0 {
                self.names.remove(key.shared_name());
                if self.last_prefix.as_ref().is_some_and(|(n, _)| Arc::ptr_eq(n, key.shared_name())) {
                    self.last_prefix = None;
                }
            }
        }
    }

    pub(super) fn intern_kernel(&mut self, kernel: KernelSpec) -> Arc<KernelSpec> {
        match self.kernels.get(&kernel) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(kernel);
                self.kernels.insert(k.clone());
                k
            }
        }
    }

    pub(super) fn prefix_of(&mut self, key: &Key) -> u32 {
        if let Some((name, p)) = &self.last_prefix
            && Arc::ptr_eq(name, key.shared_name())
        {
            return *p;
        }
        let p = self.prefix_of_slow(key);
        self.last_prefix = Some((key.shared_name().clone(), p));
        p
    }

    pub(super) fn prefix_of_slow(&mut self, key: &Key) -> u32 {
        let prefix = key.prefix();
        if let Some(&p) = self.prefix_index.get(prefix) {
            return p;
        }
        let name: Arc<str> = prefix.into();
        let p = self.prefixes.len() as u32;
        self.prefixes.push(PrefixStats::new(name.clone()));
        self.prefix_index.insert(name, p);
        p
    }

    pub(super) fn insert_task(
        &mut self,
        key: Key,
        body: Option<Box<Body>>,
        deps: SmallVec<[TaskSlot; 2]>,
        priority: Priority,
    ) -> TaskSlot {
        let hash = hash_key(&key);
        self.insert_task_hashed(key, hash, body, deps, priority)
    }

    pub(super) fn insert_task_hashed(
        &mut self,
        key: Key,
        hash: u64,
        body: Option<Box<Body>>,
        deps: SmallVec<[TaskSlot; 2]>,
        priority: Priority,
    ) -> TaskSlot {
        let key = self.intern(key);
        let prefix = self.prefix_of(&key);
        let task = Task {
            key,
            body,
            deps,
            dependents: SmallVec::new(),
            state: TaskState::Released,
            priority,
            waiting_on: 0,
            waiters: 0,
            wanted_by: SmallVec::new(),
            who_has: SmallVec::new(),
            processing_on: None,
            nbytes: 0,
            prefix,
            failure: None,
            suspicious: 0,
            charged_us: 0.0,
            live: true,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.tasks[slot] = task;
                slot
            }
            None => self.tasks.push(task),
        };
        let stats = &mut self.prefixes[prefix as usize];
        if stats.remaining() == 0 {
            // New work for an idle prefix starts a fresh progress bar.
            stats.done = 0;
            stats.erred = 0;
        }
        stats.counts[TaskState::Released as usize] += 1;
        if self.records_transitions() {
            self.record_transition(slot, None, Some(TaskState::Released));
        }
        let tasks = &self.tasks;
        self.index.insert_unique(hash, slot, |&t| hash_key(&tasks[t].key));
        for i in 0..self.tasks[slot].deps.len() {
            let d = self.tasks[slot].deps[i];
            self.tasks[d].dependents.push(slot);
        }
        slot
    }

    /// Forgets released or erred tasks that nothing refers to, and then their inputs.
    pub(super) fn forget_if_unreferenced(&mut self, t: TaskSlot) {
        let mut stack = vec![t];
        while let Some(t) = stack.pop() {
            let task = &self.tasks[t];
            if !task.live
                || !matches!(task.state, TaskState::Released | TaskState::Erred)
                || !task.wanted_by.is_empty()
                || !task.dependents.is_empty()
            {
                continue;
            }
            let deps = std::mem::take(&mut self.tasks[t].deps);
            for &d in &deps {
                let dep = &mut self.tasks[d];
                if let Some(pos) = dep.dependents.iter().position(|&x| x == t) {
                    dep.dependents.swap_remove(pos);
                }
                if dep.dependents.is_empty() {
                    stack.push(d);
                }
            }
            let hash = hash_key(&self.tasks[t].key);
            if let Ok(entry) = self.index.find_entry(hash, |&x| x == t) {
                entry.remove();
            }
            let counts = &mut self.prefixes[self.tasks[t].prefix as usize].counts;
            counts[self.tasks[t].state as usize] -= 1;
            if self.records_transitions() {
                self.record_transition(t, Some(self.tasks[t].state), None);
            }
            let task = &mut self.tasks[t];
            task.live = false;
            let body = task.body.take();
            task.failure = None;
            task.dependents = SmallVec::new();
            let key = std::mem::replace(&mut task.key, Key::new(EMPTY_NAME.with(|n| n.clone())));
            self.free.push(t);
            self.forget_name(key);
            // The set and this body hold the last references: the spec is no longer used.
            if let Some(body) = body
                && Arc::strong_count(&body.kernel) == 2
            {
                self.kernels.remove(&body.kernel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-task footprint is a headline number: typed ids and `Option<WorkerId>` for
    /// "not processing" must not grow the task (they fit in padding the `u32` sentinel left).
    #[test]
    fn typed_ids_do_not_grow_the_task() {
        assert_eq!(std::mem::size_of::<TaskSlot>(), 4);
        assert_eq!(std::mem::size_of::<Option<WorkerId>>(), 8);
        assert!(std::mem::size_of::<Task>() <= TASK_BYTES_BEFORE_TYPED_IDS);
    }

    /// `size_of::<Task>()` with `processing_on: u32` and `u32::MAX` for none.
    const TASK_BYTES_BEFORE_TYPED_IDS: usize = 200;
}
