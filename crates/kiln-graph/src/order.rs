//! Static ordering: which ready task to run first so that few values are alive at once.
//!
//! Schedulers run the ready task with the smallest priority. The order here is a depth-first,
//! post-order walk from the outputs, with two refinements in the spirit of `dask/order.py`:
//!
//! 1. **Heavier branch first.** Each task gets a Sethi–Ullman number: how many values must be
//!    alive at once to compute it alone. Children are visited in decreasing order of that
//!    number, which minimizes the peak for trees (and works well on DAGs).
//! 2. **Finish what frees memory.** When a task is placed and one of its readers now has all of
//!    its inputs placed, that reader is placed at once if running it releases at least one
//!    value (it is that value's last reader). This can only lower the number of live values.
//!    More precisely: whenever a value has at most two unplaced readers left and all of them
//!    are ready, they are placed at once, checked both when a reader becomes ready and when a
//!    value loses a reader. Without the second check and the pairs, `x + x.T - x.mean(axis=0)`
//!    over stored blocks kept every `x[i,j]`/`x[j,i]` pair alive to the very end (each pair is
//!    read by two ready tasks, neither of which frees anything alone): 381 of 400 blocks at
//!    the peak instead of about a quarter.
//!
//! Cost: O(E log d) time and a few words of memory per task.

use crate::graph::{Graph, TaskId};

/// Priority given to tasks the outputs do not need.
pub const NOT_NEEDED: u32 = u32::MAX;

