//! Matrix decompositions of tall-and-skinny arrays: TSQR (a QR per row block, then a QR of the
//! stacked R factors) and the SVD built on it, plus the randomized `svd_compressed` for arrays
//! of any shape. Small dense factorizations run on faer.

use std::sync::Arc;

use faer::Mat;
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::{Arg, GraphError, Kernel, Key, TaskError, TaskId, Tokenizer, Value};
use ndarray::{Array1, Array2, Ix2, s};

use crate::array::{Array, random::RandomState};
use crate::block::Block;
use crate::error::ArrayError;
use crate::node::{BlockFinish, ExprKernel, Finish, Layer, Lowering, Node, Op, TaskInputs};

fn to_mat(a: &Array2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

fn to_nd(m: faer::MatRef<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// (Q, R) of one row block.
pub(crate) struct LocalQr {
    pub(crate) q: Array2<f64>,
    pub(crate) r: Array2<f64>,
}

/// The QR of the stacked R factors, and where each block's rows start in it.
pub(crate) struct StackedQr {
    pub(crate) q2: Array2<f64>,
    pub(crate) r: Array2<f64>,
    pub(crate) offsets: Vec<usize>,
}

/// The SVD of the final R: R = U_R diag(S) Vt.
pub(crate) struct CoreSvd {
    pub(crate) u: Array2<f64>,
    pub(crate) s: Array1<f64>,
    pub(crate) vt: Array2<f64>,
}

/// The shared task structure of one TSQR.
struct Tsqr {
    input: Arc<Node>,
    local: Arc<str>,
    stack: Arc<str>,
    core: Arc<str>,
    q_name: Arc<str>,
    /// Columns of Q (min of rows and columns).
    k: usize,
}

fn as2(block: Block) -> Result<Array2<f64>, TaskError> {
    let Block::F64(a) = block.cast(crate::DType::F64) else { unreachable!("cast to f64") };
    a.into_dimensionality::<Ix2>().map_err(|e| TaskError::msg(format!("qr block: {e}")))
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LocalQrFinish;

impl BlockFinish for LocalQrFinish {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let a = as2(blocks.into_iter().next().ok_or_else(|| TaskError::msg("no block"))?)?;
        if a.iter().any(|v| !v.is_finite()) {
            return Err(TaskError::msg("qr/svd input contains NaN or infinity"));
        }
        let qr = to_mat(&a).qr();
        Ok(Value::new(LocalQr { q: to_nd(qr.compute_thin_Q().as_ref()), r: to_nd(qr.thin_R()) }))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StackKernel;

impl PortableKernel for StackKernel {
    const ID: &'static str = "kiln.array.tsqr-stack";
    fn name(&self) -> &str {
        "tsqr-stack"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let locals: Vec<&LocalQr> = inputs
            .iter()
            .map(|v| v.downcast_ref::<LocalQr>().map_err(|m| TaskError::msg(format!("tsqr stack got {}", m.found))))
            .collect::<Result<_, _>>()?;
        let n = locals.first().map_or(0, |l| l.r.ncols());
        let mut offsets = Vec::with_capacity(locals.len());
        let total: usize = locals.iter().map(|l| l.r.nrows()).sum();
        let mut stacked = Array2::<f64>::zeros((total, n));
        let mut at = 0;
        for l in &locals {
            offsets.push(at);
            stacked.slice_mut(s![at..at + l.r.nrows(), ..]).assign(&l.r);
            at += l.r.nrows();
        }
        let qr = to_mat(&stacked).qr();
        Ok(Value::new(StackedQr { q2: to_nd(qr.compute_thin_Q().as_ref()), r: to_nd(qr.thin_R()), offsets }))
    }
}

/// Q block `i` = Q_i @ Q2[rows of block i] (then @ U_R for the SVD's U).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct QBlock {
    index: usize,
}

impl PortableKernel for QBlock {
    const ID: &'static str = "kiln.array.tsqr-q";
    fn name(&self) -> &str {
        "tsqr-q"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let local = input::<LocalQr>(inputs, 0)?;
        let stacked = input::<StackedQr>(inputs, 1)?;
        // Checked, not indexed: the index may come from another process.
        let off = *stacked.offsets.get(self.index).ok_or_else(|| TaskError::msg("tsqr q: block index out of range"))?;
        if off + local.q.ncols() > stacked.q2.nrows() {
            return Err(TaskError::msg("tsqr q: the stacked factor does not cover the block"));
        }
        let q = local.q.dot(&stacked.q2.slice(s![off..off + local.q.ncols(), ..]));
        let q = match inputs.get(2) {
            Some(core) => {
                let core =
                    core.downcast_ref::<CoreSvd>().map_err(|m| TaskError::msg(format!("svd u got {}", m.found)))?;
                q.dot(&core.u)
            }
            None => q,
        };
        Ok(Value::new(Block::F64(q.into_dyn())))
    }
}

/// One output of the stacked QR or of the core SVD.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) enum Part {
    R,
    S,
    Vt,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PartKernel(Part);

impl PortableKernel for PartKernel {
    const ID: &'static str = "kiln.array.decomp-part";
    fn name(&self) -> &str {
        match self.0 {
            Part::R => "tsqr-r",
            Part::S => "svd-s",
            Part::Vt => "svd-vt",
        }
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let block = match self.0 {
            Part::R => input::<StackedQr>(inputs, 0)?.r.clone().into_dyn(),
            Part::S => input::<CoreSvd>(inputs, 0)?.s.clone().into_dyn(),
            Part::Vt => input::<CoreSvd>(inputs, 0)?.vt.clone().into_dyn(),
        };
        Ok(Value::new(Block::F64(block)))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CoreKernel;

impl PortableKernel for CoreKernel {
    const ID: &'static str = "kiln.array.svd-core";
    fn name(&self) -> &str {
        "svd-core"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let stacked = input::<StackedQr>(inputs, 0)?;
        let svd = to_mat(&stacked.r).thin_svd().map_err(|e| TaskError::msg(format!("svd did not converge: {e:?}")))?;
        let s = Array1::from_iter((0..svd.S().column_vector().nrows()).map(|i| svd.S().column_vector()[i]));
        Ok(Value::new(CoreSvd { u: to_nd(svd.U()), s, vt: to_nd(svd.V()).reversed_axes() }))
    }
}

impl Tsqr {
    fn local_task(&self, i: usize, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::from_shared(&self.local, &[i as u32]);
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, &[i, 0], &mut inputs)?;
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: "tsqr-local".into(),
            exprs: vec![expr],
            finish: Finish::builtin(LocalQrFinish),
        });
        lw.builder.add(key, kernel, inputs.into_args())
    }

    fn stack_task(&self, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::new(self.stack.clone());
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let locals: Vec<TaskId> =
            (0..self.input.chunks[0].len()).map(|i| self.local_task(i, lw)).collect::<Result<_, _>>()?;
        lw.builder.add(key, Arc::new(Portable(StackKernel)), locals.into_iter().map(Arg::Task))
    }

    fn core_task(&self, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::new(self.core.clone());
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let stack = self.stack_task(lw)?;
        lw.builder.add(key, Arc::new(Portable(CoreKernel)), [Arg::Task(stack)])
    }
}

/// Which output of a TSQR-based decomposition a node is.
enum Output {
    Q,
    U,
    Part(Part),
}

struct DecompLayer {
    tsqr: Arc<Tsqr>,
    output: Output,
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
                lw.builder.add(node.key(idx), Arc::new(Portable(QBlock { index: i })), args)
            }
            Output::Part(part) => {
                let source = if matches!(part, Part::R) { t.stack_task(lw)? } else { t.core_task(lw)? };
                lw.builder.add(node.key(idx), Arc::new(Portable(PartKernel(part))), [Arg::Task(source)])
            }
        }
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.tsqr.input.clone()]
    }
}

