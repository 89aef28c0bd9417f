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

/// How a step runs on a partition that arrives in chunks of elements (a file read a few
/// thousand lines at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// It needs the whole partition (`map_partitions`, position-dependent steps).
    Whole,
    /// Its output on a partition is its outputs on the partition's chunks, concatenated.
    Elementwise,
    /// A reduction's partial: it folds chunk after chunk into one result ([`Step::absorb`]).
    Fold,
}

/// One type-erased step of a pipeline.
pub(crate) trait Step: Send + Sync {
    fn name(&self) -> &str;
    fn apply(&self, input: Stage<'_>) -> Result<Box<dyn Any + Send>, TaskError>;
    /// Turns this step's output into a task value.
    fn finish(&self, output: Box<dyn Any + Send>) -> Result<Value, TaskError>;
    /// Whether and how this step can run chunk by chunk.
    fn streaming(&self) -> Streaming {
        Streaming::Whole
    }
    /// Appends the output of this step on one chunk to its outputs on the chunks before
    /// (`Streaming::Elementwise` steps).
    fn extend(&self, _so_far: &mut Box<dyn Any + Send>, _chunk: Box<dyn Any + Send>) -> Result<(), TaskError> {
        Err(TaskError::msg(format!("bag step {} cannot run on chunks", self.name())))
    }
    /// Folds one more chunk into this step's result on the chunks before (`Streaming::Fold`
    /// steps).
    fn absorb(&self, _so_far: Box<dyn Any + Send>, _chunk: Stage<'_>) -> Result<Box<dyn Any + Send>, TaskError> {
        Err(TaskError::msg(format!("bag step {} cannot fold chunks", self.name())))
    }
    /// How another process rebuilds this step (see `crate::portable`); `None` for a closure
    /// that was not given an id.
    fn spec(&self) -> Option<StepSpec> {
        None
    }
    /// What to register so that this step can travel, when it has no spec: a cluster client's
    /// refusal quotes it ([`crate::portable::hint`]).
    fn portable_hint(&self) -> String {
        crate::portable::hint(self.name(), None)
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
    fn streaming(&self) -> Streaming {
        self.inner.streaming()
    }
    fn extend(&self, so_far: &mut Box<dyn Any + Send>, chunk: Box<dyn Any + Send>) -> Result<(), TaskError> {
        self.inner.extend(so_far, chunk)
    }
    fn absorb(&self, so_far: Box<dyn Any + Send>, chunk: Stage<'_>) -> Result<Box<dyn Any + Send>, TaskError> {
        self.inner.absorb(so_far, chunk)
    }
    fn spec(&self) -> Option<StepSpec> {
        Some(self.spec.clone())
    }
    fn portable_hint(&self) -> String {
        self.inner.portable_hint()
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
    /// Set for elementwise steps (whose `U` is a `Vec`): appends one chunk's output to the
    /// outputs before.
    extend: Option<Extend>,
    _t: PhantomData<fn(T) -> U>,
}

type Extend = fn(&mut Box<dyn Any + Send>, Box<dyn Any + Send>) -> Result<(), TaskError>;

/// A step that needs its whole partition.
pub(crate) fn step<T, U, F>(name: &'static str, f: F) -> Arc<dyn Step>
where
    T: Any + Send + Sync + Clone,
    U: Any + Send + Sync,
    F: Fn(Part<'_, T>) -> Result<U, TaskError> + Send + Sync + 'static,
{
    Arc::new(FnStep { name, f, extend: None, _t: PhantomData })
}

/// A step whose output on a partition is its outputs on any split of the partition into
/// chunks, concatenated (`map`, `filter`, ...): it can run on a file as it is read.
pub(crate) fn elementwise<T, U, F>(name: &'static str, f: F) -> Arc<dyn Step>
where
    T: Any + Send + Sync + Clone,
    U: Any + Send + Sync,
    F: Fn(Part<'_, T>) -> Result<Vec<U>, TaskError> + Send + Sync + 'static,
{
    Arc::new(FnStep { name, f, extend: Some(extend_vec::<U>), _t: PhantomData })
}

fn extend_vec<U: Any + Send>(so_far: &mut Box<dyn Any + Send>, chunk: Box<dyn Any + Send>) -> Result<(), TaskError> {
    let lost = || TaskError::msg("a bag chunk of another type");
    let chunk = chunk.downcast::<Vec<U>>().map_err(|_| lost())?;
    let so_far = so_far.downcast_mut::<Vec<U>>().ok_or_else(lost)?;
    if so_far.is_empty() {
        *so_far = *chunk;
    } else {
        so_far.extend(*chunk);
    }
    Ok(())
}

fn mismatch<T>(found: &'static str) -> TaskError {
    TaskError::TypeMismatch { position: 0, expected: std::any::type_name::<Vec<T>>(), found }
}

/// A step's input as a partition of `T`s.
pub(crate) fn part_of<T: Any + Send + Sync + Clone>(input: Stage<'_>) -> Result<Part<'_, T>, TaskError> {
    Ok(match input {
        Stage::Borrowed(value) => {
            Part::Borrowed(value.downcast_ref::<Vec<T>>().map_err(|m| mismatch::<T>(m.found))?.as_slice())
        }
        Stage::Owned(boxed) => Part::Owned(*boxed.downcast::<Vec<T>>().map_err(|_| mismatch::<T>("another type"))?),
    })
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
        Ok(Box::new((self.f)(part_of::<T>(input)?)?))
    }

    fn streaming(&self) -> Streaming {
        if self.extend.is_some() { Streaming::Elementwise } else { Streaming::Whole }
    }

    fn extend(&self, so_far: &mut Box<dyn Any + Send>, chunk: Box<dyn Any + Send>) -> Result<(), TaskError> {
        match self.extend {
            Some(extend) => extend(so_far, chunk),
            None => Err(TaskError::msg(format!("bag step {} cannot run on chunks", self.name))),
        }
    }

    fn portable_hint(&self) -> String {
        crate::portable::hint(self.name, Some(std::any::type_name::<T>()))
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

/// Every step in `steps`, oldest first (collected iteratively).
pub(crate) fn collect(steps: &Arc<Steps>) -> Vec<Arc<dyn Step>> {
    let mut all = Vec::new();
    let mut cursor = Some(steps);
    while let Some(s) = cursor {
        all.push(Arc::clone(&s.step));
        cursor = s.prev.as_ref();
    }
    all.reverse();
    all
}

/// Runs a pipeline's steps in order on one partition.
pub(crate) struct PipelineKernel {
    name: String,
    steps: Vec<Arc<dyn Step>>,
}

impl PipelineKernel {
    /// The kernel running `steps` in this order.
    pub(crate) fn from_steps(steps: Vec<Arc<dyn Step>>) -> PipelineKernel {
        PipelineKernel { name: PipelineKernel::name_of(&steps), steps }
    }

    /// The name of a task running `steps`: a pipeline that cannot travel is named after its
    /// first local step, so the client's refusal names the function to register.
    pub(crate) fn name_of(steps: &[Arc<dyn Step>]) -> String {
        let local = steps.iter().find(|s| s.spec().is_none());
        match (local, steps.last()) {
            (Some(step), _) => step.name().to_string(),
            (None, Some(last)) => last.name().to_string(),
            (None, None) => "pipeline".to_string(),
        }
    }
}

/// The remedy for the first step of `steps` that cannot travel.
pub(crate) fn local_hint(steps: &[Arc<dyn Step>]) -> Option<String> {
    steps.iter().find(|s| s.spec().is_none()).map(|s| s.portable_hint())
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

    fn portable_hint(&self) -> Option<String> {
        local_hint(&self.steps)
    }
}
