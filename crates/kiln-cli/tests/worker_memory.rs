//! A worker's memory behaviour with real processes: a deep chain does not leave it paused for
//! good, and a kernel the stock worker does not know fails naming the kernel and the worker.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kiln::Collection;
use kiln::delayed::func2;
use kiln_distributed::Client;

mod support;
use support::{Guard, start_scheduler};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

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
    let (_scheduler, address) = start_scheduler(&[]);
    let log = std::env::temp_dir().join(format!("kiln-deep-chain-worker-{}.log", std::process::id()));
    // 100,000 steps (fused into chains of at most 256): ~10 MB of kernel specs arrive with the
    // graph. Before the kernel cache was bounded and fusion capped, the whole chain was one task
    // whose 10 MB spec stayed cached; at 1,000,000 steps under a 200 MB limit that kept the
    // worker paused for good. Then the ~400 fused kernels themselves were cached (25 KB of spec
    // and ~70 KB of resolved steps each, though no two tasks share one): under CPU load the
    // worker reached 52 MB within 0.3 s and stayed there holding nothing, paused for good. The
    // limit leaves the idle worker (about 13 MB) room, so the chain must finish, and a pause, if
    // any, must end.
    let _worker = start_worker(&address, &["--memory-limit", "64MB"], &log);
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
    let lines: Vec<&str> = text.lines().collect();
    let paused = lines.iter().rposition(|l| l.contains("paused: process memory"));
    let resumed = lines.iter().rposition(|l| l.contains("resumed: process memory"));
    assert!(paused.is_none() || resumed > paused, "the worker did not log its resume after pausing:\n{text}");
    std::fs::remove_file(&log).unwrap();
}

#[test]
fn an_unknown_kernel_fails_naming_the_kernel_and_the_worker() {
    let (_scheduler, address) = start_scheduler(&[]);
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

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Files and directories under `dir`, recursively.
fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| 1 + if e.path().is_dir() { entries(&e.path()) } else { 0 }).sum())
        .unwrap_or(0)
}

#[test]
fn a_full_spill_disk_stops_spilling_once_keeps_the_data_and_leaves_no_file() {
    if effective_uid() != Some(0) || !Command::new("unshare").args(["-m", "true"]).status().is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: a full spill disk needs root and unshare -m (a 1 MB tmpfs in a private mount namespace)");
        return;
    }
    let (_scheduler, address) = start_scheduler(&[]);
    let dir = std::env::temp_dir().join(format!("kiln-full-disk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::env::temp_dir().join(format!("kiln-full-disk-worker-{}.log", std::process::id()));
    // The worker spills under TMPDIR, a 1 MB tmpfs mounted in its own mount namespace; the
    // shell reports what is left there after the worker exits.
    let script = r#"mount -t tmpfs -o size=1m kiln-spill "$1" && TMPDIR="$1" "$2" worker "$3" --nthreads 1 --memory-limit 64MB --name full; echo "left on the spill disk: $(find "$1" -mindepth 1 | wc -l)""#;
    let mut sh = Guard(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&dir)
            .arg(KILN)
            .arg(&address)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    // 63 MB of 2 MB chunks on a 64 MB worker: over its 38 MB target, so it spills, and the
    // first file does not fit on the disk.
    let x = kiln::array::random::RandomState::new(21).random(&[2800, 2800], [500, 500]);
    let persist = std::thread::spawn({
        let client = client.clone();
        let x = x.clone();
        move || client.persist(&x).unwrap()
    });
    let failed = |text: &str| text.lines().filter(|l| l.contains("ERROR") && l.contains("failed")).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while failed(&std::fs::read_to_string(&log).unwrap()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no spill failure logged:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The full worker paused: a second one takes the rest of the work, fetching from it.
    let other_log = std::env::temp_dir().join(format!("kiln-full-disk-other-{}.log", std::process::id()));
    let _other = start_worker(&address, &["--name", "other"], &other_log);
    let persisted = within("persist", Duration::from_secs(60), move || persist.join().unwrap());
    let expected = x.sum().compute_on(&kiln::local::LocalScheduler::new()).unwrap().first().copied().unwrap();
    let c = client.clone();
    let total = within("the sum", Duration::from_secs(60), move || persisted.sum().compute_on(&c).unwrap());
    let total = total.first().copied().unwrap();
    assert!((total - expected).abs() <= 1e-9 * expected.abs(), "{total} vs {expected}");
    // Nothing piles up on the full disk: at most the spill directory and one file.
    let on_disk =
        entries(&std::path::Path::new(&format!("/proc/{}/root", sh.0.id())).join(dir.strip_prefix("/").unwrap()));
    assert!(on_disk <= 2, "{on_disk} entries on the full spill disk");
    // The worker exits on SIGTERM and leaves nothing behind.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", sh.0.id())).unwrap();
    let worker_pid = children.split_whitespace().next().expect("the worker runs under the shell").to_string();
    assert!(Command::new("kill").args(["-TERM", &worker_pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while sh.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the worker did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(failed(&text), 1, "the failure is logged once:\n{text}");
    let error = text.lines().find(|l| l.contains("ERROR")).unwrap();
    assert!(error.contains("No space left on device") && error.contains("kiln-worker-"), "{error}");
    assert!(text.contains("paused: "), "the worker did not pause:\n{text}");
    assert!(text.contains("left on the spill disk: 0"), "spill files left after exit:\n{text}");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&other_log);
    let _ = std::fs::remove_dir(&dir);
}
