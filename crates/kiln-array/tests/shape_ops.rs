//! concatenate, stack, map_blocks, cumsum/cumprod, expand_dims/squeeze against ndarray.

use kiln_array::{ArrayError, concatenate, from_array, ones, stack};
use kiln_graph::{Collection, ComputeError};
use kiln_local::{LocalScheduler, Progress};
use ndarray::{ArrayD, Axis, Dimension, IxDyn, concatenate as nd_concatenate, stack as nd_stack};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn grid(shape: &[usize], k: f64) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        i.slice().iter().enumerate().map(|(d, &x)| (x as f64 + k) * (d + 1) as f64).sum()
    })
}

#[test]
fn concatenate_and_stack_match_ndarray() {
    let (a, b) = (grid(&[4, 5], 0.0), grid(&[3, 5], 10.0));
    let (x, y) = (from_array(a.clone(), [3, 2]), from_array(b.clone(), [2, 5]));
    let want = nd_concatenate(Axis(0), &[a.view(), b.view()]).unwrap();
    assert_eq!(concatenate(&[x.clone(), y.clone()], 0).compute_on(&sched()).unwrap(), want);
    let c = grid(&[4, 2], 3.0);
    let z = from_array(c.clone(), 1);
    let want = nd_concatenate(Axis(1), &[a.view(), c.view()]).unwrap();
    assert_eq!(concatenate(&[x.clone(), z], -1).compute_on(&sched()).unwrap(), want);
    let s = stack(&[x.clone(), x.clone()], 1).compute_on(&sched()).unwrap();
    assert_eq!(s, nd_stack(Axis(1), &[a.view(), a.view()]).unwrap());
    let err = concatenate(&[x, y], 1).check().unwrap_err();
    assert!(matches!(err, ArrayError::Shape(_)), "{err}");
}

#[test]
fn cumulative_sums_and_products() {
    let a = grid(&[7, 5], 1.0);
    let x = from_array(a.clone(), [3, 2]);
    let mut want = a.clone();
    want.accumulate_axis_inplace(Axis(0), |&p, c| *c += p);
    assert_eq!(x.cumsum(0).compute_on(&sched()).unwrap(), want);
    let mut want = a.clone();
    want.accumulate_axis_inplace(Axis(1), |&p, c| *c += p);
    assert_eq!(x.cumsum(-1).compute_on(&sched()).unwrap(), want);
    let small = from_array(ArrayD::from_shape_vec(IxDyn(&[6]), vec![1.0, 2.0, 3.0, 0.5, 2.0, 1.0]).unwrap(), 2);
    assert_eq!(
        small.cumprod(0).compute_on(&sched()).unwrap().into_raw_vec_and_offset().0,
        vec![1.0, 2.0, 6.0, 3.0, 6.0, 6.0]
    );
    // int32 and bool accumulate as int64, as in NumPy.
    let flags = ones::<f64>(&[5], 2).gt(0.0);
    assert_eq!(flags.cumsum(0).compute_on(&sched()).unwrap().into_raw_vec_and_offset().0, vec![1i64, 2, 3, 4, 5]);
}

#[test]
fn map_blocks_applies_per_block_and_checks_shapes() {
    let a = grid(&[6, 4], 0.0);
    let x = from_array(a.clone(), [4, 3]);
    let doubled = x.map_blocks("double", |b: &ArrayD<f64>| b * 2.0);
    assert_eq!(doubled.compute_on(&sched()).unwrap(), &a * 2.0);
    let wrong = x.map_blocks("shrink", |b: &ArrayD<f64>| b.sum_axis(Axis(0)).into_dyn());
    let err = wrong.compute_on(&sched()).unwrap_err().to_string();
    assert!(err.contains("map_blocks function returned a block of shape"), "{err}");
}

