//! A block larger than a worker's memory limit is a task error, not a dead worker (issue
//! 10.1c): a real `kiln worker --memory-limit 4GiB` asked for a 320 GB block fails that task with
//! both sizes named, and goes on serving. Before, every worker aborted on `memory allocation of
//! 320000000000 bytes failed` in turn, and the client waited forever.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln::Collection;
use kiln::array::ones;
use kiln_distributed::Client;

mod support;
use support::Guard;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[test]
fn a_block_over_the_worker_memory_limit_fails_its_task_and_the_worker_survives() {
    let mut scheduler = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _scheduler = Guard(scheduler);
    let address = line.trim().strip_prefix("Scheduler at ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    let mut worker = Guard(
        Command::new(KILN)
            .args(["worker", &address, "--nthreads", "1", "--memory-limit", "4GiB", "--name", "small"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();

    // The repro: one 200,000 x 200,000 float64 block (320 GB), rechunked and summed.
    let x = ones::<f64>(&[200_000, 200_000], [200_000, 200_000]);
    let err = x.rechunk([100_000, 100_000]).sum().scalar().compute_on(&client).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("block of 298.02 GiB exceeds the worker memory limit of 4.00 GiB; use smaller chunks"),
        "{message}"
    );

    // The worker is alive, still registered, and computes the next graph.
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker process died");
    assert_eq!(client.workers().len(), 1);
    let small = ones::<f64>(&[1000, 1000], 250).sum().scalar().compute_on(&client).unwrap();
    assert_eq!(small, 1e6);
}
