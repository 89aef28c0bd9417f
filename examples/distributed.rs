//! The README's distributed example: a LocalCluster whose workers are this program itself
//! (so they know its registered functions), collections and futures computed on it.
//!
//! `cargo run --release -p kiln --example distributed`

use kiln::distributed::{Client, LocalCluster};
use kiln::prelude::*;

// Functions sent to a cluster need a stable id, registered in every process that runs them.
fn inc() -> kiln::delayed::Func1<i64, i64> {
    kiln::delayed::func1("inc", |x: &i64| x + 1).portable("myapp.inc")
}
fn add() -> kiln::delayed::Func2<i64, i64, i64> {
    kiln::delayed::func2("add", |a: &i64, b: &i64| a + b).portable("myapp.add")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kiln::register_builtins(); // the arrays' and delayed's own kernels and codecs
    let registry = kiln::graph::KernelRegistry::global();
    registry.register_instance(inc().kernel());
    registry.register_instance(add().kernel());
    // Started as `<this program> worker ADDR ...`, the program is a worker until told to stop.
    kiln::distributed::run_worker_if_requested();

    // A scheduler here and two worker processes running this same program;
    // or Client::connect("tcp://host:8786")? for a running cluster.
    let cluster = LocalCluster::builder().workers(2).binary(std::env::current_exe()?).start()?;
    let client: Client = cluster.client()?;

    // Collections compute on the cluster.
    let x = kiln::array::random::RandomState::new(0).random(&[4000, 4000], [1000, 1000]);
    println!("{}", (&x + &x.t()).std().scalar().compute_on(&client)?);

    // Futures, as in dask.distributed.
    let f = client.submit(add().call(1, 2))?; // returns at once: a Future<i64>
    assert_eq!(f.result()?, 3);
    let many = client.map(&inc(), 0..10i64)?; // Vec<Future<i64>>
    let g = client.submit(add().call(&f, &many[9]))?; // futures as arguments: data stays on the cluster
    assert_eq!(g.result()?, 13);
    assert_eq!(client.gather(&many)?, (1..11).collect::<Vec<i64>>());
    let data = client.scatter(vec![vec![1.0f64, 2.0], vec![3.0]])?;
    assert_eq!(client.gather(&data)?[1], vec![3.0]);
    client.publish_dataset("increments", &many)?; // elsewhere: client.get_dataset::<i64>("increments")?
    client.set_as_default(); // plain .compute() now runs on the cluster
    Ok(())
}
