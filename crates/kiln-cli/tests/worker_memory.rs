//! A worker's memory behaviour with real processes: a deep chain does not leave it paused for
//! good, and a kernel the stock worker does not know fails naming the kernel and the worker.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kiln::Collection;
use kiln::delayed::func2;
use kiln_distributed::Client;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Kills a child when the test ends, whatever happens.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_scheduler() -> (Guard, String) {
    let mut child = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("Scheduler at ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    (Guard(child), address)
}

/// A worker logging to `log` (it logs to stdout).
fn start_worker(scheduler: &str, extra: &[&str], log: &std::path::Path) -> Guard {
    Guard(
        Command::new(KILN)
            .args(["worker", scheduler, "--nthreads", "1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Runs `f` on a thread; fails the test if it does not return within `within`.
fn within<T: Send + 'static>(what: &str, within: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within).unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
}

/// The demo's `g(a, b) = a - b`, which the `kiln` binary registers.
fn g() -> kiln::delayed::Func2<i64, i64, i64> {
    func2("g", |a: &i64, b: &i64| a - b).portable("kiln.demo.g")
}

#[test]
fn a_deep_chain_does_not_leave_the_worker_paused_for_good() {
    let (_scheduler, address) = start_scheduler();
    let log = std::env::temp_dir().join(format!("kiln-deep-chain-worker-{}.log", std::process::id()));
    // 100,000 fused steps: one task with a ~10 MB spec and as many intermediate values, more
    // than 80 % of this limit while it runs.
    let _worker = start_worker(&address, &["--memory-limit", "40MB"], &log);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let g = g();
    let mut x = kiln::delayed::value(0i64);
    for _ in 0..100_000 {
        x = g.call(x, 1i64);
    }
    let c = client.clone();
    assert_eq!(within("the deep chain", Duration::from_secs(60), move || x.compute_on(&c).unwrap()), -100_000);
    // The worker paused while the chain ran; it must resume once the chain's memory is freed,
    // or this next task never runs.
    let y = g.call(kiln::delayed::value(5i64), 2i64);
    let c = client.clone();
    assert_eq!(within("a task after the chain", Duration::from_secs(20), move || y.compute_on(&c).unwrap()), 3);
    let text = std::fs::read_to_string(&log).unwrap();
    let paused = text.lines().position(|l| l.contains("paused: process memory") && l.contains("> 80 % of 40 MB limit"));
    let resumed = text.lines().position(|l| l.contains("resumed: process memory"));
    assert!(paused.is_some() && resumed > paused, "the worker did not log its pause and resume:\n{text}");
    std::fs::remove_file(&log).unwrap();
}

#[test]
fn an_unknown_kernel_fails_naming_the_kernel_and_the_worker() {
    let (_scheduler, address) = start_scheduler();
    let log = std::env::temp_dir().join(format!("kiln-unknown-kernel-worker-{}.log", std::process::id()));
    let _worker = start_worker(&address, &["--name", "stock"], &log);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let worker_address = client.workers()[0].address.clone();
    // Registered in this process only (as a user's binary would), not in the stock worker.
    let h = func2("h", |a: &i64, b: &i64| a + b).portable("kiln.test.only_in_a_user_binary");
    let err = h.call(1i64, 2i64).compute_on(&client).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "worker tcp://{worker_address} (stock) does not know kernel 'kiln.test.only_in_a_user_binary'"
        )),
        "{message}"
    );
    assert!(message.contains("user binary worker"), "{message}");
    std::fs::remove_file(&log).unwrap();
}
