//! Decompositions lowered to tasks: TSQR (a QR per row block, one QR of the stacked R factors,
//! then each Q block) with the SVD on top of it, and the blocked Cholesky factorization whose
//! block `(i, k)` depends on the blocks to its left in rows `i` and `k`.

use std::sync::Arc;

use kiln_graph::kernel::Portable;
use kiln_graph::{Arg, GraphError, Kernel, Key, TaskId, Tokenizer};

use crate::chunk::linalg::Part;
use crate::error::ArrayError;
use crate::lower::kernels::{CholeskyBlock, CoreSvdOf, ExprKernel, Finish, LocalQrOf, PartOf, QBlock, StackQr};
use crate::lower::node::{Layer, Lowering, Node, Op, TaskInputs};
use crate::lower::rechunk::rechunk;

/// The shared task structure of one TSQR.
pub(crate) struct Tsqr {
    pub(crate) input: Arc<Node>,
    pub(crate) local: Arc<str>,
    pub(crate) stack: Arc<str>,
    pub(crate) core: Arc<str>,
    pub(crate) q_name: Arc<str>,
    /// Columns of Q (min of rows and columns).
    pub(crate) k: usize,
}

impl Tsqr {
    fn local_task(&self, i: usize, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::from_shared(&self.local, &[i as u32]);
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, &[i, 0], &mut inputs)?;
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "tsqr-local".into(), exprs: vec![expr], finish: Finish::builtin(LocalQrOf) });
        lw.add(key, kernel, inputs.into_args())
    }

    fn stack_task(&self, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::new(self.stack.clone());
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let locals: Vec<TaskId> =
            (0..self.input.chunks[0].len()).map(|i| self.local_task(i, lw)).collect::<Result<_, _>>()?;
        lw.add(key, Arc::new(Portable(StackQr)), locals.into_iter().map(Arg::Task))
    }

    fn core_task(&self, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::new(self.core.clone());
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let stack = self.stack_task(lw)?;
        lw.add(key, Arc::new(Portable(CoreSvdOf)), [Arg::Task(stack)])
    }
}

/// Which output of a TSQR-based decomposition a node is.
pub(crate) enum Output {
    Q,
    U,
    Part(Part),
}

pub(crate) struct DecompLayer {
    pub(crate) tsqr: Arc<Tsqr>,
    pub(crate) output: Output,
}

impl Layer for DecompLayer {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let t = &self.tsqr;
        match self.output {
            Output::Q | Output::U => {
                let i = idx[0];
                let mut args = vec![Arg::Task(t.local_task(i, lw)?), Arg::Task(t.stack_task(lw)?)];
                if matches!(self.output, Output::U) {
                    args.push(Arg::Task(t.core_task(lw)?));
                }
                lw.add(node.key(idx), Arc::new(Portable(QBlock { index: i })), args)
            }
            Output::Part(part) => {
                let source = if matches!(part, Part::R) { t.stack_task(lw)? } else { t.core_task(lw)? };
                lw.add(node.key(idx), Arc::new(Portable(PartOf(part))), [Arg::Task(source)])
            }
        }
    }
}

/// The shared TSQR of a 2-d node (rechunked to row blocks holding whole rows).
///
/// # Errors
/// The node's construction error, or a shape TSQR cannot factor.
pub(crate) fn prepare(a: &Arc<Node>) -> Result<Arc<Tsqr>, ArrayError> {
    if let Some(e) = a.error() {
        return Err(e.clone());
    }
    if a.shape.len() != 2 {
        return Err(ArrayError::Shape(format!("qr/svd need a 2-d array, got {}-d", a.shape.len())));
    }
    let (m, n) = (a.shape[0], a.shape[1]);
    if m == 0 || n == 0 {
        return Err(ArrayError::Shape(format!("qr/svd of an empty ({m}, {n}) array")));
    }
    // TSQR works on row blocks holding whole rows.
    let a = if a.chunks[1].len() > 1 { rechunk(a, vec![a.chunks[0].clone(), vec![n]]) } else { a.clone() };
    let name = Tokenizer::new().add("tsqr").add(&*a.name).key("tsqr");
    let base = name.name().to_string();
    Ok(Arc::new(Tsqr {
        input: a,
        local: format!("{base}-local").into(),
        stack: format!("{base}-stack").into(),
        core: format!("{base}-core").into(),
        q_name: format!("{base}-q").into(),
        k: m.min(n),
    }))
}

/// The node of one output (`name`: "q", "r", "u", ...) of a TSQR-based decomposition.
pub(crate) fn output(t: &Arc<Tsqr>, name: &str, shape: Vec<usize>, chunks: Vec<Vec<usize>>, out: Output) -> Arc<Node> {
    Arc::new(Node {
        name: format!("{}-{name}", t.q_name).into(),
        shape,
        chunks,
        dtype: crate::DType::F64,
        op: Op::Materialized(Arc::new(DecompLayer { tsqr: t.clone(), output: out })),
    })
}

/// The node of the Cholesky factor of a square 2-d array chunked the same way on both axes.
pub(crate) fn cholesky_node(a: &Arc<Node>, cut: Vec<usize>) -> Arc<Node> {
    let name = Tokenizer::new().add("cholesky").add(&*a.name).key("cholesky");
    Arc::new(Node {
        name: name.shared_name().clone(),
        shape: a.shape.clone(),
        chunks: vec![cut.clone(), cut],
        dtype: crate::DType::F64,
        op: Op::Materialized(Arc::new(CholeskyLayer { input: a.clone() })),
    })
}

pub(crate) struct CholeskyLayer {
    pub(crate) input: Arc<Node>,
}

impl CholeskyLayer {
    fn block(&self, node: &Node, i: usize, k: usize, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = node.key(&[i, k]);
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let shape = node.block_shape(&[i, k]);
        if k > i {
            let zeros = crate::chunk::expr::Expr::Gen {
                source: crate::chunk::source::Source::Full(crate::Scalar::F64(0.0)),
                dtype: crate::DType::F64,
                shape: shape.clone(),
                offset: vec![0, 0],
                array_shape: shape,
            };
            let kernel: Arc<dyn Kernel> =
                Arc::new(ExprKernel { name: "zeros".into(), exprs: vec![zeros], finish: Finish::none() });
            return lw.add(key, kernel, []);
        }
        let mut exprs = vec![lw.expr(&self.input, &[i, k], &mut inputs)?];
        for j in 0..k {
            let (lij, lkj) = (self.block(node, i, j, lw)?, self.block(node, k, j, lw)?);
            exprs.push(crate::chunk::expr::Expr::Input(inputs.task(lij)));
            exprs.push(crate::chunk::expr::Expr::Input(inputs.task(lkj)));
        }
        if i > k {
            let lkk = self.block(node, k, k, lw)?;
            exprs.push(crate::chunk::expr::Expr::Input(inputs.task(lkk)));
        }
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: if i == k { "cholesky-diagonal".into() } else { "cholesky-solve".into() },
            exprs,
            finish: Finish::builtin(CholeskyBlock { diagonal: i == k, previous: k }),
        });
        lw.add(key, kernel, inputs.into_args())
    }
}

impl Layer for CholeskyLayer {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        self.block(node, idx[0], idx[1], lw)
    }
}