fn prepare(a: &Array<f64>) -> Result<Arc<Tsqr>, ArrayError> {
    a.check()?;
    if a.ndim() != 2 {
        return Err(ArrayError::Shape(format!("qr/svd need a 2-d array, got {}-d", a.ndim())));
    }
    let (m, n) = (a.shape()[0], a.shape()[1]);
    if m == 0 || n == 0 {
        return Err(ArrayError::Shape(format!("qr/svd of an empty ({m}, {n}) array")));
    }
    // TSQR works on row blocks holding whole rows.
    let a = if a.chunks()[1].len() > 1 {
        a.rechunk(crate::ChunkSpec::Explicit(vec![a.chunks()[0].clone(), vec![n]]))
    } else {
        a.clone()
    };
    let name = Tokenizer::new().add("tsqr").add(a.name()).key("tsqr");
    let base = name.name().to_string();
    Ok(Arc::new(Tsqr {
        input: a.node.clone(),
        local: format!("{base}-local").into(),
        stack: format!("{base}-stack").into(),
        core: format!("{base}-core").into(),
        q_name: format!("{base}-q").into(),
        k: m.min(n),
    }))
}

fn output(t: &Arc<Tsqr>, name: &str, shape: Vec<usize>, chunks: Vec<Vec<usize>>, out: Output) -> Array<f64> {
    Array::from_node(Arc::new(Node {
        name: format!("{}-{name}", t.q_name).into(),
        shape,
        chunks,
        dtype: crate::DType::F64,
        op: Op::Materialized(Arc::new(DecompLayer { tsqr: t.clone(), output: out })),
    }))
}

