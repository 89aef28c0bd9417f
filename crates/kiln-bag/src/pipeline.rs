//! Elementwise steps fused per partition: `map`, `filter`, ... append a step to a bag's
//! pipeline instead of adding a task, and one task per partition runs every pending step in a
//! loop. Only the first step borrows the partition (which other tasks may read too); later
//! steps own their input, so `filter` after `map` filters in place.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use kiln_graph::{Kernel, KernelSpec, TaskError, Tokenizer, Value};

use crate::portable::StepSpec;

/// A partition as a step sees it: borrowed from another task's value, or owned (the output of
/// the previous step).
pub(crate) enum Part<'a, T> {
    Borrowed(&'a [T]),
    Owned(Vec<T>),
}

impl<T: Clone> Part<'_, T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Part::Borrowed(s) => s,
            Part::Owned(v) => v,
        }
    }
}

/// A step's input: the partition task's value, or the previous step's output.
pub(crate) enum Stage<'a> {
    Borrowed(&'a Value),
    Owned(Box<dyn Any + Send>),
}

/// One type-erased step of a pipeline.
pub(crate) trait Step: Send + Sync {
    fn name(&self) -> &str;
    fn apply(&self, input: Stage<'_>) -> Result<Box<dyn Any + Send>, TaskError>;
    /// Turns this step's output into a task value.
    fn finish(&self, output: Box<dyn Any + Send>) -> Result<Value, TaskError>;
    /// How another process rebuilds this step (see `crate::portable`); `None` for a closure
    /// that was not given an id.
    fn spec(&self) -> Option<StepSpec> {
        None
    }
}

/// A step known to other processes under `spec` (a registered user function, or a built-in
/// step for a registered element type): same behaviour, plus the spec.
pub(crate) struct SpecStep {
    pub(crate) inner: Arc<dyn Step>,
    pub(crate) spec: StepSpec,
}

impl Step for SpecStep {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn apply(&self, input: Stage<'_>) -> Result<Box<dyn Any + Send>, TaskError> {
        self.inner.apply(input)
    }
    fn finish(&self, output: Box<dyn Any + Send>) -> Result<Value, TaskError> {
        self.inner.finish(output)
    }
    fn spec(&self) -> Option<StepSpec> {
        Some(self.spec.clone())
    }
}

/// `step` with `spec` when there is one.
pub(crate) fn with_spec(step: Arc<dyn Step>, spec: Option<StepSpec>) -> Arc<dyn Step> {
    match spec {
        Some(spec) => Arc::new(SpecStep { inner: step, spec }),
        None => step,
    }
}

/// A step from a function of a partition of `T`s to a `U` (a `Vec` for elementwise steps, a
/// partial result for reductions).
pub(crate) struct FnStep<T, U, F> {
    name: &'static str,
    f: F,
    _t: PhantomData<fn(T) -> U>,
}

pub(crate) fn step<T, U, F>(name: &'static str, f: F) -> Arc<dyn Step>
where
    T: Any + Send + Sync + Clone,
    U: Any + Send + Sync,
    F: Fn(Part<'_, T>) -> Result<U, TaskError> + Send + Sync + 'static,
{
    Arc::new(FnStep { name, f, _t: PhantomData })
}

fn mismatch<T>(found: &'static str) -> TaskError {
    TaskError::TypeMismatch { position: 0, expected: std::any::type_name::<Vec<T>>(), found }
}

impl<T, U, F> Step for FnStep<T, U, F>
where
    T: Any + Send + Sync + Clone,
    U: Any + Send + Sync,
    F: Fn(Part<'_, T>) -> Result<U, TaskError> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        self.name
    }

    fn apply(&self, input: Stage<'_>) -> Result<Box<dyn Any + Send>, TaskError> {
        let part = match input {
            Stage::Borrowed(value) => {
                Part::Borrowed(value.downcast_ref::<Vec<T>>().map_err(|m| mismatch::<T>(m.found))?.as_slice())
            }
            Stage::Owned(boxed) => Part::Owned(*boxed.downcast::<Vec<T>>().map_err(|_| mismatch::<T>("another type"))?),
        };
        Ok(Box::new((self.f)(part)?))
    }

    fn finish(&self, output: Box<dyn Any + Send>) -> Result<Value, TaskError> {
        let out = output.downcast::<U>().map_err(|_| TaskError::TypeMismatch {
            position: 0,
            expected: std::any::type_name::<U>(),
            found: "another type",
        })?;
        Ok(Value::new(*out))
    }
}

/// The pending steps of a bag, newest first: a persistent list, so bags that share a prefix
/// share its steps and appending is O(1).
pub(crate) struct Steps {
    pub(crate) step: Arc<dyn Step>,
    pub(crate) prev: Option<Arc<Steps>>,
    /// Identifies the base partitions and every step so far (names the fused tasks).
    pub(crate) token: String,
}

impl Drop for Steps {
    // A chain of 100,000 steps would overflow the stack if dropped recursively.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(steps) = next {
            next = match Arc::try_unwrap(steps) {
                Ok(mut owned) => owned.prev.take(),
                Err(_) => None,
            };
        }
    }
}

