//! Laws: any chunking gives the same answer, and the answer is the in-memory one.

use kiln_array::random::RandomState;
use kiln_array::{ArrayError, ChunkSpec, Idx, Reduce, from_array, ones};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::{ArrayD, Axis, IxDyn};
use proptest::prelude::*;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

/// A shape of 1 to 3 axes and two chunkings of it.
fn shape_and_chunks() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..9, 1..4).prop_flat_map(|shape| {
        let a = shape.iter().map(|&d| 1..=d).collect::<Vec<_>>();
        let b = shape.iter().map(|&d| 1..=d).collect::<Vec<_>>();
        (Just(shape), a, b)
    })
}

fn data(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f64 / 100.0 - 10.0
    })
}

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn elementwise_and_reductions_are_chunking_independent((shape, c1, c2) in shape_and_chunks(), seed in any::<u64>(), axis_pick in 0usize..3) {
        let d = data(&shape, seed);
        let axis = (axis_pick % shape.len()) as isize;
        let (x, y) = (from_array(d.clone(), c1), from_array(d.clone(), c2));
        let s = sched();
        let expr = |a: &kiln_array::Array<f64>| (&(a * 2.0) - &a.abs()).exp().sum_with(&Reduce::axis(axis));
        let (r1, r2) = (expr(&x).compute_on(&s).unwrap(), expr(&y).compute_on(&s).unwrap());
        let want = (&d * 2.0 - d.mapv(f64::abs)).mapv(f64::exp).sum_axis(Axis(axis as usize));
        prop_assert!(close(&r1, &want), "{r1} vs {want}");
        prop_assert!(close(&r2, &want));
        let (v1, v2) = (x.std().scalar().compute_on(&s).unwrap(), y.std().scalar().compute_on(&s).unwrap());
        let want_std = d.std(0.0);
        prop_assert!((v1 - want_std).abs() < 1e-9 && (v2 - want_std).abs() < 1e-9, "{v1} {v2} {want_std}");
        let (m1, m2) = (x.max().scalar().compute_on(&s).unwrap(), y.min().scalar().compute_on(&s).unwrap());
        prop_assert_eq!(m1, d.iter().cloned().fold(f64::MIN, f64::max));
        prop_assert_eq!(m2, d.iter().cloned().fold(f64::MAX, f64::min));
    }

    #[test]
    fn slices_transposes_and_rechunks_match_ndarray((shape, c1, c2) in shape_and_chunks(), seed in any::<u64>(), start in -9isize..9, step in prop::sample::select(vec![-3isize, -2, -1, 1, 2, 3])) {
        let d = data(&shape, seed);
        let x = from_array(d.clone(), c1);
        let s = sched();
        let sliced = x.slice(&[Idx::Slice { start: Some(start), stop: None, step }]);
        // The expected result via NumPy's rules applied by hand on the first axis.
        let n = shape[0] as isize;
        let norm = |v: isize| if v < 0 { v + n } else { v };
        let mut want_rows = Vec::new();
        if step > 0 {
            let mut i = norm(start).clamp(0, n);
            while i < n { want_rows.push(i as usize); i += step; }
        } else {
            let mut i = norm(start).clamp(-1, n - 1);
            while i >= 0 { want_rows.push(i as usize); i += step; }
        }
        let want = d.select(Axis(0), &want_rows);
        prop_assert_eq!(sliced.compute_on(&s).unwrap(), want);
        prop_assert_eq!(x.t().compute_on(&s).unwrap(), d.t().to_owned());
        prop_assert_eq!(x.rechunk(c2).compute_on(&s).unwrap(), d.clone());
    }

    #[test]
    fn random_arrays_do_not_depend_on_chunking((shape, c1, c2) in shape_and_chunks(), seed in any::<u64>()) {
        let rs = RandomState::new(seed);
        let s = sched();
        let a = rs.random(&shape, c1.clone()).compute_on(&s).unwrap();
        let b = rs.random(&shape, c2.clone()).compute_on(&s).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert!(a.iter().all(|&v| (0.0..1.0).contains(&v)));
        let n1 = rs.normal(1.0, 2.0, &shape, c1).compute_on(&s).unwrap();
        let n2 = rs.normal(1.0, 2.0, &shape, c2).compute_on(&s).unwrap();
        prop_assert_eq!(n1, n2);
    }
}

