//! Portable graphs: tasks as plain data that can leave the process.
//!
//! A [`TaskSpec`] names its kernel by [`KernelSpec`], its dependencies by [`Key`] and carries its
//! literals encoded by their codecs. This is what a client sends to a distributed scheduler and
//! what a worker turns back into a runnable task. Converting a graph fails with a message that
//! names the task and its kernel when a kernel is a closure that was never registered.
//!
//! ```
//! use std::sync::Arc;
//! use kiln_graph::{Arg, CodecRegistry, GraphBuilder, Key, Kernel, KernelRegistry, kernel::func1};
//! use kiln_graph::portable::{graph_to_specs, specs_to_graph};
//! let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1).portable("doc.inc"));
//! let kernels = KernelRegistry::new();
//! kernels.register_instance(inc.clone());
//! let mut g = GraphBuilder::new();
//! let x = g.add(Key::new("x"), inc.clone(), [Arg::literal(1i64)]).unwrap();
//! g.add(Key::new("y"), inc, [Arg::Task(x)]).unwrap();
//! let graph = g.build().unwrap();
//! let specs = graph_to_specs(&graph, CodecRegistry::global()).unwrap();
//! let rebuilt = specs_to_graph(&specs, &kernels, CodecRegistry::global()).unwrap();
//! assert_eq!(rebuilt.len(), 2);
//! ```

use std::sync::Arc;

use crate::codec::{CodecError, CodecRegistry, Encoded};
use crate::error::GraphError;
use crate::graph::{Arg, Graph, GraphBuilder, Input, TaskId};
use crate::kernel::{Kernel, KernelRegistry, KernelSpec, ResolveError};
use crate::key::Key;
use crate::value::Value;

/// One task as plain data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// The task's key.
    pub key: Key,
    /// What it runs.
    pub kernel: KernelSpec,
    /// Its inputs, in the order the kernel reads them.
    pub inputs: Vec<InputSpec>,
}

impl TaskSpec {
    /// The keys this task depends on (with repeats if an input is read twice).
    pub fn dependencies(&self) -> impl Iterator<Item = &Key> {
        self.inputs.iter().filter_map(|i| match i {
            InputSpec::Task(k) => Some(k),
            InputSpec::Literal(_) => None,
        })
    }
}

/// One input of a [`TaskSpec`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum InputSpec {
    /// The value of another task, by key.
    Task(Key),
    /// A literal value in encoded form.
    Literal(Encoded),
}

/// Why a graph or task could not be made portable, or rebuilt from specs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortableError {
    /// The task's kernel is a local closure without a registered id.
    #[error(
        "task {key} runs `{kernel}`, which cannot be sent to a cluster (the local scheduler can still run it): {}",
        hint.clone().unwrap_or_else(|| generic_hint(kernel))
    )]
    NotPortable {
        /// The task.
        key: Key,
        /// The kernel's display name.
        kernel: String,
        /// What the kernel says makes it portable ([`Kernel::portable_hint`]); `None` for the
        /// generic remedy of a local closure.
        hint: Option<String>,
    },
    /// A literal input has no codec.
    #[error("task {key}: literal input {position} cannot be sent: {source}")]
    Literal {
        /// The task.
        key: Key,
        /// Which input.
        position: usize,
        /// The codec's complaint.
        source: CodecError,
    },
    /// A kernel spec names nothing registered here.
    #[error("task {key}: {source}")]
    Resolve {
        /// The task.
        key: Key,
        /// The registry's complaint.
        source: ResolveError,
    },
    /// The specs do not form a valid graph.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The remedy for a local closure that says nothing more of itself.
fn generic_hint(kernel: &str) -> String {
    format!(
        "it is a local function that is not registered. Give it an id with `.portable(\"myapp.{kernel}\")` and \
         register it with `KernelRegistry::global().register_instance(..)` in the client and in the worker program, \
         or implement `PortableKernel` and call `KernelRegistry::global().register::<K>()`"
    )
}

/// Every task of `graph` as a [`TaskSpec`], in topological order.
///
/// # Errors
/// [`PortableError::NotPortable`] for the first task whose kernel has no spec,
/// [`PortableError::Literal`] for a literal without a codec.
pub fn graph_to_specs(graph: &Graph, codecs: &CodecRegistry) -> Result<Vec<TaskSpec>, PortableError> {
    graph.topological_order().iter().map(|&id| task_to_spec(graph, id, codecs)).collect()
}

