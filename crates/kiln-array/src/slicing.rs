//! Basic indexing with NumPy semantics: slices with steps (negative steps walk backwards,
//! negative bounds count from the end) and integers (which drop the axis).
//!
//! Slicing is lazy and block-local: each output block is a slice of one input block, so the
//! output keeps the input's block boundaries (as Dask does) and fuses into its consumers.

use std::ops::{Range, RangeFrom, RangeFull, RangeTo};
use std::sync::Arc;

use kiln_graph::Tokenizer;

use crate::chunk::expr::AxisSlice;
use crate::chunks::offsets;
use crate::error::ArrayError;
use crate::lower::node::{AxisPlan, Node, Op, SlicePlan};

/// One axis of an index expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idx {
    /// `start:stop:step`, NumPy semantics; `None` bounds are open.
    Slice {
        /// First index (negative: from the end).
        start: Option<isize>,
        /// Stop before this index (negative: from the end).
        stop: Option<isize>,
        /// Step (non-zero; negative walks backwards).
        step: isize,
    },
    /// A single index (negative: from the end); drops the axis.
    Index(isize),
}

impl Idx {
    /// The whole axis (`:`).
    pub fn full() -> Idx {
        Idx::Slice { start: None, stop: None, step: 1 }
    }

    /// The same slice with another step (`a:b` → `a:b:step`).
    pub fn step(self, step: isize) -> Idx {
        match self {
            Idx::Slice { start, stop, .. } => Idx::Slice { start, stop, step },
            index => index,
        }
    }
}

impl From<RangeFull> for Idx {
    fn from(_: RangeFull) -> Idx {
        Idx::full()
    }
}
impl From<isize> for Idx {
    fn from(i: isize) -> Idx {
        Idx::Index(i)
    }
}
impl From<i32> for Idx {
    fn from(i: i32) -> Idx {
        Idx::Index(i as isize)
    }
}
impl From<Range<i32>> for Idx {
    fn from(r: Range<i32>) -> Idx {
        Idx::Slice { start: Some(r.start as isize), stop: Some(r.end as isize), step: 1 }
    }
}
impl From<RangeFrom<i32>> for Idx {
    fn from(r: RangeFrom<i32>) -> Idx {
        Idx::Slice { start: Some(r.start as isize), stop: None, step: 1 }
    }
}
impl From<RangeTo<i32>> for Idx {
    fn from(r: RangeTo<i32>) -> Idx {
        Idx::Slice { start: None, stop: Some(r.end as isize), step: 1 }
    }
}
impl From<Range<isize>> for Idx {
    fn from(r: Range<isize>) -> Idx {
        Idx::Slice { start: Some(r.start), stop: Some(r.end), step: 1 }
    }
}

/// Builds an index list with NumPy-like syntax: `idx![..;4, 2, 1..-1]` is `[::4, 2, 1:-1]`.
#[macro_export]
macro_rules! idx {
    (@one $r:expr ; $step:expr) => { $crate::Idx::from($r).step($step) };
    (@one $r:expr) => { $crate::Idx::from($r) };
    ($($r:expr $(; $step:expr)?),* $(,)?) => { [$( $crate::idx!(@one $r $(; $step)?) ),*] };
}

/// Resolves a slice on an axis of length `n` to (first index, count, step), as NumPy does.
pub fn resolve(
    start: Option<isize>,
    stop: Option<isize>,
    step: isize,
    n: usize,
) -> Result<(usize, usize, isize), ArrayError> {
    if step == 0 {
        return Err(ArrayError::Invalid("slice step cannot be zero".into()));
    }
    let n = n as isize;
    let norm = |v: isize| if v < 0 { v + n } else { v };
    let (start, stop) = if step > 0 {
        (start.map_or(0, |s| norm(s).clamp(0, n)), stop.map_or(n, |s| norm(s).clamp(0, n)))
    } else {
        (start.map_or(n - 1, |s| norm(s).clamp(-1, n - 1)), stop.map_or(-1, |s| norm(s).clamp(-1, n - 1)))
    };
    // Ceiling divisions written so that no step, up to isize::MAX or isize::MIN, overflows.
    let len = if step > 0 {
        if stop > start { (stop - start - 1) as usize / step as usize + 1 } else { 0 }
    } else if start > stop {
        (start - stop - 1) as usize / step.unsigned_abs() + 1
    } else {
        0
    };
    Ok((start.max(0) as usize, len, step))
}

