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
        Some(FusedKernel { name: names.join("-"), steps })
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

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let mut results: SmallVec<[Value; 4]> = SmallVec::with_capacity(self.steps.len());
        let mut args: SmallVec<[Value; 4]> = SmallVec::new();
        for step in &self.steps {
            args.clear();
            for src in &step.args {
                args.push(match src {
                    Source::Input(i) => {
                        inputs.get(*i).cloned().ok_or(TaskError::Arity { expected: i + 1, found: inputs.len() })?
                    }
                    Source::Literal(v) => v.clone(),
                    Source::Step(j) => results[*j].clone(),
                });
            }
            let result = step.kernel.call(&args).map_err(|error| match &step.key {
                Some(key) => TaskError::At { key: key.clone(), error: Box::new(error) },
                None => error,
            })?;
            results.push(result);
        }
        Ok(results.pop().expect("a fused kernel has at least one step"))
    }
}

/// Fuses linear chains: a task `d` that is not an output and whose only reader `t` reads no
/// other task is merged into `t` (under `t`'s key). Returns `None` when there is nothing to fuse.
///
/// # Errors
/// [`GraphError::UnknownTask`] for an output id outside the graph.
pub fn fuse_linear(graph: &Graph, outputs: &[TaskId]) -> Result<Option<(Graph, Vec<TaskId>)>, GraphError> {
    graph.check_outputs(outputs)?;
    let mut is_output = vec![false; graph.len()];
    for o in outputs {
        is_output[o.index()] = true;
    }
    let absorbed: Vec<bool> = graph
        .ids()
        .map(|d| {
            // A remote value is not computed here: it must stay a task of its own.
            !is_output[d.index()]
                && !graph.kernel(d).is_remote()
                && matches!(graph.dependents(d), [t] if graph.dependencies(*t) == [d])
        })
        .collect();
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
