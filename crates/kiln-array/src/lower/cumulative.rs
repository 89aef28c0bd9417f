//! Cumulative reductions lowered as a chain along the axis: each block's local scan, the carry
//! of the blocks before it, and the carry applied.

use std::sync::Arc;

use kiln_graph::kernel::Portable;
use kiln_graph::{Arg, GraphError, Kernel, Key, TaskId};

use crate::block::DType;
use crate::lower::kernels::{ApplyCarry, Carry, ExprKernel, Finish, LocalScan};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// `cumsum` as a chain: each block's local cumulative sum, then the running total of the
/// blocks before it (its "carry") added in.
pub(crate) struct Cumulative {
    pub(crate) input: Arc<Node>,
    pub(crate) axis: usize,
    pub(crate) product: bool,
    pub(crate) dtype: DType,
    pub(crate) local: Arc<str>,
    pub(crate) carry: Arc<str>,
}

impl Layer for Cumulative {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let local = self.local_task(idx, lw)?;
        if idx[self.axis] == 0 {
            let id: Arc<dyn Kernel> = Arc::new(kiln_graph::kernel::Identity);
            return lw.add(node.key(idx), id, [Arg::Task(local)]);
        }
        let carry = self.carry_task(idx, lw)?;
        let apply: Arc<dyn Kernel> = Arc::new(Portable(ApplyCarry { axis: self.axis, product: self.product }));
        lw.add(node.key(idx), apply, [Arg::Task(local), Arg::Task(carry)])
    }
}

impl Cumulative {
    fn idx_key(name: &Arc<str>, idx: &[usize]) -> Key {
        Key::from_shared(name, &idx.iter().map(|&i| i as u32).collect::<Vec<_>>())
    }

    fn local_task(&self, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Self::idx_key(&self.local, idx);
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: if self.product { "cumprod-local".into() } else { "cumsum-local".into() },
            exprs: vec![expr],
            finish: Finish::builtin(LocalScan { axis: self.axis, product: self.product, dtype: self.dtype }),
        });
        lw.add(key, kernel, inputs.into_args())
    }

    /// The combined total of all blocks before `idx` along the axis (a slab of length 1).
    /// Built forward from the last carry already added, in a loop: an axis of 100,000 blocks
    /// is no deeper a walk than one of two.
    fn carry_task(&self, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let at = |i: usize| {
            let mut v = idx.to_vec();
            v[self.axis] = i;
            v
        };
        // The first block along the axis whose carry is missing (the carry of block 1 reads
        // only block 0).
        let mut first = idx[self.axis];
        while first > 1 && lw.id_of(&Self::idx_key(&self.carry, &at(first - 1))).is_none() {
            first -= 1;
        }
        let mut carry = None;
        for i in first..=idx[self.axis] {
            let key = Self::idx_key(&self.carry, &at(i));
            if let Some(id) = lw.id_of(&key) {
                carry = Some(id);
                continue;
            }
            let prev_local = self.local_task(&at(i - 1), lw)?;
            let kernel: Arc<dyn Kernel> = Arc::new(Portable(Carry { axis: self.axis, product: self.product }));
            let previous = if i == 1 {
                None
            } else {
                match carry {
                    Some(c) => Some(c),
                    None => Some(lw.id_of(&Self::idx_key(&self.carry, &at(i - 1))).expect("built before")),
                }
            };
            carry = Some(match previous {
                None => lw.add(key, kernel, [Arg::Task(prev_local)])?,
                Some(p) => lw.add(key, kernel, [Arg::Task(prev_local), Arg::Task(p)])?,
            });
        }
        Ok(carry.expect("idx is past the first block"))
    }
}
