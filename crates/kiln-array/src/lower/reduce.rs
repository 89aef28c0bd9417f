//! Reductions lowered to trees: a partial per input block (fused with the block's elementwise
//! work into one task), combined `split_every` at a time, then finalized into the output block.

use std::sync::Arc;

use kiln_graph::kernel::Portable;
use kiln_graph::{GraphError, Kernel, Key, TaskId, Tokenizer};

use crate::chunk::reduce::{ReduceOp, ReduceParams};
use crate::chunks::block_indices;
use crate::error::{ArrayError, normalize_axis};
use crate::lower::kernels::{Combine, ExprKernel, Finish, PartialOf};
use crate::lower::node::{Layer, Lowering, Node, Op, TaskInputs};

/// Default fan-in of reduction trees.
pub const DEFAULT_SPLIT_EVERY: usize = 16;

/// Options of a reduction (Dask's keyword arguments).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reduce {
    /// Axes to reduce; `None` reduces all.
    pub axes: Option<Vec<isize>>,
    /// Keep reduced axes with length 1.
    pub keepdims: bool,
    /// Fan-in of the combining tree.
    pub split_every: usize,
    /// Delta degrees of freedom for `var`/`std`.
    pub ddof: f64,
    /// Skip NaNs (the `nan*` functions).
    pub skipna: bool,
}

impl Default for Reduce {
    fn default() -> Self {
        Reduce { axes: None, keepdims: false, split_every: DEFAULT_SPLIT_EVERY, ddof: 0.0, skipna: false }
    }
}

impl Reduce {
    /// Reduce along these axes.
    pub fn axes(axes: impl IntoIterator<Item = isize>) -> Self {
        Reduce { axes: Some(axes.into_iter().collect()), ..Default::default() }
    }
    /// Reduce along one axis.
    pub fn axis(axis: isize) -> Self {
        Self::axes([axis])
    }
    /// Keep reduced axes as length 1.
    pub fn keepdims(mut self, keep: bool) -> Self {
        self.keepdims = keep;
        self
    }
    /// Sets the tree fan-in (at least 2).
    pub fn split_every(mut self, n: usize) -> Self {
        self.split_every = n.max(2);
        self
    }
    /// Sets `ddof` for `var`/`std`.
    pub fn ddof(mut self, ddof: f64) -> Self {
        self.ddof = ddof;
        self
    }
    /// Skips NaNs.
    pub fn skipna(mut self, skip: bool) -> Self {
        self.skipna = skip;
        self
    }
}

/// Builds the node of a reduction.
pub(crate) fn reduction(input: &Arc<Node>, op: ReduceOp, opts: &Reduce) -> Result<Arc<Node>, ArrayError> {
    if let Some(e) = input.error() {
        return Err(e.clone());
    }
    let ndim = input.shape.len();
    let mut axes: Vec<usize> = match &opts.axes {
        None => (0..ndim).collect(),
        Some(a) => a.iter().map(|&x| normalize_axis(x, ndim)).collect::<Result<_, _>>()?,
    };
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(ArrayError::Invalid(format!("duplicate value in axes {:?}", opts.axes)));
    }
    if matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax) && !(axes.len() == 1 || axes.len() == ndim) {
        return Err(ArrayError::Invalid("argmin/argmax reduce one axis or all of them".into()));
    }
    let reduced_size: usize = axes.iter().map(|&a| input.shape[a]).product();
    if reduced_size == 0 && matches!(op, ReduceOp::Min | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax) {
        return Err(ArrayError::Invalid(format!(
            "zero-size array to reduction operation {op:?}, which has no identity"
        )));
    }
    let dtype = op.out_dtype(input.dtype);
    let (mut shape, mut chunks) = (Vec::new(), Vec::new());
    for a in 0..ndim {
        if axes.contains(&a) {
            if opts.keepdims {
                shape.push(1);
                chunks.push(vec![1]);
            }
        } else {
            shape.push(input.shape[a]);
            chunks.push(input.chunks[a].clone());
        }
    }
    let prefix = format!("{op:?}").to_ascii_lowercase();
    let prefix = if opts.skipna { format!("nan{prefix}") } else { prefix };
    let name = Tokenizer::new()
        .add(prefix.as_str())
        .add(&*input.name)
        .add(&axes)
        .add(&opts.keepdims)
        .add(&opts.split_every)
        .add(&opts.ddof)
        .key(&prefix);
    let base: Arc<str> = name.shared_name().clone();
    let layer = Reduction {
        input: input.clone(),
        op,
        axes,
        keepdims: opts.keepdims,
        split_every: opts.split_every.max(2),
        ddof: opts.ddof,
        skipna: opts.skipna,
        partial_name: format!("{base}-partial").into(),
        combine_name: format!("{base}-combine").into(),
        label: prefix,
    };
    Ok(Arc::new(Node { name: base, shape, chunks, dtype, op: Op::Materialized(Arc::new(layer)) }))
}

