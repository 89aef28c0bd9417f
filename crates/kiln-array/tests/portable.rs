//! Array graphs as plain data: every graph converts to task specs, survives a postcard round
//! trip, is rebuilt from a fresh registry filled by `register_portable`, and gives the same
//! answer, on the local scheduler and with every intermediate value passed through its codec.

use std::fmt::Debug;

use kiln_array::linalg::{cholesky, qr, svd, svd_compressed};
use kiln_array::random::RandomState;
use kiln_array::{
    Array, Block, ChunkSpec, Element, Idx, Reduce, arange, concatenate, eye, from_array, full, idx, linspace, ones,
    register_portable, stack, tensordot, where_, zeros,
};
use kiln_graph::collection::{graph_of, optimize};
use kiln_graph::graph::Input;
use kiln_graph::portable::{PortableError, TaskSpec, graph_to_specs, specs_to_graph};
use kiln_graph::{CodecError, CodecRegistry, Collection, Encoded, KernelRegistry, TaskId, Value};
use kiln_local::{LocalScheduler, Progress};
use ndarray::{ArrayD, Dimension, IxDyn};
use proptest::prelude::*;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn registries() -> (KernelRegistry, CodecRegistry) {
    let (kernels, codecs) = (KernelRegistry::new(), CodecRegistry::with_builtins());
    register_portable(&kernels, &codecs);
    register_portable(&kernels, &codecs); // idempotent
    (kernels, codecs)
}

/// Computes `c` from its portable form twice: the rebuilt graph on the local scheduler, and a
/// sequential run in topological order that encodes and decodes every task's value (through
/// postcard too) before the next task reads it.
fn through_specs<C: Collection>(c: &C) -> (C::Output, C::Output) {
    let (graph, outputs) = graph_of(c).unwrap();
    let (graph, outputs) = optimize(graph, outputs).unwrap();
    let (kernels, codecs) = registries();
    let specs = graph_to_specs(&graph, &codecs).unwrap_or_else(|e| panic!("not portable: {e}"));
    let bytes = postcard::to_allocvec(&specs).unwrap();
    let specs: Vec<TaskSpec> = postcard::from_bytes(&bytes).unwrap();
    let rebuilt = specs_to_graph(&specs, &kernels, &codecs).unwrap_or_else(|e| panic!("rebuild: {e}"));
    assert_eq!(rebuilt.len(), graph.len());
    for id in graph.ids() {
        let again = rebuilt.id_of(graph.key(id)).unwrap();
        assert_eq!(rebuilt.kernel(again).name(), graph.kernel(id).name(), "name of {}", graph.key(id));
    }
    let outs: Vec<TaskId> = outputs.iter().map(|&o| rebuilt.id_of(graph.key(o)).unwrap()).collect();

    let values = sched().run(&rebuilt, &outs).unwrap_or_else(|e| panic!("run: {e}"));
    let scheduled = c.assemble(&rebuilt, &outs, values).unwrap();

    let mut slots: Vec<Option<Value>> = vec![None; rebuilt.len()];
    for &id in rebuilt.topological_order() {
        let inputs: Vec<Value> = rebuilt
            .inputs(id)
            .iter()
            .map(|i| match i {
                Input::Task(d) => slots[d.index()].clone().expect("dependencies run first"),
                Input::Literal(v) => v.clone(),
            })
            .collect();
        let key = rebuilt.key(id);
        let out = rebuilt.kernel(id).call(&inputs).unwrap_or_else(|e| panic!("task {key}: {e}"));
        let encoded = codecs.encode(&out).unwrap_or_else(|e| panic!("task {key}: {e}"));
        let encoded: Encoded = postcard::from_bytes(&postcard::to_allocvec(&encoded).unwrap()).unwrap();
        slots[id.index()] = Some(codecs.decode(&encoded).unwrap_or_else(|e| panic!("task {key}: {e}")));
    }
    let values = outs.iter().map(|o| slots[o.index()].clone().unwrap()).collect();
    let sequential = c.assemble(&rebuilt, &outs, values).unwrap();
    (scheduled, sequential)
}