/// Plans a slice of `node` and returns the sliced node.
pub(crate) fn slice(node: &Arc<Node>, index: &[Idx]) -> Result<Arc<Node>, ArrayError> {
    let ndim = node.shape.len();
    if index.len() > ndim {
        return Err(ArrayError::Invalid(format!(
            "too many indices: array is {ndim}-dimensional, but {} were indexed",
            index.len()
        )));
    }
    let mut axes = Vec::with_capacity(ndim);
    let mut shape = Vec::new();
    let mut chunks = Vec::new();
    for axis in 0..ndim {
        let n = node.shape[axis];
        let offs = offsets(&node.chunks[axis]);
        match index.get(axis).copied().unwrap_or(Idx::full()) {
            Idx::Index(i) => {
                let resolved = if i < 0 { i + n as isize } else { i };
                if resolved < 0 || resolved >= n as isize {
                    return Err(ArrayError::Index { index: i, axis, size: n });
                }
                let r = resolved as usize;
                let b = offs.partition_point(|&o| o <= r) - 1;
                axes.push(AxisPlan::Integer(b, r - offs[b]));
            }
            Idx::Slice { start, stop, step } => {
                let (first, len, step) = resolve(start, stop, step, n)?;
                let blocks = plan_axis(&offs, first, len, step);
                shape.push(len);
                chunks.push(if blocks.is_empty() { vec![0] } else { blocks.iter().map(|(_, s)| s.len).collect() });
                axes.push(AxisPlan::Kept(if blocks.is_empty() {
                    vec![(0, AxisSlice { start: 0, len: 0, step: 1 })]
                } else {
                    blocks
                }));
            }
        }
    }
    let name = Tokenizer::new().add("getitem").add(&*node.name).add(format!("{index:?}").as_str()).key("getitem");
    Ok(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype: node.dtype,
        op: Op::Slice(node.clone(), Arc::new(SlicePlan { axes })),
    }))
}

/// The (input block, slice within it) pieces that positions `first + k * step`, `k < len`,
/// fall into, in output order.
fn plan_axis(offs: &[usize], first: usize, len: usize, step: isize) -> Vec<(usize, AxisSlice)> {
    if len == 0 {
        return Vec::new();
    }
    let nblocks = offs.len() - 1;
    let pos = |k: usize| (first as isize + k as isize * step) as usize;
    let mut out = Vec::new();
    let mut k = 0usize;
    while k < len {
        let p = pos(k);
        let b = offs.partition_point(|&o| o <= p) - 1;
        let b = b.min(nblocks - 1);
        let (lo, hi) = (offs[b], offs[b + 1]);
        // How many of the remaining positions stay inside [lo, hi).
        let count = if step > 0 {
            ((hi - 1 - p) / step as usize + 1).min(len - k)
        } else {
            ((p - lo) / step.unsigned_abs() + 1).min(len - k)
        };
        out.push((b, AxisSlice { start: p - lo, len: count, step }));
        k += count;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_slice_resolution() {
        assert_eq!(resolve(None, None, 1, 10).unwrap(), (0, 10, 1));
        assert_eq!(resolve(None, None, 4, 10).unwrap(), (0, 3, 4));
        assert_eq!(resolve(Some(2), None, 4, 10).unwrap(), (2, 2, 4));
        assert_eq!(resolve(None, None, -1, 10).unwrap(), (9, 10, -1));
        assert_eq!(resolve(Some(5), Some(1), -1, 10).unwrap(), (5, 4, -1));
        assert_eq!(resolve(Some(-3), None, 1, 10).unwrap(), (7, 3, 1));
        assert_eq!(resolve(Some(1), Some(-1), 1, 10).unwrap(), (1, 8, 1));
        assert_eq!(resolve(Some(8), Some(2), 1, 10).unwrap(), (8, 0, 1));
        assert_eq!(resolve(Some(100), None, -2, 10).unwrap(), (9, 5, -2));
        assert!(resolve(None, None, 0, 10).is_err());
    }

    #[test]
    fn pieces_follow_blocks() {
        let offs = offsets(&[5, 5, 5]);
        let p = plan_axis(&offs, 0, 4, 4);
        assert_eq!(p.iter().map(|(b, s)| (*b, s.start, s.len)).collect::<Vec<_>>(), [(0, 0, 2), (1, 3, 1), (2, 2, 1)]);
        let p = plan_axis(&offs, 14, 15, -1);
        assert_eq!(p.iter().map(|(b, s)| (*b, s.start, s.len)).collect::<Vec<_>>(), [(2, 4, 5), (1, 4, 5), (0, 4, 5)]);
    }
}