pub(crate) struct Reduction {
    pub(crate) input: Arc<Node>,
    pub(crate) op: ReduceOp,
    pub(crate) axes: Vec<usize>,
    pub(crate) keepdims: bool,
    pub(crate) split_every: usize,
    pub(crate) ddof: f64,
    pub(crate) skipna: bool,
    pub(crate) partial_name: Arc<str>,
    pub(crate) combine_name: Arc<str>,
    pub(crate) label: String,
}

impl Layer for Reduction {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ndim = self.input.shape.len();
        // Input block index pattern: kept axes fixed by `idx`, reduced axes enumerated.
        let mut kept_idx = Vec::with_capacity(ndim);
        let mut out_axis = 0;
        for a in 0..ndim {
            if self.axes.contains(&a) {
                if self.keepdims {
                    out_axis += 1;
                }
                kept_idx.push(None);
            } else {
                kept_idx.push(Some(idx[out_axis]));
                out_axis += 1;
            }
        }
        let reduced_blocks: Vec<usize> = self.axes.iter().map(|&a| self.input.chunks[a].len()).collect();
        let mut level: Vec<TaskId> = Vec::new();
        for combo in block_indices(&reduced_blocks) {
            let mut in_idx = Vec::with_capacity(ndim);
            let mut r = combo.iter();
            for k in &kept_idx {
                in_idx.push(match k {
                    Some(i) => *i,
                    None => *r.next().expect("one entry per reduced axis"),
                });
            }
            level.push(self.partial_task(&in_idx, lw)?);
        }
        let idx32: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let mut depth = 0u32;
        while level.len() > self.split_every {
            let combine: Arc<dyn Kernel> = Arc::new(Portable(Combine { reduction: self.params(), finalize: None }));
            level = level
                .chunks(self.split_every)
                .enumerate()
                .map(|(g, group)| {
                    let mut key_idx = idx32.clone();
                    key_idx.extend([depth, g as u32]);
                    let key = Key::from_shared(&self.combine_name, &key_idx);
                    lw.add(key, combine.clone(), group.iter().map(|&t| kiln_graph::Arg::Task(t)))
                })
                .collect::<Result<_, _>>()?;
            depth += 1;
        }
        let finalize: Arc<dyn Kernel> = Arc::new(Portable(Combine {
            reduction: self.params(),
            finalize: Some((node.block_shape(idx), node.dtype)),
        }));
        lw.add(node.key(idx), finalize, level.into_iter().map(kiln_graph::Arg::Task))
    }
}

impl Reduction {
    fn params(&self) -> ReduceParams {
        ReduceParams {
            op: self.op,
            axes: self.axes.clone(),
            ddof: self.ddof,
            skipna: self.skipna,
            reduced_shape: self.axes.iter().map(|&a| self.input.shape[a]).collect(),
        }
    }

    fn partial_task(&self, in_idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::from_shared(&self.partial_name, &in_idx.iter().map(|&i| i as u32).collect::<Vec<_>>());
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, in_idx, &mut inputs)?;
        let offset = self.input.block_offset(in_idx);
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: format!("{}-partial", self.label),
            exprs: vec![expr],
            finish: Finish::builtin(PartialOf {
                params: self.params(),
                reduced_offset: self.axes.iter().map(|&a| offset[a]).collect(),
            }),
        });
        lw.add(key, kernel, inputs.into_args())
    }
}