/// Bitwise equality that counts NaN equal to NaN (Debug prints the shortest exact form).
fn same<T: Debug>(a: &ArrayD<T>, b: &ArrayD<T>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| format!("{x:?}") == format!("{y:?}"))
}

#[track_caller]
fn check<T: Element>(x: &Array<T>) -> ArrayD<T> {
    x.check().unwrap();
    let direct = x.compute_on(&sched()).unwrap();
    let (scheduled, sequential) = through_specs(x);
    assert!(same(&direct, &scheduled), "{x}: scheduled {scheduled:?} != direct {direct:?}");
    assert!(same(&direct, &sequential), "{x}: sequential {sequential:?} != direct {direct:?}");
    direct
}

fn grid(shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        i.slice().iter().enumerate().map(|(d, &x)| (x as f64 - 2.5) * (d as f64 + 1.5)).sum()
    })
}

#[test]
fn the_seed_computation() {
    let x = RandomState::new(7).random(&[40, 40], [15, 15]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let v = check(&y);
    assert!(v.iter().next().unwrap() > &0.3);
    let (a, b) = through_specs(&y.scalar());
    assert_eq!(a.to_bits(), y.scalar().compute_on(&sched()).unwrap().to_bits());
    assert_eq!(a.to_bits(), b.to_bits());
}

#[test]
fn elementwise_with_broadcasting_in_every_dtype() {
    let a = from_array(grid(&[6, 5]), [4, 2]);
    let row = from_array(grid(&[5]), 3);
    let col = from_array(grid(&[6, 1]), 2);
    check(&((&a + &row) * 2.0 - &col));
    check(&(&a / &row).maximum(0.5).sqrt().exp().log().abs());
    check(&a.sin().tanh().floor().round().sign());
    let f32s = a.astype::<f32>();
    check(&(&f32s * &f32s - 1.5f32).clip(-3.0, 40.0));
    let i64s = a.astype::<i64>();
    check(&(&i64s * 3i64 - &row.astype::<i64>()).floor_divide(2i64));
    check(&i64s.pow(2i64));
    let i32s = a.astype::<i32>();
    check(&(&i32s + &i32s.t().t()).abs());
    let mask = a.gt(&row);
    check(&mask);
    check(&mask.and(&a.lt(10.0)).or(&a.isnan()).not());
    check(&where_(&mask, &a, &(&a * -1.0)));
    check(&mask.astype::<f64>().astype::<i32>());
    check(&a.isfinite());
    check(&a.equal(a.t().t()));
}

#[test]
fn reductions_along_axes_and_trees() {
    let x = RandomState::new(3).normal(1.0, 2.0, &[9, 12], [2, 5]);
    check(&x.sum());
    check(&x.sum_with(&Reduce::axis(0).split_every(2)));
    check(&x.sum_with(&Reduce::axis(1).keepdims(true).split_every(2)));
    check(&x.mean());
    check(&x.mean_axis(1));
    check(&x.std());
    check(&x.std_with(&Reduce::axis(0).ddof(1.0).split_every(2)));
    check(&x.var_with(&Reduce::axes([0, 1]).split_every(3)));
    check(&x.min_axis(0));
    check(&x.max());
    check(&x.prod_with(&Reduce::axis(0)));
    check(&x.argmax());
    check(&x.argmin_axis(Some(1)));
    check(&x.argmax_axis(Some(0)));
    check(&x.gt(1.0).any());
    check(&x.gt(-10.0).all_with(&Reduce::axis(1)));
    let ints = RandomState::new(5).integers(-4, 9, &[7, 6], [3, 4]);
    check(&ints.sum_axis(0));
    check(&ints.mean());
    check(&ints.astype::<i32>().max_axis(1));
    let nans = where_(&x.gt(2.0), &(&x * f64::NAN), &x);
    check(&nans.nansum());
    check(&nans.nanmean());
    check(&nans.nanstd());
    check(&nans.nanmax());
    check(&nans.nanargmin());
    check(&nans.max());
}

#[test]
fn scans_shapes_and_selections() {
    let x = from_array(grid(&[7, 6]), [3, 4]);
    check(&x.cumsum(0));
    check(&x.cumprod(1));
    check(&x.astype::<i64>().cumsum(1));
    check(&x.t());
    check(&x.transpose(&[1, 0]).sum_axis(0));
    check(&x.slice(&idx![1..6;2, ..]));
    check(&x.slice(&idx![..;-1, 2]));
    check(&x.slice(&[Idx::from(3), Idx::full()]));
    check(&x.rechunk([2, 6]));
    check(&x.rechunk(ChunkSpec::Uniform(1)));
    check(&concatenate(&[x.clone(), (&x * 2.0)], 0));
    check(&stack(&[x.clone(), x.t().t()], 1));
    check(&x.reshape(&[6, 7]));
    check(&x.reshape(&[42]));
    check(&x.expand_dims(0).squeeze(&[]));
    check(&x.take(&[5, 0, 0, -1, 2], 0));
    check(&x.take(&[], 1));
    check(&x.swapaxes(0, 1));
    let picked = x.select_where(&x.gt(3.0), &sched()).unwrap();
    check(&picked);
}

#[test]
fn sources() {
    let r = RandomState::new(11);
    check(&r.random(&[10, 7], [4, 3]));
    check(&r.uniform(-2.0, 3.0, &[10], 4).t());
    check(&(r.normal(0.0, 1.0, &[8, 8], [3, 3]) + r.random(&[8, 8], [4, 4]).t()));
    check(&r.integers(0, 100, &[9], 4));
    check(&arange::<i64>(0.0, 17.0, 2.0, 3));
    check(&linspace(0.0, 1.0, 11, 4));
    check(&eye::<f32>(7, 3));
    check(&full::<i32>(&[3, 4], 7, 2));
    check(&(ones::<bool>(&[5], 2).astype::<i64>() + zeros::<i64>(&[5], 3)));
    check(&from_array(ArrayD::from_elem(IxDyn(&[4]), true), 3));
}

#[test]
fn products_and_decompositions() {
    let a = from_array(grid(&[6, 18]), [4, 2]);
    let b = from_array(grid(&[18, 5]), [2, 3]);
    // Nine blocks along the shared axis: partial products and a sum of blocks.
    check(&a.dot(&b));
    check(&a.matmul(&(&b + 1.0)));
    check(&a.astype::<i64>().dot(&b.astype::<i64>()));
    check(&a.astype::<f32>().dot(&b.astype::<f32>()));
    let v = from_array(grid(&[18]), 5);
    check(&a.dot(&v));
    let t3 = from_array(grid(&[3, 4, 6]), [2, 2, 3]);
    let t2 = from_array(grid(&[6, 4]), [3, 2]);
    check(&tensordot(&t3, &t2, &[2, 1], &[0, 1]));

    let tall = RandomState::new(2).random(&[30, 4], [10, 4]);
    let (q, r) = qr(&tall);
    check(&q);
    check(&r);
    check(&q.dot(&r));
    let (u, s, vt) = svd(&tall);
    check(&u);
    check(&s);
    check(&vt);
    let (u, s, vt) = svd_compressed(&RandomState::new(4).random(&[20, 12], [5, 6]), 3, 2, 1, 9);
    check(&u);
    check(&s);
    check(&vt);
    let m = RandomState::new(8).random(&[9, 9], [4, 4]);
    let spd = &m.dot(&m.t()) + &(eye::<f64>(9, 4) * 9.0);
    check(&cholesky(&spd));
}

#[cfg(feature = "zarr")]
#[test]
fn zarr_write_then_read() {
    let dir = std::env::temp_dir().join(format!("kiln-portable-zarr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let x = from_array(grid(&[7, 5]), [3, 2]);
    let write = (&x * 2.0).to_zarr(&dir).unwrap();
    let (a, b) = through_specs(&write);
    assert_eq!((a, b), (9, 9));
    let back = kiln_array::zarr::from_zarr::<f64>(&dir, None).unwrap();
    let got = check(&back);
    assert!(same(&got, &(grid(&[7, 5]) * 2.0)));
    check(&back.sum_axis(1));
    check(&back.astype::<i32>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn user_functions_are_refused_by_name() {
    let x = ones::<f64>(&[4, 4], 2).map_blocks("my_double", |b: &ArrayD<f64>| b * 2.0);
    let (graph, outputs) = graph_of(&x.sum()).unwrap();
    let (graph, _) = optimize(graph, outputs).unwrap();
    let err = graph_to_specs(&graph, &CodecRegistry::with_builtins()).unwrap_err();
    // Linear fusion merges the user's block task into its reader; the fused name still shows it.
    assert!(matches!(&err, PortableError::NotPortable { kernel, .. } if kernel.contains("my_double")), "{err}");
    let (graph, _) = graph_of(&x).unwrap();
    let err = graph_to_specs(&graph, &CodecRegistry::with_builtins()).unwrap_err();
    assert!(matches!(&err, PortableError::NotPortable { kernel, .. } if kernel == "my_double"), "{err}");
    let overlap =
        ones::<f64>(&[6], 3)
            .map_overlap(&[1], kiln_array::overlap::Boundary::None, "smooth", |b: &ArrayD<f64>| b.clone());
    let (graph, _) = graph_of(&overlap).unwrap();
    let err = graph_to_specs(&graph, &CodecRegistry::with_builtins()).unwrap_err();
    assert!(err.to_string().contains("smooth"), "{err}");
}

#[test]
fn in_memory_data_travels_as_a_block_literal() {
    // The global registries know arrays as soon as one is lowered (FusedKernel::spec uses them).
    let x = from_array(grid(&[3, 3]), 3);
    let (graph, _) = graph_of(&x).unwrap();
    let specs = graph_to_specs(&graph, CodecRegistry::global()).unwrap();
    let literal = specs.iter().flat_map(|s| &s.inputs).find_map(|i| match i {
        kiln_graph::portable::InputSpec::Literal(e) => Some(e),
        _ => None,
    });
    assert_eq!(literal.unwrap().tag, "kiln.array.block");
    assert!(KernelRegistry::global().contains("kiln.array.expr"));
}

fn block_strategy() -> impl Strategy<Value = Block> {
    let shape = prop::collection::vec(0usize..5, 0..4);
    (shape, 0u8..5, any::<bool>(), any::<u64>()).prop_map(|(shape, kind, transpose, seed)| {
        let n: usize = shape.iter().product();
        let f = |i: usize| (seed.wrapping_mul(i as u64 + 1) >> 7) as f64 - 1e12;
        let block = match kind {
            0 => Block::Bool(ArrayD::from_shape_fn(IxDyn(&shape), |i| {
                (i.slice().iter().sum::<usize>() + seed as usize).is_multiple_of(3)
            })),
            1 => Block::I32(ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|i| f(i) as i32).collect()).unwrap()),
            2 => Block::I64(ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|i| f(i) as i64).collect()).unwrap()),
            3 => {
                Block::F32(ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|i| f(i) as f32 / 3.0).collect()).unwrap())
            }
            _ => Block::F64(
                ArrayD::from_shape_vec(
                    IxDyn(&shape),
                    (0..n).map(|i| if i == 1 { f64::NAN } else { f(i) / 7.0 }).collect(),
                )
                .unwrap(),
            ),
        };
        if transpose { kiln_array::with_block!(block, a => Element::into_block(a.reversed_axes())) } else { block }
    })
}