/// Priorities for every task: `0..needed` for the tasks `outputs` need, [`NOT_NEEDED`] for the
/// rest. Lower runs first; the order is topological. A graph that carries an order planned by an
/// optimization for the same outputs ([`Graph::with_planned_order`]) gets that order back.
///
/// ```
/// use std::sync::Arc;
/// use kiln_graph::{GraphBuilder, Key, Arg, Kernel, order::order, kernel::{func1, func2}};
/// let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
/// let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
/// let mut g = GraphBuilder::new();
/// let a = g.add(Key::new("a"), inc.clone(), [Arg::literal(1i64)]).unwrap();
/// let b = g.add(Key::new("b"), inc, [Arg::literal(2i64)]).unwrap();
/// let c = g.add(Key::new("c"), add, [Arg::Task(a), Arg::Task(b)]).unwrap();
/// let g = g.build().unwrap();
/// let p = order(&g, &[c]);
/// assert!(p[c.index()] > p[a.index()] && p[c.index()] > p[b.index()]);
/// ```
pub fn order(graph: &Graph, outputs: &[TaskId]) -> Vec<u32> {
    if let Some(planned) = graph.planned_order(outputs) {
        return planned.to_vec();
    }
    let n = graph.len();
    let needed = crate::cull::needed(graph, outputs);

    // Sethi–Ullman numbers, bottom-up.
    let mut need = vec![1u32; n];
    let mut scratch: Vec<u32> = Vec::new();
    for &t in graph.topological_order() {
        let deps = graph.dependencies(t);
        if deps.is_empty() || !needed[t.index()] {
            continue;
        }
        scratch.clear();
        scratch.extend(deps.iter().map(|d| need[d.index()]));
        scratch.sort_unstable_by(|a, b| b.cmp(a));
        let mut v = 1u32;
        for (i, &x) in scratch.iter().enumerate() {
            v = v.max(x.saturating_add(i as u32));
        }
        // A reader of k inputs holds k values plus its result.
        need[t.index()] = v.max(deps.len() as u32 + 1);
    }

    let mut st = Placement {
        unplaced_deps: (0..n).map(|i| graph.dependencies(TaskId(i as u32)).len() as u32).collect(),
        unplaced_readers: graph
            .ids()
            .map(|t| graph.dependents(t).iter().filter(|d| needed[d.index()]).count() as u32)
            .collect(),
        priority: vec![NOT_NEEDED; n],
        needed,
        eager: Vec::new(),
        next: 0,
    };

    enum Frame {
        Visit(TaskId),
        Place(TaskId),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut children: Vec<TaskId> = Vec::new();

    // Outputs are visited in the order given, so the stack holds them reversed.
    for &root in outputs.iter().rev() {
        stack.push(Frame::Visit(root));
    }
    while let Some(frame) = stack.pop() {
        match frame {
            Frame::Visit(t) => {
                if st.placed(t) {
                    continue;
                }
                stack.push(Frame::Place(t));
                children.clear();
                children.extend(graph.dependencies(t).iter().filter(|d| !st.placed(**d)));
                // Heaviest first; ties by id so the order follows construction order.
                children.sort_unstable_by(|a, b| need[b.index()].cmp(&need[a.index()]).then(a.cmp(b)));
                for &c in children.iter().rev() {
                    stack.push(Frame::Visit(c));
                }
            }
            Frame::Place(t) => st.place_with_eager(graph, t),
        }
    }
    st.priority
}

/// The walk's bookkeeping: what is placed, and what each task still waits for.
struct Placement {
    /// Inputs of each task not placed yet (0: the task is ready).
    unplaced_deps: Vec<u32>,
    /// Needed readers of each value not placed yet (0: the value is freed).
    unplaced_readers: Vec<u32>,
    priority: Vec<u32>,
    needed: Vec<bool>,
    /// Tasks to place before the walk goes on, because placing them frees values.
    eager: Vec<TaskId>,
    next: u32,
}

/// A value is freed eagerly when at most this many of its readers are left and all of them are
/// ready. Two catches the common "pair" pattern (`x[i,j]` and `x[j,i]` both read by the two
/// transposed outputs), where neither reader frees anything alone.
const EAGER_READERS: u32 = 2;

impl Placement {
    fn placed(&self, t: TaskId) -> bool {
        self.priority[t.index()] != NOT_NEEDED
    }

    fn ready(&self, t: TaskId) -> bool {
        self.needed[t.index()] && !self.placed(t) && self.unplaced_deps[t.index()] == 0
    }

    /// Places `t`, then every task that placing it makes worth running at once.
    fn place_with_eager(&mut self, graph: &Graph, t: TaskId) {
        self.eager.push(t);
        while let Some(p) = self.eager.pop() {
            if self.placed(p) {
                continue;
            }
            self.priority[p.index()] = self.next;
            self.next += 1;
            for &d in graph.dependencies(p) {
                self.unplaced_readers[d.index()] -= 1;
            }
            for &r in graph.dependents(p) {
                if !self.needed[r.index()] {
                    continue;
                }
                self.unplaced_deps[r.index()] -= 1;
                if self.ready(r) {
                    for &d in graph.dependencies(r) {
                        self.push_readers_if_they_free(graph, d);
                    }
                }
            }
            for &d in graph.dependencies(p) {
                self.push_readers_if_they_free(graph, d);
            }
        }
    }

    /// Queues the remaining readers of `value` when there are few of them and all are ready:
    /// running them frees `value`.
    fn push_readers_if_they_free(&mut self, graph: &Graph, value: TaskId) {
        let left = self.unplaced_readers[value.index()];
        if left == 0 || left > EAGER_READERS {
            return;
        }
        let start = self.eager.len();
        for &r in graph.dependents(value) {
            if !self.needed[r.index()] || self.placed(r) {
                continue;
            }
            if !self.ready(r) {
                self.eager.truncate(start);
                return;
            }
            self.eager.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{peak_live, shapes};

    fn check(shape: (crate::Graph, Vec<TaskId>)) -> usize {
        let (g, outs) = shape;
        let p = order(&g, &outs);
        peak_live(&g, &outs, &p).expect("order is topological").peak
    }

    // Regression figures: the peak number of live values in a sequential run in this order.
    // Lower is better; a change to the ordering that raises one of these needs a reason.
    #[test]
    fn wide_tree_reduction() {
        // 4096 leaves, fan-in 8: depth 4, so at most 7 pending siblings per level plus one.
        assert_eq!(check(shapes::tree_reduction(4096, 8)), 30);
    }

    #[test]
    fn many_independent_chains() {
        // 64 chains of 50 steps reduced pairwise: each chain runs to its end before the next.
        assert_eq!(check(shapes::chains_then_tree(64, 50, 2)), 8);
    }

    #[test]
    fn diamond_lattice() {
        // 30 x 30 lattice: row r node j reads (r-1, j) and (r-1, j+1).
        // The 31 outputs stay alive to the end; the frontier adds about one diagonal.
        assert_eq!(check(shapes::diamond_lattice(30, 30)), 61);
    }

    #[test]
    fn transpose_sum() {
        // z[i,j] = x[i,j] + x[j,i] over 16 x 16 blocks, then a tree sum. Each x pair is freed
        // as soon as both of its readers are ready (173 before rule 2 looked at pairs); what
        // remains is z values waiting for their tree siblings.
        assert_eq!(check(shapes::transpose_sum(16, 8)), 85);
    }

    #[test]
    fn order_is_a_permutation_of_needed_tasks() {
        let (g, outs) = shapes::diamond_lattice(10, 10);
        let p = order(&g, &[outs[3]]);
        let mut placed: Vec<u32> = p.iter().copied().filter(|&x| x != NOT_NEEDED).collect();
        placed.sort_unstable();
        assert!(placed.iter().enumerate().all(|(i, &x)| x == i as u32));
        assert!(placed.len() < g.len());
    }
}
