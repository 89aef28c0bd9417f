//! Fusion: several tasks become one, so their intermediates never become scheduled values.
//!
//! [`fuse_linear`] merges linear chains (a task whose only reader reads nothing else). The
//! general mechanism is [`FusedKernel`]: a small program of kernel calls over the fused task's
//! inputs, literals and earlier steps. Collections use it directly for blockwise fusion (all the
//! elementwise operations on one array block in one task).

use std::sync::Arc;

use smallvec::SmallVec;

use crate::codec::{CodecRegistry, Encoded};
use crate::error::{GraphError, TaskError};
use crate::graph::{Arg, Graph, GraphBuilder, Input, TaskId};
use crate::kernel::{Kernel, KernelRegistry, KernelSpec};
use crate::key::Key;
use crate::value::Value;

/// Where one argument of a fused step comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Input `i` of the fused task.
    Input(usize),
    /// A literal.
    Literal(Value),
    /// The result of an earlier step.
    Step(usize),
}

/// One kernel call inside a fused task.
#[derive(Clone)]
pub struct Step {
    /// The kernel to call.
    pub kernel: Arc<dyn Kernel>,
    /// Its arguments.
    pub args: Vec<Source>,
    /// The key of the task this step was, so errors name it (`None`: the fused task's own).
    pub key: Option<Key>,
}

/// Several kernel calls run as one task; the last step's result is the task's result.
///
/// ```
/// use std::sync::Arc;
/// use kiln_graph::{Value, Kernel, kernel::func1, fuse::{FusedKernel, Step, Source}};
/// let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
/// let double: Arc<dyn Kernel> = Arc::new(func1("double", |x: &i64| x * 2));
/// let fused = FusedKernel::new(vec![
///     Step { kernel: inc, args: vec![Source::Input(0)], key: None },
///     Step { kernel: double, args: vec![Source::Step(0)], key: None },
/// ]).unwrap();
/// assert_eq!(fused.name(), "inc-double");
/// let out = fused.call(&[Value::new(3i64)]).unwrap();
/// assert_eq!(*out.downcast_ref::<i64>().unwrap(), 8);
/// ```
pub struct FusedKernel {
    name: String,
    steps: Vec<Step>,
    /// Per step, the last step that reads its result (its own index when none does), so each
    /// intermediate is dropped as soon as it has been read for the last time.
    last_use: Vec<usize>,
}