/// QR decomposition of a tall-and-skinny array by TSQR: `a = q.dot(r)` with `q` (m x k)
/// orthonormal and chunked like `a`'s rows, `r` (k x n) upper triangular, `k = min(m, n)`.
/// `a` should be tall (each row block at least as tall as the array is wide is most efficient).
pub fn qr(a: &Array<f64>) -> (Array<f64>, Array<f64>) {
    match prepare(a) {
        Ok(t) => {
            let (m, n) = (a.shape()[0], a.shape()[1]);
            let q = output(&t, "q", vec![m, t.k], vec![a.chunks()[0].clone(), vec![t.k]], Output::Q);
            let r = output(&t, "r", vec![t.k, n], vec![vec![t.k], vec![n]], Output::Part(Part::R));
            (q, r)
        }
        Err(e) => (Array::invalid(e.clone()), Array::invalid(e)),
    }
}

/// Thin SVD of a tall-and-skinny array: `a = u.dot(diag(s)).dot(vt)`, singular values in
/// decreasing order (Dask's `da.linalg.svd`). For wide arrays it works on the transpose.
pub fn svd(a: &Array<f64>) -> (Array<f64>, Array<f64>, Array<f64>) {
    if a.ndim() == 2 && a.shape()[1] > a.shape()[0] && a.error().is_none() {
        let (u, s, vt) = svd(&a.t());
        return (vt.t(), s, u.t());
    }
    match prepare(a) {
        Ok(t) => {
            let (m, n) = (a.shape()[0], a.shape()[1]);
            let k = t.k;
            let u = output(&t, "u", vec![m, k], vec![a.chunks()[0].clone(), vec![k]], Output::U);
            let s = output(&t, "s", vec![k], vec![vec![k]], Output::Part(Part::S));
            let vt = output(&t, "vt", vec![k, n], vec![vec![k], vec![n]], Output::Part(Part::Vt));
            (u, s, vt)
        }
        Err(e) => (Array::invalid(e.clone()), Array::invalid(e.clone()), Array::invalid(e)),
    }
}

/// Randomized truncated SVD with `k` components (Dask's `svd_compressed`): project onto a
/// random subspace of `k + oversample` columns, refine with `power_iters` power iterations,
/// orthonormalize by TSQR, and take the exact SVD of the small projected matrix.
pub fn svd_compressed(
    a: &Array<f64>,
    k: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
) -> (Array<f64>, Array<f64>, Array<f64>) {
    if let Err(e) = a.check() {
        return (Array::invalid(e.clone()), Array::invalid(e.clone()), Array::invalid(e.clone()));
    }
    if a.ndim() != 2 || k == 0 || k > a.shape()[0].min(a.shape()[1]) {
        let e = ArrayError::Invalid(format!(
            "svd_compressed needs a 2-d array and 0 < k <= min(shape), got k={k} for {:?}",
            a.shape()
        ));
        return (Array::invalid(e.clone()), Array::invalid(e.clone()), Array::invalid(e));
    }
    let n = a.shape()[1];
    let width = (k + oversample).min(a.shape()[0].min(n));
    let omega =
        RandomState::new(seed).normal(0.0, 1.0, &[n, width], [a.chunks()[1].iter().copied().max().unwrap_or(n), width]);
    let mut y = a.dot(&omega);
    for _ in 0..power_iters {
        let (q, _) = qr(&y);
        y = a.dot(&a.t().dot(&q));
    }
    let (q, _) = qr(&y);
    // B = Q^T A is small (width x n); its SVD gives A's through U = Q U_B.
    let b = q.t().dot(a);
    let (ub, s, vt) = svd(&b.rechunk(crate::ChunkSpec::Uniform(usize::MAX)));
    let u = q.dot(&ub);
    let kk = k as isize;
    (
        u.slice(&[crate::Idx::full(), crate::Idx::Slice { start: None, stop: Some(kk), step: 1 }]),
        s.slice(&[crate::Idx::Slice { start: None, stop: Some(kk), step: 1 }]),
        vt.slice(&[crate::Idx::Slice { start: None, stop: Some(kk), step: 1 }]),
    )
}