/// One task of `graph` as a [`TaskSpec`].
///
/// # Errors
/// As [`graph_to_specs`].
pub fn task_to_spec(graph: &Graph, id: TaskId, codecs: &CodecRegistry) -> Result<TaskSpec, PortableError> {
    let key = graph.key(id);
    let kernel = graph.kernel(id);
    let spec = kernel.spec().ok_or_else(|| PortableError::NotPortable {
        key: key.clone(),
        kernel: kernel.name().to_string(),
        hint: kernel.portable_hint(),
    })?;
    let inputs = graph
        .inputs(id)
        .iter()
        .enumerate()
        .map(|(position, input)| match input {
            Input::Task(dep) => Ok(InputSpec::Task(graph.key(*dep).clone())),
            Input::Literal(v) => encode_literal(key, position, v, codecs),
        })
        .collect::<Result<_, _>>()?;
    Ok(TaskSpec { key: key.clone(), kernel: spec, inputs })
}

fn encode_literal(
    key: &Key,
    position: usize,
    value: &Value,
    codecs: &CodecRegistry,
) -> Result<InputSpec, PortableError> {
    codecs.encode(value).map(InputSpec::Literal).map_err(|source| PortableError::Literal {
        key: key.clone(),
        position,
        source,
    })
}

/// A task rebuilt from its spec: the kernel resolved and literals decoded, dependencies still
/// named by key.
pub struct ResolvedTask {
    /// The kernel to run.
    pub kernel: Arc<dyn Kernel>,
    /// Inputs: `Err(key)` for a dependency, `Ok(value)` for a literal.
    pub inputs: Vec<Result<Value, Key>>,
}

