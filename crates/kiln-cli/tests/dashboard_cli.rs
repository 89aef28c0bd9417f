//! `kiln scheduler` serves the dashboard and prints where; `--no-dashboard` serves none; `kiln
//! worker --dashboard-address` serves the worker's own Prometheus metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

mod support;
use support::{Guard, start_scheduler, start_scheduler_reading};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// One `GET` (`Connection: close`): the whole response.
fn get(host: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_scheduler_prints_its_dashboard_and_serves_it() {
    let (_guard, _, mut stdout) =
        start_scheduler_reading(&["--dashboard-address", "127.0.0.1:0", "--metrics-namespace", "dask"]);
    // The banner is one write: its second line is already in the pipe.
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let link = line.trim().strip_prefix("Dashboard at ").unwrap_or_else(|| panic!("{line:?}"));
    let host = link.trim_start_matches("http://").trim_end_matches("/status");
    let response = get(host, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200") && response.contains("dask_scheduler_workers"), "{response}");
}

#[test]
fn no_dashboard_means_none() {
    let (guard, _, mut stdout) = start_scheduler_reading(&["--no-dashboard"]);
    // The banner is one write: stop the scheduler, and whatever else it printed is here.
    drop(guard);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("Dashboard"), "{rest}");
}

#[test]
fn a_bad_dashboard_address_is_a_clear_error() {
    let out = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "nowhere:99999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dashboard"), "{stderr}");
}

