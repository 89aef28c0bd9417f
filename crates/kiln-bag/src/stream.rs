//! Partitions read in chunks: when a file partition (`read_text`, `read_json_lines`) is followed
//! by steps that can run on part of a partition (`map`, `filter`, `pluck`, ...) and perhaps a
//! reduction's partial (`count`, `frequencies`, `foldby`, ...), one task reads the file a chunk
//! of lines at a time, runs the steps on each chunk and folds it into the partial result (or
//! appends it to the output), so neither the file's lines nor its records are ever held whole.
//! The graph keeps its shape: one task per file or block, then the reduction's tree.

use std::any::Any;
use std::sync::Arc;

use kiln_graph::{Kernel, KernelSpec, Key, TaskError, Value};

use crate::node::{Node, NodeArg};
use crate::pipeline::{PipelineKernel, Stage, Step, Streaming};
use crate::portable::StepSpec;

/// How many elements a fused file task reads at a time unless the bag says otherwise
/// ([`crate::Bag::chunk_size`]): enough to amortise the per-chunk work, small enough that a
/// chunk of parsed records stays in the caches and the allocator reuses its memory.
pub const DEFAULT_CHUNK_SIZE: usize = 256;

/// Where chunks go: each is a boxed `Vec` of the source's element type.
pub(crate) type Emit<'a> = dyn FnMut(Box<dyn Any + Send>) -> Result<(), TaskError> + 'a;

/// A partition that can be read in chunks of elements, in order.
pub(crate) trait ChunkSource: Send + Sync {
    /// Reads the partition in chunks of at most `chunk` elements, each a boxed `Vec`, calling
    /// `emit` at least once (an empty partition is one empty chunk).
    fn read(&self, chunk: usize, emit: &mut Emit<'_>) -> Result<(), TaskError>;
    /// How another process rebuilds this source (the same id and parameters as the kernel
    /// reading it whole); `None` when it cannot travel.
    fn spec(&self) -> Option<StepSpec>;
}

/// How many leading `steps` run chunk by chunk: the elementwise ones, and a reduction's
/// partial right after them.
fn streamed_steps(steps: &[Arc<dyn Step>]) -> usize {
    let mut n = 0;
    for step in steps {
        match step.streaming() {
            Streaming::Elementwise => n += 1,
            Streaming::Fold => return n + 1,
            Streaming::Whole => return n,
        }
    }
    n
}

/// The tasks running `steps` on each of `partitions`, named `name` and the partition's
/// position (see [`pipeline_node`]).
pub(crate) fn pipeline_nodes(
    name: &Arc<str>,
    partitions: &[Arc<Node>],
    steps: Vec<Arc<dyn Step>>,
    chunk: usize,
) -> Vec<Arc<Node>> {
    let whole: Arc<dyn Kernel> = Arc::new(PipelineKernel::from_steps(steps.clone()));
    partitions
        .iter()
        .enumerate()
        .map(|(i, partition)| pipeline_node(Key::from_shared(name, &[i as u32]), partition, &steps, &whole, chunk))
        .collect()
}

/// The task running `steps` on `partition`: a chunked read of the file where the partition is
/// a file and the first steps can run on chunks, else `whole` (the steps' pipeline kernel) over
/// the partition's task.
pub(crate) fn pipeline_node(
    key: Key,
    partition: &Arc<Node>,
    steps: &[Arc<dyn Step>],
    whole: &Arc<dyn Kernel>,
    chunk: usize,
) -> Arc<Node> {
    let streamed = streamed_steps(steps);
    match &partition.source {
        Some(source) if streamed > 0 => {
            let kernel = StreamKernel::new(Arc::clone(source), steps.to_vec(), streamed, chunk);
            Node::new(key, Arc::new(kernel), Vec::new())
        }
        _ => Node::new(key, Arc::clone(whole), vec![NodeArg::Node(Arc::clone(partition))]),
    }
}

/// The id of fused chunked reads on the wire; the parameters are the source's spec, the steps'
/// specs and the chunk size.
pub(crate) const STREAM_KERNEL_ID: &str = "kiln.bag.stream";

/// Reads a source in chunks, runs the first `streamed` steps on each chunk (the last of them
/// folding when it is a reduction's partial), then the other steps on the result.
pub(crate) struct StreamKernel {
    name: String,
    source: Arc<dyn ChunkSource>,
    steps: Vec<Arc<dyn Step>>,
    streamed: usize,
    chunk: usize,
}

impl StreamKernel {
    fn new(source: Arc<dyn ChunkSource>, steps: Vec<Arc<dyn Step>>, streamed: usize, chunk: usize) -> StreamKernel {
        let name = PipelineKernel::name_of(&steps);
        StreamKernel { name, source, steps, streamed, chunk: chunk.max(1) }
    }