#[test]
fn expand_dims_and_squeeze() {
    let a = grid(&[3, 4], 0.0);
    let x = from_array(a.clone(), 2);
    let e = x.expand_dims(1);
    assert_eq!(e.shape(), &[3, 1, 4]);
    assert_eq!(e.compute_on(&sched()).unwrap(), a.clone().insert_axis(Axis(1)));
    assert_eq!(e.squeeze(&[]).compute_on(&sched()).unwrap(), a);
    let err = x.squeeze(&[0]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("axis 0 has 3")), "{err}");
}

#[test]
fn take_gathers_across_blocks_like_numpy() {
    let a = grid(&[9, 4], 0.0);
    let x = from_array(a.clone(), [4, 3]);
    let idx = [8isize, 0, 1, 5, -1, 3, 3];
    let resolved: Vec<usize> = idx.iter().map(|&i| if i < 0 { (i + 9) as usize } else { i as usize }).collect();
    assert_eq!(x.take(&idx, 0).compute_on(&sched()).unwrap(), a.select(Axis(0), &resolved));
    assert_eq!(x.take(&[3, 0], -1).compute_on(&sched()).unwrap(), a.select(Axis(1), &[3, 0]));
    assert_eq!(x.take(&[], 0).shape(), &[0, 4]);
    assert!(matches!(x.take(&[9], 0).check().unwrap_err(), ArrayError::Index { index: 9, axis: 0, size: 9 }));
}

/// A 5-point Laplacian over the interior of an extended block.
fn laplacian(b: &ArrayD<f64>) -> ArrayD<f64> {
    let mut out = b.clone();
    let (r, c) = (b.shape()[0], b.shape()[1]);
    for i in 1..r.saturating_sub(1) {
        for j in 1..c.saturating_sub(1) {
            out[[i, j]] = b[[i - 1, j]] + b[[i + 1, j]] + b[[i, j - 1]] + b[[i, j + 1]] - 4.0 * b[[i, j]];
        }
    }
    out
}

#[test]
fn map_overlap_equals_the_whole_array_stencil_under_any_chunking() {
    use kiln_array::overlap::Boundary;
    let a = grid(&[9, 7], 0.5).mapv(|v| (v * 1.7).sin());
    // Whole-array reference with periodic wrap: pad by hand, apply, trim.
    let (r, c) = (9usize, 7usize);
    let padded = ArrayD::from_shape_fn(IxDyn(&[r + 2, c + 2]), |i| a[[(i[0] + r - 1) % r, (i[1] + c - 1) % c]]);
    let want = laplacian(&padded).slice(ndarray::s![1..r + 1, 1..c + 1]).to_owned().into_dyn();
    let constant = ArrayD::from_shape_fn(IxDyn(&[r + 2, c + 2]), |i| {
        if i[0] == 0 || i[1] == 0 || i[0] == r + 1 || i[1] == c + 1 { 2.0 } else { a[[i[0] - 1, i[1] - 1]] }
    });
    let want_constant = laplacian(&constant).slice(ndarray::s![1..r + 1, 1..c + 1]).to_owned().into_dyn();
    for chunks in [[9, 7], [3, 2], [4, 5], [2, 3]] {
        let x = from_array(a.clone(), chunks);
        let got = x.map_overlap(&[1, 1], Boundary::Periodic, "laplacian", laplacian).compute_on(&sched()).unwrap();
        assert!(got.iter().zip(want.iter()).all(|(g, w)| (g - w).abs() < 1e-12), "periodic, chunks {chunks:?}");
        let got = x.map_overlap(&[1, 1], Boundary::Constant(2.0), "laplacian", laplacian).compute_on(&sched()).unwrap();
        assert!(
            got.iter().zip(want_constant.iter()).all(|(g, w)| (g - w).abs() < 1e-12),
            "constant, chunks {chunks:?}"
        );
    }
    let x = from_array(a, [2, 2]);
    let err = x.map_overlap(&[3, 1], Boundary::Reflect, "deep", laplacian).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("depth 3 along axis 0 exceeds")), "{err}");
    let err = x.map_overlap(&[1], Boundary::Reflect, "rank", laplacian).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("depth [1] has 1 entries for a 2-d array")), "{err}");
}