/// A real worker process serves `/metrics` under Dask's names in the namespace it is given,
/// counting the bytes of its connection to the scheduler.
#[test]
fn a_worker_process_serves_its_metrics() {
    let (_scheduler, address) = start_scheduler(&["--no-dashboard"]);
    let mut child = Command::new(KILN)
        .args(["worker", &address, "--no-nanny", "--nthreads", "2", "--memory-limit", "0"])
        .args(["--dashboard-address", "127.0.0.1:0", "--metrics-namespace", "dask"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The worker logs to its standard output.
    let mut log = BufReader::new(child.stdout.take().unwrap());
    let _worker = Guard(child);
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "the worker exited without naming its port:\n{seen}");
        seen.push_str(&line);
        if let Some((_, rest)) = line.split_once("metrics at http://") {
            break rest.trim().trim_end_matches("/metrics").to_string();
        }
    };
    // Once registered, the connection to the scheduler has carried bytes both ways.
    while !seen.contains("registered as worker") {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "the worker exited before registering:\n{seen}");
        seen.push_str(&line);
    }
    let response = get(&url, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let text = response.split_once("\r\n\r\n").unwrap().1.to_string();
    for needle in [
        "dask_worker_threads 2",
        "dask_worker_tasks{state=\"memory\"} 0",
        "dask_worker_memory_bytes{type=\"unmanaged\"}",
        "dask_worker_transfer_outgoing_bytes_total 0",
        "dask_worker_spill_bytes_total{activity=\"disk_write\"} 0",
        "dask_worker_tick_count_total",
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    for direction in ["read", "write"] {
        let prefix = format!("dask_worker_network_bytes_total{{direction=\"{direction}\"}} ");
        let bytes: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing from\n{text}"))
            .parse()
            .unwrap();
        assert!(bytes > 0.0, "{prefix}{bytes}");
    }
    assert!(!text.contains("kiln_"), "{text}");
    assert!(get(&url, "/health").ends_with("ok"));
    assert!(get(&url, "/status").starts_with("HTTP/1.1 404"));
}

/// The value of the sample of `text` whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{prefix} missing from\n{text}"))
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// A `kiln worker` process serving its own metrics: its guard, its id at the scheduler and its
/// metrics host. Its log is drained by a thread so that a chatty worker never blocks on a full
/// pipe.
fn start_worker(address: &str) -> (Guard, String, String) {
    let mut child = Command::new(KILN)
        .args(["worker", address, "--no-nanny", "--nthreads", "1", "--memory-limit", "0"])
        .args(["--dashboard-address", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = BufReader::new(child.stdout.take().unwrap());
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut host, mut id, mut seen) = (None, None, String::new());
    while host.is_none() || id.is_none() {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the worker did not name its metrics port and id:\n{seen}"));
        if let Some((_, rest)) = line.split_once("metrics at http://") {
            host = Some(rest.trim().trim_end_matches("/metrics").to_string());
        }
        if let Some((_, rest)) = line.split_once("registered as worker ") {
            id = Some(rest.trim().to_string());
        }
        seen += &line;
        seen.push('\n');
    }
    (guard, id.unwrap(), host.unwrap())
}

/// Workers send their process's network byte totals with each heartbeat; the scheduler's
/// `/metrics`, `/workers` and `/api/v1/get_workers` show them. On a cluster of real processes
/// that moved data between workers, every worker's figure at the scheduler is positive and lies
/// between two readings of the worker's own `/metrics` (the totals only grow, and the scheduler
/// holds the one from the last heartbeat).
#[test]
fn the_scheduler_shows_each_workers_network_bytes() {
    use kiln::Collection;
    use kiln::array::random::RandomState;

    let (_scheduler, address, mut stdout) = start_scheduler_reading(&["--dashboard-address", "127.0.0.1:0"]);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let link = line.trim().strip_prefix("Dashboard at ").unwrap_or_else(|| panic!("{line:?}"));
    let dashboard = link.trim_start_matches("http://").trim_end_matches("/status").to_string();
    let workers: Vec<_> = (0..2).map(|_| start_worker(&address)).collect();

    let client = kiln_distributed::Client::connect(&address).unwrap();
    // A transpose pairs blocks that live on different workers, so values cross between them.
    let x = RandomState::new(11).random(&[600, 600], [100, 100]);
    let total = (&x + &x.t()).sum_axis(0).compute_on(&client).unwrap();
    assert_eq!(total.shape(), &[600]);
    // Transfers reach the scheduler with the workers' next heartbeats.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let metrics = body(&get(&dashboard, "/metrics")).to_string();
        let moved: f64 = workers
            .iter()
            .map(|(_, id, _)| {
                sample(&metrics, &format!("kiln_worker_transfer_incoming_bytes_total{{worker=\"{id}\"}} "))
            })
            .sum();
        if moved > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no value moved between workers:\n{metrics}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    for (_, id, host) in &workers {
        for direction in ["read", "write"] {
            let own =
                |text: &str| sample(text, &format!("kiln_worker_network_bytes_total{{direction=\"{direction}\"}} "));
            let at_scheduler = |text: &str| {
                sample(text, &format!("kiln_worker_network_bytes_total{{worker=\"{id}\",direction=\"{direction}\"}} "))
            };
            let before = own(body(&get(host, "/metrics")));
            // Heartbeats come every second; wait (without a bound on how long they take, up to a
            // generous deadline) until one sent after the first reading has arrived.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let reported = loop {
                let reported = at_scheduler(body(&get(&dashboard, "/metrics")));
                if reported >= before {
                    break reported;
                }
                assert!(std::time::Instant::now() < deadline, "worker {id} {direction}: {reported} < {before}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            let after = own(body(&get(host, "/metrics")));
            assert!(reported > 0.0 && before <= reported && reported <= after, "{before} ≤ {reported} ≤ {after}");
        }
    }

    let page = get(&dashboard, "/workers");
    assert!(page.contains("network in (total)") && page.contains("/s ("), "{page}");
    let json: serde_json::Value = serde_json::from_str(body(&get(&dashboard, "/api/v1/get_workers"))).unwrap();
    let listed = json["workers"].as_array().unwrap_or_else(|| panic!("{json}"));
    assert_eq!(listed.len(), 2);
    for w in listed {
        assert!(w["network"]["read_bytes"].as_u64().unwrap() > 0, "{w}");
        assert!(w["network"]["write_bytes"].as_u64().unwrap() > 0, "{w}");
        assert!(w["network"]["read_bps"].as_f64().is_some(), "{w}");
    }
}