proptest! {
    #[test]
    fn blocks_roundtrip(block in block_strategy()) {
        let (_, codecs) = registries();
        let encoded = codecs.encode(&Value::new(block.clone())).unwrap();
        prop_assert_eq!(encoded.frames.len(), 1);
        prop_assert_eq!(encoded.frames[0].len(), block.nbytes());
        let back = codecs.decode(&encoded).unwrap();
        let back = back.downcast_ref::<Block>().unwrap();
        prop_assert_eq!(back.dtype(), block.dtype());
        prop_assert_eq!(back.shape(), block.shape());
        let (x, y) = (format!("{:?}", kiln_array::with_block!(back, a => a.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>())),
                      format!("{:?}", kiln_array::with_block!(&block, a => a.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>())));
        prop_assert_eq!(x, y);
        // Truncating or extending the frame, or changing the header, is an error, not a panic.
        let mut short = encoded.clone();
        short.frames[0] = [&short.frames[0][..], &[0]].concat().into();
        let err = codecs.decode(&short).unwrap_err();
        prop_assert!(matches!(&err, CodecError::Malformed { tag, message } if *tag == encoded.tag && message.contains("needs")), "{}", err);
        let mut none = encoded.clone();
        none.frames.clear();
        let err = codecs.decode(&none).unwrap_err();
        prop_assert!(matches!(&err, CodecError::Malformed { tag, message } if *tag == encoded.tag && message.contains("for 0 frames")), "{}", err);
    }

    #[test]
    fn garbage_never_panics(tag in prop::sample::select(vec![
                                "kiln.array.block", "kiln.array.block-arc", "kiln.array.reduce-partial",
                                "kiln.array.tsqr-local", "kiln.array.tsqr-stacked", "kiln.array.svd-core"]),
                            header in prop::collection::vec(any::<u8>(), 0..24),
                            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4)) {
        let (_, codecs) = registries();
        let _ = codecs.decode(&Encoded { tag: tag.to_string(), header, frames: frames.into_iter().map(Into::into).collect() });
    }

    #[test]
    fn expression_kernel_params_never_panic(params in prop::collection::vec(any::<u8>(), 0..64)) {
        let (kernels, _) = registries();
        let spec = kiln_graph::KernelSpec { id: "kiln.array.expr".into(), params };
        let _ = kernels.resolve(&spec);
    }
}

