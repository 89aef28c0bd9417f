//! Per-block kernel speeds of the seed computation (1000 x 1000 f64 blocks): generating a
//! random block, the fused `x + x.T - m` expression, and the std partial. For tuning; the
//! end-to-end comparison with Dask is `seed_array`.
//!
//! `cargo run --release -p kiln-bench --bin array_kernels`

use std::time::Instant;

use kiln_array::Block;
use kiln_array::DType;
use kiln_array::chunk::expr::{BinaryOp, Expr};
use kiln_array::chunk::source::{Dist, Source};
use ndarray::{ArrayD, IxDyn};

fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let n = 1000usize;
    let elems = (n * n) as f64;
    let src = Source::Random { seed: 1, dist: Dist::Uniform { low: 0.0, high: 1.0 } };
    let gen_s = time(50, || {
        std::hint::black_box(src.generate(DType::F64, &[n, n], &[0, 0], &[n, n]));
    });
    let small_s = time(20000, || {
        std::hint::black_box(src.generate(DType::F64, &[32, 32], &[0, 0], &[32, 32]));
    });
    println!("generate in cache (32x32 block): {:.2} ns/elem", small_s / 1024.0 * 1e9);
    let block_of = |row: usize| Expr::Gen {
        source: src.clone(),
        dtype: DType::F64,
        shape: vec![n, n],
        offset: vec![row * n, 0],
        array_shape: vec![4 * n, n],
    };
    let mean_row = Block::F64(ArrayD::from_elem(IxDyn(&[n]), 0.5));
    let expr = Expr::Binary(
        BinaryOp::Sub,
        Box::new(Expr::Binary(
            BinaryOp::Add,
            Box::new(block_of(1)),
            Box::new(Expr::Transpose(vec![1, 0], Box::new(block_of(2)))),
        )),
        Box::new(Expr::Input(0)),
    );
    let add_only = Expr::Binary(
        BinaryOp::Add,
        Box::new(block_of(1)),
        Box::new(Expr::Transpose(vec![1, 0], Box::new(block_of(2)))),
    );
    let add_s = time(20, || {
        std::hint::black_box(add_only.eval(&[]).unwrap());
    });
    let gen_only = block_of(1);
    let gen2_s = time(20, || {
        std::hint::black_box(gen_only.eval(&[]).unwrap());
    });
    println!("expr parts: gen {:.2} ms, gen + gen.T {:.2} ms", gen2_s * 1e3, add_s * 1e3);
    let expr_s = time(20, || {
        std::hint::black_box(expr.eval(&[&mean_row]).unwrap());
    });
    // The same expression over stored (input) blocks: the block evaluator (tiled, into one new
    // buffer) against lanes read in place (strided for the transposed input).
    let stored = |k: f64| Block::F64(ArrayD::from_shape_fn(IxDyn(&[n, n]), |d| k + (d[0] * n + d[1]) as f64 * 1e-6));
    let (x0, x1) = (stored(0.25), stored(0.75));
    let over_inputs = Expr::Binary(
        BinaryOp::Sub,
        Box::new(Expr::Binary(
            BinaryOp::Add,
            Box::new(Expr::Input(0)),
            Box::new(Expr::Transpose(vec![1, 0], Box::new(Expr::Input(1)))),
        )),
        Box::new(Expr::Input(2)),
    );
    let stored_block_s = time(20, || {
        std::hint::black_box(over_inputs.eval(&[&x0, &x1, &mean_row]).unwrap());
    });
    let stored_lanes_s = time(20, || {
        let program = kiln_array::chunk::lanes::LaneProgram::compile(&over_inputs, &[&x0, &x1, &mean_row]).unwrap();
        std::hint::black_box(program.to_block());
    });
    println!(
        "x + x.T - m over stored blocks: block evaluator {:.2} ms, lanes {:.2} ms",
        stored_block_s * 1e3,
        stored_lanes_s * 1e3
    );
    let a = ArrayD::from_elem(IxDyn(&[n, n]), 1.5f64);
    let b = ArrayD::from_elem(IxDyn(&[n, n]), 2.5f64);
    let add_t_s = time(20, || {
        let mut x = a.clone();
        x += &b.t();
        std::hint::black_box(x);
    });
    let copy_s = time(20, || {
        std::hint::black_box(a.clone());
    });
    println!(
        "per 1000x1000 f64 block: generate uniform {:.2} ms ({:.2} ns/elem); x + x.T - m expression {:.2} ms; \
         clone {:.2} ms; clone + add transposed {:.2} ms",
        gen_s * 1e3,
        gen_s / elems * 1e9,
        expr_s * 1e3,
        copy_s * 1e3,
        add_t_s * 1e3
    );
    println!(
        "RESULT generate_ms={:.3} expr_ms={:.3} stored_block_ms={:.3} stored_lanes_ms={:.3} clone_ms={:.3} \
         add_transposed_ms={:.3}",
        gen_s * 1e3,
        expr_s * 1e3,
        stored_block_s * 1e3,
        stored_lanes_s * 1e3,
        copy_s * 1e3,
        add_t_s * 1e3
    );
}