#[test]
fn the_seed_examples() {
    let s = sched();
    let x = ones::<f64>(&[15], 5);
    assert_eq!(x.to_string(), "kiln.Array<ones, shape=(15,), dtype=float64, chunksize=(5,)>");
    assert_eq!(x.sum().scalar().compute_on(&s).unwrap(), 15.0);
    let x = ones::<f64>(&[15, 15], [5, 5]);
    assert_eq!(x.sum_axis(0).compute_on(&s).unwrap(), ArrayD::from_elem(IxDyn(&[15]), 15.0));
    assert_eq!((&x + &x.t()).compute_on(&s).unwrap(), ArrayD::from_elem(IxDyn(&[15, 15]), 2.0));
    // Graph sizes the seeds draw: x.sum(axis=0) on 3x3 blocks reads 9 blocks into 3 outputs.
    let (g, outs) = x.sum_axis(0).graph().unwrap();
    assert_eq!(outs.len(), 3);
    assert_eq!(g.len(), 9 + 3, "9 fused partials and 3 aggregates");
    // Drawn as written (as Dask draws it): 9 ones, 9 transposes and 9 additions.
    let mut b = kiln_graph::GraphBuilder::new();
    (&x + &x.t()).add_to_unfused(&mut b).unwrap();
    let drawn = b.build().unwrap();
    assert_eq!(drawn.len(), 27);
    assert_eq!(drawn.ids().filter(|t| drawn.kernel(*t).name() == "ones").count(), 9);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let s = sched();
    let x = ones::<f64>(&[4, 6], 2);
    let y = ones::<f64>(&[5, 6], 2);
    let err = (&x + &y).check().unwrap_err();
    assert!(matches!(err, ArrayError::Shape(_)), "{err}");
    assert!(err.to_string().contains("(4, 6) (5, 6)"), "{err}");
    // The error travels with derived arrays and comes back from compute.
    assert!((&x + &y).sum().compute_on(&s).unwrap_err().to_string().contains("could not be broadcast"));
    assert!(matches!(x.sum_axis(2).check().unwrap_err(), ArrayError::Axis { axis: 2, ndim: 2 }));
    assert!(matches!(x.slice(&[Idx::Index(4)]).check().unwrap_err(), ArrayError::Index { index: 4, axis: 0, size: 4 }));
    let err = x.slice(&[Idx::full(), Idx::full(), Idx::full()]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("2-dimensional, but 3 were indexed")), "{err}");
    let err = x.slice(&[Idx::full().step(0)]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("step cannot be zero")), "{err}");
    let bad_chunks = ones::<f64>(&[10], ChunkSpec::Explicit(vec![vec![3, 3]]));
    assert!(bad_chunks.check().unwrap_err().to_string().contains("add up to 6"));
    let err = x.transpose(&[0, 0]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("[0, 0] are not a permutation")), "{err}");
    let err = RandomState::new(0).uniform(1.0, 0.0, &[3], 1).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("low <= high, got 1, 0")), "{err}");
}

#[test]
fn long_lanes_are_evaluated_in_segments() {
    // Lanes longer than one segment (4096 values) exercise the segment offsets of sources,
    // inputs and leading-axis accumulators.
    let s = sched();
    let x = RandomState::new(5).random(&[3, 9000], [2, 9000]);
    let whole = x.compute_on(&s).unwrap();
    let y = &(&x * 2.0) - &from_array(whole.slice(ndarray::s![0, ..]).to_owned().into_dyn(), 5000);
    let got = y.mean_axis(0).compute_on(&s).unwrap();
    let want = (&whole * 2.0 - whole.slice(ndarray::s![0, ..])).mean_axis(Axis(0)).unwrap();
    assert!(close(&got, &want));
    let total = y.sum().scalar().compute_on(&s).unwrap();
    assert!((total - (&whole * 2.0 - whole.slice(ndarray::s![0, ..])).sum()).abs() < 1e-6);
    let materialized = y.compute_on(&s).unwrap();
    assert!(close(&materialized, &(&whole * 2.0 - whole.slice(ndarray::s![0, ..]))));
}