#[test]
fn malformed_blocks_are_reported() {
    let (_, codecs) = registries();
    let block = Block::F64(ArrayD::from_elem(IxDyn(&[2, 2]), 1.0));
    let mut e = codecs.encode(&Value::new(block)).unwrap();
    e.frames[0] = e.frames[0][..24].to_vec().into();
    let err = codecs.decode(&e).unwrap_err();
    assert!(err.to_string().contains("needs 32"), "{err}");
    let bools = codecs.encode(&Value::new(Block::Bool(ArrayD::from_elem(IxDyn(&[2]), true)))).unwrap();
    let mut bad = bools.clone();
    let mut bytes = bad.frames[0].to_vec();
    bytes[1] = 7;
    bad.frames[0] = bytes.into();
    assert!(codecs.decode(&bad).unwrap_err().to_string().contains("not a bool"));
    // A shape whose byte count overflows.
    let header = postcard::to_allocvec(&((), vec![(kiln_array::DType::F64, vec![u64::MAX, 4u64])])).unwrap();
    let huge = Encoded { tag: "kiln.array.block".into(), header, frames: vec![Vec::new().into()] };
    let err = codecs.decode(&huge).unwrap_err();
    assert!(
        matches!(&err, CodecError::Malformed { tag, message } if tag == "kiln.array.block" && message.contains("18446744073709551615")),
        "{err}"
    );
}