/// Blocked Cholesky factorization of a symmetric positive definite array: the lower-triangular
/// `l` with `a = l.dot(l.T)` (Dask's `da.linalg.cholesky(a, lower=True)`). Block `(i, k)`
/// depends on the blocks to its left in rows `i` and `k`: the diagonal blocks are factored with
/// faer's LLT, the blocks below them solved against the diagonal factor. Chunks are made square
/// (both axes cut like the first).
pub fn cholesky(a: &Array<f64>) -> Array<f64> {
    if let Err(e) = a.check() {
        return Array::invalid(e);
    }
    if a.ndim() != 2 || a.shape()[0] != a.shape()[1] {
        return Array::invalid(ArrayError::Shape(format!(
            "cholesky needs a square 2-d array, got shape {:?}",
            a.shape()
        )));
    }
    let cut = a.chunks()[0].clone();
    let a = if a.chunks()[1] != cut {
        a.rechunk(crate::ChunkSpec::Explicit(vec![cut.clone(), cut.clone()]))
    } else {
        a.clone()
    };
    let name = Tokenizer::new().add("cholesky").add(a.name()).key("cholesky");
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape: a.shape().to_vec(),
        chunks: vec![cut.clone(), cut],
        dtype: crate::DType::F64,
        op: Op::Materialized(Arc::new(CholeskyLayer { input: a.node.clone() })),
    }))
}

struct CholeskyLayer {
    input: Arc<Node>,
}

impl CholeskyLayer {
    fn block(&self, node: &Node, i: usize, k: usize, lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = node.key(&[i, k]);
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let shape = node.block_shape(&[i, k]);
        if k > i {
            let zeros = crate::expr::Expr::Gen {
                source: crate::source::Source::Full(crate::Scalar::F64(0.0)),
                dtype: crate::DType::F64,
                shape: shape.clone(),
                offset: vec![0, 0],
                array_shape: shape,
            };
            let kernel: Arc<dyn Kernel> =
                Arc::new(ExprKernel { name: "zeros".into(), exprs: vec![zeros], finish: Finish::none() });
            return lw.builder.add(key, kernel, []);
        }
        let mut exprs = vec![lw.expr(&self.input, &[i, k], &mut inputs)?];
        for j in 0..k {
            let (lij, lkj) = (self.block(node, i, j, lw)?, self.block(node, k, j, lw)?);
            exprs.push(crate::expr::Expr::Input(inputs.task(lij)));
            exprs.push(crate::expr::Expr::Input(inputs.task(lkj)));
        }
        if i > k {
            let lkk = self.block(node, k, k, lw)?;
            exprs.push(crate::expr::Expr::Input(inputs.task(lkk)));
        }
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: if i == k { "cholesky-diagonal".into() } else { "cholesky-solve".into() },
            exprs,
            finish: Finish::builtin(CholeskyBlock { diagonal: i == k, previous: k }),
        });
        lw.builder.add(key, kernel, inputs.into_args())
    }
}

impl Layer for CholeskyLayer {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        self.block(node, idx[0], idx[1], lw)
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone()]
    }
}

/// `S = A[i,k] - sum_j L[i,j] L[k,j]^T`, then `L[k,k] = chol(S)` on the diagonal or
/// `L[i,k] = S L[k,k]^-T` below it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CholeskyBlock {
    diagonal: bool,
    previous: usize,
}

impl BlockFinish for CholeskyBlock {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let mut blocks = blocks.into_iter().map(as2);
        let mut s = blocks.next().ok_or_else(|| TaskError::msg("no block"))??;
        for _ in 0..self.previous {
            let (lij, lkj) = (
                blocks.next().ok_or_else(|| TaskError::msg("missing block"))??,
                blocks.next().ok_or_else(|| TaskError::msg("missing block"))??,
            );
            s -= &lij.dot(&lkj.t());
        }
        let out = if self.diagonal {
            let llt = to_mat(&s)
                .llt(faer::Side::Lower)
                .map_err(|_| TaskError::msg("cholesky: the matrix is not positive definite"))?;
            to_nd(llt.L())
        } else {
            let lkk = to_mat(&blocks.next().ok_or_else(|| TaskError::msg("missing diagonal block"))??);
            // X L^T = S  <=>  L X^T = S^T
            let mut rhs = to_mat(&s.t().to_owned());
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(lkk.as_ref(), rhs.as_mut(), faer::Par::Seq);
            to_nd(rhs.as_ref()).reversed_axes()
        };
        Ok(Value::new(Block::F64(out.as_standard_layout().into_owned().into_dyn())))
    }
}