    /// The kernel a spec describes, with its source and steps rebuilt by the caller.
    pub(crate) fn rebuilt(
        source: Arc<dyn ChunkSource>,
        steps: Vec<Arc<dyn Step>>,
        chunk: u64,
    ) -> Result<StreamKernel, String> {
        let streamed = streamed_steps(&steps);
        if streamed == 0 {
            return Err("a chunked bag read with no step that runs on chunks".into());
        }
        Ok(StreamKernel::new(source, steps, streamed, usize::try_from(chunk).unwrap_or(usize::MAX)))
    }
}

/// A stream kernel's parameters.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamSpec {
    pub(crate) source: StepSpec,
    pub(crate) steps: Vec<StepSpec>,
    pub(crate) chunk: u64,
}

impl Kernel for StreamKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        if !inputs.is_empty() {
            return Err(TaskError::Arity { expected: 0, found: inputs.len() });
        }
        let (streamed, rest) = self.steps.split_at(self.streamed);
        let (fold, elementwise) = match streamed.split_last() {
            Some((last, before)) if last.streaming() == Streaming::Fold => (Some(last), before),
            _ => (None, streamed),
        };
        let mut so_far: Option<Box<dyn Any + Send>> = None;
        self.source.read(self.chunk, &mut |chunk| {
            let mut stage = chunk;
            for step in elementwise {
                stage = step.apply(Stage::Owned(stage))?;
            }
            so_far = Some(match (so_far.take(), fold) {
                (None, Some(fold)) => fold.apply(Stage::Owned(stage))?,
                (Some(partial), Some(fold)) => fold.absorb(partial, Stage::Owned(stage))?,
                (None, None) => stage,
                (Some(mut output), None) => {
                    let last = elementwise.last().ok_or_else(|| TaskError::msg("a chunked read with no steps"))?;
                    last.extend(&mut output, stage)?;
                    output
                }
            });
            Ok(())
        })?;
        let mut output = so_far.ok_or_else(|| TaskError::msg("a file partition gave no chunk"))?;
        for step in rest {
            output = step.apply(Stage::Owned(output))?;
        }
        let last = self.steps.last().ok_or_else(|| TaskError::msg("a chunked read with no steps"))?;
        last.finish(output)
    }

    fn portable_hint(&self) -> Option<String> {
        if self.source.spec().is_none() {
            return Some(
                "its file source cannot travel: register the element type read with \
                 kiln_bag::portable::register_element::<T>(tag) in the client and every worker program (reads \
                 with OnBadLine::Skip count skipped lines in the client's memory, so they run locally only)"
                    .to_string(),
            );
        }
        crate::pipeline::local_hint(&self.steps)
    }

    fn spec(&self) -> Option<KernelSpec> {
        let source = self.source.spec()?;
        let steps = self.steps.iter().map(|s| s.spec()).collect::<Option<Vec<StepSpec>>>()?;
        let params = StreamSpec { source, steps, chunk: self.chunk as u64 };
        postcard::to_allocvec(&params).ok().map(|params| KernelSpec { id: STREAM_KERNEL_ID.to_string(), params })
    }
}