impl FusedKernel {
    /// A fused kernel; `None` if `steps` is empty or a step reads a later step.
    pub fn new(steps: Vec<Step>) -> Option<FusedKernel> {
        if steps.is_empty() {
            return None;
        }
        for (i, step) in steps.iter().enumerate() {
            if step.args.iter().any(|a| matches!(a, Source::Step(j) if *j >= i)) {
                return None;
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for s in &steps {
            if names.last() != Some(&s.kernel.name()) {
                names.push(s.kernel.name());
            }
        }
        let mut last_use: Vec<usize> = (0..steps.len()).collect();
        for (i, step) in steps.iter().enumerate() {
            for a in &step.args {
                if let Source::Step(j) = a {
                    last_use[*j] = i;
                }
            }
        }
        Some(FusedKernel { name: names.join("-"), steps, last_use })
    }

    /// The steps, in execution order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// The id under which fused kernels travel; their steps travel as their own specs.
pub const FUSED_KERNEL_ID: &str = "kiln.fused";

#[derive(serde::Serialize, serde::Deserialize)]
struct StepSpec {
    kernel: KernelSpec,
    args: Vec<SourceSpec>,
    key: Option<Key>,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum SourceSpec {
    Input(u32),
    Literal(Encoded),
    Step(u32),
}

impl FusedKernel {
    /// Rebuilds a fused kernel from its spec parameters, resolving every step's kernel in
    /// `kernels` and decoding literals with the global codecs.
    pub(crate) fn from_params(params: &[u8], kernels: &KernelRegistry) -> Result<FusedKernel, String> {
        let specs: Vec<StepSpec> = postcard::from_bytes(params).map_err(|e| e.to_string())?;
        let codecs = CodecRegistry::global();
        let mut steps = Vec::with_capacity(specs.len());
        for spec in specs {
            let kernel = kernels.resolve(&spec.kernel).map_err(|e| e.to_string())?;
            let args = spec
                .args
                .into_iter()
                .map(|a| {
                    Ok(match a {
                        SourceSpec::Input(i) => Source::Input(i as usize),
                        SourceSpec::Step(i) => Source::Step(i as usize),
                        SourceSpec::Literal(e) => Source::Literal(codecs.decode(&e).map_err(|e| e.to_string())?),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            steps.push(Step { kernel, args, key: spec.key });
        }
        FusedKernel::new(steps).ok_or_else(|| "a fused kernel needs steps that read only earlier steps".to_string())
    }
}

impl Kernel for FusedKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn spec(&self) -> Option<KernelSpec> {
        let codecs = CodecRegistry::global();
        let steps = self
            .steps
            .iter()
            .map(|step| {
                let args = step
                    .args
                    .iter()
                    .map(|a| {
                        Some(match a {
                            Source::Input(i) => SourceSpec::Input(*i as u32),
                            Source::Step(i) => SourceSpec::Step(*i as u32),
                            Source::Literal(v) => SourceSpec::Literal(codecs.encode(v).ok()?),
                        })
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(StepSpec { kernel: step.kernel.spec()?, args, key: step.key.clone() })
            })
            .collect::<Option<Vec<_>>>()?;
        postcard::to_allocvec(&steps).ok().map(|params| KernelSpec { id: FUSED_KERNEL_ID.to_string(), params })
    }

    fn portable_hint(&self) -> Option<String> {
        // The fused task cannot travel because one of its steps cannot: that step's remedy.
        self.steps.iter().find(|s| s.kernel.spec().is_none()).and_then(|s| s.kernel.portable_hint())
    }

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        // An intermediate lives until its last reader has run, not to the end of the chain.
        let mut results: SmallVec<[Option<Value>; 4]> = SmallVec::with_capacity(self.steps.len());
        let mut args: SmallVec<[Value; 4]> = SmallVec::new();
        for (i, step) in self.steps.iter().enumerate() {
            args.clear();
            for src in &step.args {
                args.push(match src {
                    Source::Input(i) => {
                        inputs.get(*i).cloned().ok_or(TaskError::Arity { expected: i + 1, found: inputs.len() })?
                    }
                    Source::Literal(v) => v.clone(),
                    Source::Step(j) => results[*j].clone().expect("a step's result is kept until its last reader"),
                });
            }
            for src in &step.args {
                if let Source::Step(j) = src
                    && self.last_use[*j] == i
                {
                    results[*j] = None;
                }
            }
            let result = step.kernel.call(&args).map_err(|error| match &step.key {
                Some(key) => TaskError::At { key: key.clone(), error: Box::new(error) },
                None => error,
            })?;
            args.clear();
            results.push(Some(result));
        }
        Ok(results.pop().flatten().expect("a fused kernel's last step has a result"))
    }
}

/// The most tasks one linear chain fuses into: a longer chain becomes several fused tasks, so a
/// fused kernel's spec (what travels to a worker, and what a worker caches) stays small however
/// long the chain, and so does the work one task does.
pub const MAX_FUSED_CHAIN: usize = 256;

/// Fuses linear chains: a task `d` that is not an output and whose only reader `t` reads no
/// other task is merged into `t` (under `t`'s key), at most [`MAX_FUSED_CHAIN`] tasks per fused
/// task. Returns `None` when there is nothing to fuse.
///
/// # Errors
/// [`GraphError::UnknownTask`] for an output id outside the graph.
pub fn fuse_linear(graph: &Graph, outputs: &[TaskId]) -> Result<Option<(Graph, Vec<TaskId>)>, GraphError> {
    graph.check_outputs(outputs)?;
    let mut is_output = vec![false; graph.len()];
    for o in outputs {
        is_output[o.index()] = true;
    }
    let mut absorbed: Vec<bool> = graph
        .ids()
        .map(|d| {
            // A remote value is not computed here: it must stay a task of its own.
            !is_output[d.index()]
                && !graph.kernel(d).is_remote()
                && matches!(graph.dependents(d), [t] if graph.dependencies(*t) == [d])
        })
        .collect();
    // Cut chains every MAX_FUSED_CHAIN tasks: `run[t]` is how many tasks `t`'s chain holds up
    // to `t` (dependencies come first in topological order).
    let mut run = vec![1usize; graph.len()];
    for &t in graph.topological_order() {
        if let [d] = graph.dependencies(t)
            && absorbed[d.index()]
        {
            run[t.index()] = run[d.index()] + 1;
            if run[t.index()] > MAX_FUSED_CHAIN {
                absorbed[d.index()] = false;
                run[t.index()] = 1;
            }
        }
    }
    if !absorbed.iter().any(|&a| a) {
        return Ok(None);
    }

    let mut builder = GraphBuilder::for_rebuild(graph.len());
    let mut remap = vec![TaskId(u32::MAX); graph.len()];
    let mut chain: Vec<TaskId> = Vec::new();
    for &t in graph.topological_order() {
        if absorbed[t.index()] {
            continue;
        }
        chain.clear();
        chain.push(t);
        let mut bottom = t;
        while let [d] = graph.dependencies(bottom) {
            if !absorbed[d.index()] {
                break;
            }
            chain.push(*d);
            bottom = *d;
        }
        let args = graph.inputs(bottom).iter().map(|input| match input {
            Input::Task(d) => Arg::Task(remap[d.index()]),
            Input::Literal(v) => Arg::Literal(v.clone()),
        });
        let kernel: Arc<dyn Kernel> = if chain.len() == 1 {
            graph.kernel(t).clone()
        } else {
            let steps = chain
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &task)| Step {
                    key: (task != t).then(|| graph.key(task).clone()),
                    kernel: graph.kernel(task).clone(),
                    args: graph
                        .inputs(task)
                        .iter()
                        .enumerate()
                        .map(|(pos, input)| match input {
                            _ if i == 0 => Source::Input(pos),
                            Input::Task(_) => Source::Step(i - 1),
                            Input::Literal(v) => Source::Literal(v.clone()),
                        })
                        .collect(),
                })
                .collect();
            Arc::new(FusedKernel::new(steps).expect("a chain is a valid program"))
        };
        remap[t.index()] = builder.add(graph.key(t).clone(), kernel, args)?;
    }
    let fused = builder.build()?;
    Ok(Some((fused, outputs.iter().map(|o| remap[o.index()]).collect())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{func1, func2};

    #[test]
    fn chains_fuse_but_shared_values_do_not() {
        let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
        let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
        let mut g = GraphBuilder::new();
        // a -> b -> c, then c is read twice by d (x + x): a, b fuse into c; c stays.
        let a = g.add(Key::new("a"), inc.clone(), [Arg::literal(0i64)]).unwrap();
        let b = g.add(Key::new("b"), inc.clone(), [Arg::Task(a)]).unwrap();
        let c = g.add(Key::new("c"), inc.clone(), [Arg::Task(b)]).unwrap();
        let d = g.add(Key::new("d"), add, [Arg::Task(c), Arg::Task(c)]).unwrap();
        let e = g.add(Key::new("e"), inc, [Arg::Task(c)]).unwrap();
        let g = g.build().unwrap();
        let (fused, outs) = fuse_linear(&g, &[d, e]).unwrap().unwrap();
        assert_eq!(fused.len(), 3);
        let c2 = fused.id_of(&Key::new("c")).unwrap();
        assert_eq!(fused.kernel(c2).name(), "inc");
        assert!(fused.dependencies(c2).is_empty());
        let out = fused.kernel(c2).call(&[Value::new(0i64)]).unwrap();
        assert_eq!(*out.downcast_ref::<i64>().unwrap(), 3);
        assert_eq!(fused.key(outs[0]), &Key::new("d"));
    }

    #[test]
    fn long_chains_fuse_into_bounded_pieces_that_free_their_intermediates() {
        let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
        let n = 3 * MAX_FUSED_CHAIN + 5;
        let mut g = GraphBuilder::new();
        let mut last = g.add(Key::with_index("t", [0]), inc.clone(), [Arg::literal(0i64)]).unwrap();
        for i in 1..n {
            last = g.add(Key::with_index("t", [i as u32]), inc.clone(), [Arg::Task(last)]).unwrap();
        }
        let g = g.build().unwrap();
        let (fused, outs) = fuse_linear(&g, &[last]).unwrap().unwrap();
        assert_eq!(fused.len(), n.div_ceil(MAX_FUSED_CHAIN));
        let mut values: Vec<Value> = Vec::new();
        for &t in fused.topological_order() {
            let inputs: Vec<Value> = fused
                .inputs(t)
                .iter()
                .map(|i| match i {
                    Input::Task(d) => values[d.index()].clone(),
                    Input::Literal(v) => v.clone(),
                })
                .collect();
            let kernel = fused.kernel(t);
            if let Some(steps) = kernel.spec().map(|s| s.params.len()) {
                assert!(steps < 64 * MAX_FUSED_CHAIN, "a fused spec stays small");
            }
            while values.len() <= t.index() {
                values.push(Value::new(()));
            }
            values[t.index()] = kernel.call(&inputs).unwrap();
        }
        assert_eq!(*values[outs[0].index()].downcast_ref::<i64>().unwrap(), n as i64);
    }

    #[test]
    fn outputs_are_never_absorbed() {
        let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
        let mut g = GraphBuilder::new();
        let a = g.add(Key::new("a"), inc.clone(), [Arg::literal(0i64)]).unwrap();
        let b = g.add(Key::new("b"), inc, [Arg::Task(a)]).unwrap();
        let g = g.build().unwrap();
        assert!(fuse_linear(&g, &[a, b]).unwrap().is_none());
        let (fused, _) = fuse_linear(&g, &[b]).unwrap().unwrap();
        assert_eq!(fused.len(), 1);
    }
}