#[test]
fn reshape_follows_c_order_under_any_chunking() {
    let a = grid(&[6, 10], 0.0);
    let flat: Vec<f64> = a.iter().copied().collect();
    for chunks in [[6, 10], [4, 3], [1, 7], [5, 5]] {
        let x = from_array(a.clone(), chunks);
        for (target, want_shape) in [
            (vec![60isize], vec![60usize]),
            (vec![10, 6], vec![10, 6]),
            (vec![3, -1, 4], vec![3, 5, 4]),
            (vec![2, 3, 10], vec![2, 3, 10]),
            (vec![1, 6, 1, 10], vec![1, 6, 1, 10]),
            (vec![4, 15], vec![4, 15]),
        ] {
            let got = x.reshape(&target).compute_on(&sched()).unwrap();
            assert_eq!(got.shape(), want_shape.as_slice(), "{target:?} from chunks {chunks:?}");
            assert_eq!(got.iter().copied().collect::<Vec<_>>(), flat, "{target:?} from chunks {chunks:?}");
        }
    }
    let x = from_array(a, 3);
    let err = x.reshape(&[7, 9]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Shape(m) if m.contains("size 60 into shape [7, 9]")), "{err}");
    // NumPy says "can only specify one unknown dimension"; kiln names the shape instead.
    let err = x.reshape(&[-1, -1]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Shape(m) if m.contains("[-1, -1]")), "{err}");
    // And back: the round trip is the identity.
    assert_eq!(x.reshape(&[60]).reshape(&[6, 10]).compute_on(&sched()).unwrap(), x.compute_on(&sched()).unwrap());
}

#[test]
fn boolean_masks_select_in_c_order() {
    let a = grid(&[7, 6], 0.0).mapv(|v| (v * 2.3).sin());
    let want: Vec<f64> = a.iter().copied().filter(|&v| v > 0.2).collect();
    for chunks in [[7, 6], [3, 4], [2, 5]] {
        let x = from_array(a.clone(), chunks);
        let picked = x.select_where(&x.gt(0.2), &sched()).unwrap();
        assert_eq!(picked.shape(), &[want.len()]);
        assert_eq!(picked.compute_on(&sched()).unwrap().iter().copied().collect::<Vec<_>>(), want);
        // The selection is an ordinary array: reductions work on it.
        assert!((picked.sum().scalar().compute_on(&sched()).unwrap() - want.iter().sum::<f64>()).abs() < 1e-12);
    }
    let x = from_array(a, 3);
    assert_eq!(x.select_where(&x.gt(5.0), &sched()).unwrap().shape(), &[0]);
    let err = x.select_where(&ones::<f64>(&[2, 2], 1).gt(0.0), &sched()).unwrap_err();
    assert!(matches!(&err, ComputeError::InvalidCollection { collection: "array", .. }), "{err}");
    assert!(err.to_string().contains("boolean index of shape [2, 2] does not match the array's shape [7, 6]"), "{err}");
}

#[test]
fn blockwise_and_store_into() {
    let a = grid(&[5, 6], 0.0);
    let b = grid(&[5, 6], 1.0);
    let (x, y) = (from_array(a.clone(), [2, 3]), from_array(b.clone(), [3, 2]));
    let z = kiln_array::blockwise(&x, &y, "hypot", |p: &ArrayD<f64>, q: &ArrayD<f64>| {
        ndarray::Zip::from(p).and(q).map_collect(|u, v| u.hypot(*v))
    });
    let want = ndarray::Zip::from(&a).and(&b).map_collect(|u, v| u.hypot(*v));
    let mut target = ArrayD::<f64>::zeros(IxDyn(&[5, 6]));
    z.store_into(&mut target, &sched()).unwrap();
    assert_eq!(target, want);
    let mut wrong = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
    let err = z.store_into(&mut wrong, &sched()).unwrap_err();
    assert!(matches!(&err, ComputeError::InvalidCollection { collection: "array", .. }), "{err}");
    assert!(err.to_string().contains("target has shape [2, 2], the array has [5, 6]"), "{err}");
}