/// Resolves a spec's kernel and decodes its literals.
///
/// # Errors
/// [`PortableError::Resolve`] for an unknown kernel, [`PortableError::Literal`] for a literal
/// that does not decode.
pub fn resolve_task(
    spec: &TaskSpec,
    kernels: &KernelRegistry,
    codecs: &CodecRegistry,
) -> Result<ResolvedTask, PortableError> {
    let kernel =
        kernels.resolve(&spec.kernel).map_err(|source| PortableError::Resolve { key: spec.key.clone(), source })?;
    let inputs = spec
        .inputs
        .iter()
        .enumerate()
        .map(|(position, input)| match input {
            InputSpec::Task(k) => Ok(Err(k.clone())),
            InputSpec::Literal(e) => codecs.decode(e).map(Ok).map_err(|source| PortableError::Literal {
                key: spec.key.clone(),
                position,
                source,
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(ResolvedTask { kernel, inputs })
}

/// Rebuilds a graph from specs (in any order; dependencies are resolved by key).
///
/// # Errors
/// Resolution and decoding errors as [`resolve_task`]; graph errors for a dependency that no
/// spec produces or a cycle.
pub fn specs_to_graph(
    specs: &[TaskSpec],
    kernels: &KernelRegistry,
    codecs: &CodecRegistry,
) -> Result<Graph, PortableError> {
    let mut builder = GraphBuilder::with_capacity(specs.len());
    for spec in specs {
        let task = resolve_task(spec, kernels, codecs)?;
        let args = task.inputs.into_iter().map(|i| match i {
            Ok(v) => Arg::Literal(v),
            Err(k) => Arg::Key(k),
        });
        builder.add(spec.key.clone(), task.kernel, args)?;
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::{FusedKernel, Source, Step};
    use crate::kernel::func1;

    #[test]
    fn closures_are_refused_with_their_name_and_how_to_register() {
        let inc: Arc<dyn Kernel> = Arc::new(func1("my_increment", |x: &i64| x + 1));
        let mut g = GraphBuilder::new();
        g.add(Key::with_index("inc-ab", [3]), inc, [Arg::literal(1i64)]).unwrap();
        let err = graph_to_specs(&g.build().unwrap(), CodecRegistry::global()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("my_increment"), "{message}");
        assert!(message.contains("('inc-ab', 3)"), "{message}");
        assert!(message.contains(".portable("), "{message}");
    }

    /// A kernel whose fix is registering something else than a closure: the refusal quotes its
    /// own remedy, alone or fused with portable steps.
    #[test]
    fn kernels_with_their_own_remedy_are_refused_with_it() {
        struct NeedsAType;
        impl Kernel for NeedsAType {
            fn name(&self) -> &str {
                "convert"
            }
            fn call(&self, inputs: &[Value]) -> Result<Value, crate::TaskError> {
                Ok(inputs[0].clone())
            }
            fn portable_hint(&self) -> Option<String> {
                Some("register the record type with register_record::<R>()".into())
            }
        }
        let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1).portable("test.inc"));
        let fused = FusedKernel::new(vec![
            Step { kernel: inc, args: vec![Source::Input(0)], key: None },
            Step { kernel: Arc::new(NeedsAType), args: vec![Source::Step(0)], key: None },
        ])
        .unwrap();
        for kernel in [Arc::new(NeedsAType) as Arc<dyn Kernel>, Arc::new(fused)] {
            let mut g = GraphBuilder::new();
            g.add(Key::new("c"), kernel, [Arg::literal(1i64)]).unwrap();
            let message = graph_to_specs(&g.build().unwrap(), CodecRegistry::global()).unwrap_err().to_string();
            assert!(message.contains("register_record::<R>()"), "{message}");
            assert!(message.contains("`convert`") || message.contains("`inc-convert`"), "{message}");
            assert!(!message.contains(".portable(") && !message.contains("register_instance"), "{message}");
        }
    }

    #[test]
    fn literals_without_codec_are_named() {
        struct Opaque;
        let id: Arc<dyn Kernel> = Arc::new(crate::kernel::Identity);
        let mut g = GraphBuilder::new();
        g.add(Key::new("x"), id, [Arg::literal(Opaque)]).unwrap();
        let err = graph_to_specs(&g.build().unwrap(), CodecRegistry::global()).unwrap_err();
        assert!(matches!(err, PortableError::Literal { position: 0, .. }), "{err}");
    }

    #[test]
    fn fused_kernels_travel_step_by_step() {
        let kernels = KernelRegistry::new();
        let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1).portable("test.inc"));
        let double: Arc<dyn Kernel> = Arc::new(func1("double", |x: &i64| x * 2).portable("test.double"));
        kernels.register_instance(inc.clone());
        kernels.register_instance(double.clone());
        let fused = FusedKernel::new(vec![
            Step { kernel: inc, args: vec![Source::Input(0)], key: Some(Key::new("a")) },
            Step { kernel: double, args: vec![Source::Step(0)], key: None },
            Step {
                kernel: Arc::new(crate::kernel::Identity),
                args: vec![Source::Literal(Value::new(7i64))],
                key: None,
            },
        ])
        .unwrap();
        let mut g = GraphBuilder::new();
        let x = g.add(Key::new("x"), Arc::new(crate::kernel::Identity), [Arg::literal(3i64)]).unwrap();
        let fused: Arc<dyn Kernel> = Arc::new(fused);
        g.add(Key::new("y"), fused.clone(), [Arg::Task(x)]).unwrap();
        let specs = graph_to_specs(&g.build().unwrap(), CodecRegistry::global()).unwrap();
        let bytes = postcard::to_allocvec(&specs).unwrap();
        let specs: Vec<TaskSpec> = postcard::from_bytes(&bytes).unwrap();
        let rebuilt = specs_to_graph(&specs, &kernels, CodecRegistry::global()).unwrap();
        let y = rebuilt.id_of(&Key::new("y")).unwrap();
        assert_eq!(rebuilt.kernel(y).name(), "inc-double-identity");
        assert_eq!(rebuilt.dependencies(y).len(), 1);
        // The rebuilt kernel behaves like the original.
        let out = rebuilt.kernel(y).call(&[Value::new(3i64)]).unwrap();
        assert_eq!(*out.downcast_ref::<i64>().unwrap(), 7);
        let err = fused.call(&[Value::new("no")]).unwrap_err();
        let rebuilt_err = rebuilt.kernel(y).call(&[Value::new("no")]).unwrap_err();
        assert_eq!(err, rebuilt_err);
    }

    #[test]
    fn unknown_kernels_name_the_task() {
        let spec = TaskSpec {
            key: Key::new("t"),
            kernel: KernelSpec { id: "nowhere.fn".into(), params: vec![] },
            inputs: vec![],
        };
        let err = specs_to_graph(&[spec], &KernelRegistry::new(), CodecRegistry::global()).err().unwrap();
        assert!(err.to_string().contains("'t'") && err.to_string().contains("nowhere.fn"), "{err}");
    }
}