/// Appends `step` (identified by `step_token`) after `prev`, whose base is `base_token`.
pub(crate) fn append(prev: &Option<Arc<Steps>>, base_token: &str, step: Arc<dyn Step>, step_token: &str) -> Arc<Steps> {
    let before = prev.as_ref().map_or(base_token, |p| p.token.as_str());
    let token = Tokenizer::new().add(before).add(step.name()).add(step_token).finish();
    Arc::new(Steps { step, prev: prev.clone(), token })
}

/// Runs a pipeline's steps in order on one partition.
pub(crate) struct PipelineKernel {
    name: String,
    steps: Vec<Arc<dyn Step>>,
}

impl PipelineKernel {
    /// The kernel for every step in `steps`, oldest first (collected iteratively).
    pub(crate) fn new(steps: &Arc<Steps>) -> PipelineKernel {
        let mut all = Vec::new();
        let mut cursor = Some(steps);
        while let Some(s) = cursor {
            all.push(Arc::clone(&s.step));
            cursor = s.prev.as_ref();
        }
        all.reverse();
        PipelineKernel::from_steps(all)
    }

    /// The kernel running `steps` in this order.
    pub(crate) fn from_steps(steps: Vec<Arc<dyn Step>>) -> PipelineKernel {
        // A pipeline that cannot travel is named after its first local step, so the client's
        // refusal names the function to register.
        let local = steps.iter().find(|s| s.spec().is_none());
        let name = match (local, steps.last()) {
            (Some(step), _) => step.name().to_string(),
            (None, Some(last)) => last.name().to_string(),
            (None, None) => "pipeline".to_string(),
        };
        PipelineKernel { name, steps }
    }
}

/// The id of fused bag pipelines on the wire; the parameters are the steps' specs.
pub(crate) const PIPELINE_KERNEL_ID: &str = "kiln.bag.pipeline";

impl Kernel for PipelineKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let [input] = inputs else {
            return Err(TaskError::Arity { expected: 1, found: inputs.len() });
        };
        let (last, rest) = self.steps.split_last().ok_or_else(|| TaskError::msg("a pipeline with no steps"))?;
        let mut stage = Stage::Borrowed(input);
        for step in rest {
            stage = Stage::Owned(step.apply(stage)?);
        }
        last.finish(last.apply(stage)?)
    }

    fn spec(&self) -> Option<KernelSpec> {
        let specs = self.steps.iter().map(|s| s.spec()).collect::<Option<Vec<StepSpec>>>()?;
        postcard::to_allocvec(&specs).ok().map(|params| KernelSpec { id: PIPELINE_KERNEL_ID.to_string(), params })
    }
}
