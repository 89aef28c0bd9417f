//! The dashboard against a real `LocalCluster` (workers as threads, real TCP and HTTP): every
//! route's status and shape after an array computation, bad requests, the live stream, the
//! metrics text, and the scheduler's own dashboard options.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kiln_array::random::RandomState;
use kiln_distributed::{DashboardConfig, LocalCluster, SchedulerServer, ServerConfig, WorkerMode};
use kiln_graph::Collection;
use serde_json::Value;

/// One HTTP/1.1 exchange (`Connection: close`): status, headers, body.
fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String, String) {
    let host = base.trim_start_matches("http://").trim_end_matches("/status");
    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get_json(base: &str, path: &str) -> Value {
    let (status, _, body) = http(base, "GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

/// Opens a live page (`/events`) and reads it up to its first snapshot, which it returns with
/// the connection: from then on the scheduler knows a page is open.
fn open_live_page(link: &str) -> (BufReader<TcpStream>, Value) {
    let host = link.trim_start_matches("http://").trim_end_matches("/status");
    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let data = next_snapshot(&mut reader);
    (reader, data)
}

/// The next snapshot event's data on a live page.
fn next_snapshot(reader: &mut BufReader<TcpStream>) -> Value {
    let mut line = String::new();
    let mut saw_event = false;
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the event stream ended");
        if line.starts_with("event: snapshot") {
            saw_event = true;
        } else if saw_event && let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str::<Value>(data.trim()).unwrap();
        }
    }
}

#[test]
fn every_route_answers_with_the_documented_shape() {
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(2).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let link = cluster.dashboard_link().expect("a LocalCluster serves a dashboard");
    assert_eq!(client.dashboard_link().as_deref(), Some(link.as_str()));
    assert!(link.starts_with("http://127.0.0.1:") && link.ends_with("/status"), "{link}");

    // An array computation: many tasks of a few prefixes, results moving between workers.
    let x = RandomState::new(5).random(&[800, 800], [100, 100]);
    let y = (&x + &x.t()).sum_axis(0);
    let sum = y.compute_on(&client).unwrap();
    assert_eq!(sum.shape(), &[800]);
    // With no live page open the scheduler records no task stream, only counts.
    let quiet = get_json(&link, "/json/snapshot.json");
    assert!(quiet["aggregates"]["totals"]["tasks_finished"].as_u64().unwrap() > 0, "{quiet}");
    assert_eq!(quiet["aggregates"]["stream"].as_array().unwrap().len(), 0, "{quiet}");
    // With one open, every task run is a rectangle of the stream.
    let (mut page, first) = open_live_page(&link);
    assert_eq!(first["aggregates"]["workers"].as_array().unwrap().len(), 2);
    let x = RandomState::new(6).random(&[800, 800], [100, 100]);
    let sum = (&x + &x.t()).sum_axis(0).compute_on(&client).unwrap();
    assert_eq!(sum.shape(), &[800]);
    let held = client.scatter(vec![1i64, 2, 3]).unwrap();

    let (status, _, body) = http(&link, "GET", "/health", None);
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _, body) = http(&link, "GET", "/status", None);
    assert_eq!(status, 200);
    assert!(body.contains("id=\"task-stream\"") && body.contains("/static/uPlot.iife.min.js"));
    let (status, head, body) = http(&link, "GET", "/static/uPlot.iife.min.js", None);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/javascript") && body.contains("uPlot"));
    assert_eq!(http(&link, "GET", "/static/LICENSE-uPlot", None).0, 200);
    assert_eq!(http(&link, "GET", "/static/../Cargo.toml", None).0, 404);
    assert_eq!(http(&link, "GET", "/no/such/page", None).0, 404);

    // The snapshot sees the computation: finished tasks per prefix, a task stream, workers.
    let snapshot = get_json(&link, "/json/snapshot.json");
    let aggregates = &snapshot["aggregates"];
    assert_eq!(aggregates["workers"].as_array().unwrap().len(), 2);
    assert!(aggregates["totals"]["tasks_finished"].as_u64().unwrap() > 0, "{aggregates}");
    let prefixes = aggregates["prefixes"].as_array().unwrap();
    assert!(!prefixes.is_empty());
    for p in prefixes {
        let remaining: u64 = [1, 2, 3, 4].iter().map(|&i| p["counts"][i].as_u64().unwrap()).sum();
        assert_eq!(remaining, 0, "{p}");
    }
    let stream = aggregates["stream"].as_array().unwrap();
    assert!(!stream.is_empty());
    for e in stream {
        assert!(e["start_us"].as_u64().unwrap() > 0 && e["thread"].as_u64().unwrap() < 2, "{e}");
    }
    assert_eq!(snapshot["identity"]["dashboard"], link.as_str());

    let counts = get_json(&link, "/json/counts.json");
    for field in ["bytes", "clients", "cores", "erred", "idle", "memory", "processing", "tasks", "waiting", "workers"] {
        assert!(counts[field].is_u64(), "{field} in {counts}");
    }
    assert_eq!((counts["workers"].as_u64(), counts["cores"].as_u64()), (Some(2), Some(4)));
    assert!(counts["memory"].as_u64().unwrap() >= 3, "the scattered values are in memory: {counts}");

    let identity = get_json(&link, "/json/identity.json");
    assert_eq!(identity["type"], "Scheduler");
    assert_eq!(identity["address"], cluster.address().as_str());
    assert_eq!(identity["workers"].as_object().unwrap().len(), 2);

    let workers = get_json(&link, "/api/v1/get_workers");
    assert_eq!(workers["num_workers"], 2);
    let first = &workers["workers"][0];
    for field in ["id", "name", "address", "nthreads", "memory", "cpu", "processing", "status"] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }
    let target = get_json(&link, "/api/v1/adaptive_target");
    assert!(target["workers"].is_u64(), "{target}");

    // Pages rendered on the server.
    let (status, _, body) = http(&link, "GET", "/workers", None);
    assert_eq!(status, 200);
    assert_eq!(body.matches("class=\"worker-row\"").count(), 2);
    let id = first["id"].as_u64().unwrap();
    let (status, _, body) = http(&link, "GET", &format!("/info/worker/{id}"), None);
    assert!(status == 200 && body.contains("Recent log") && body.contains("joined"), "{body}");
    assert_eq!(http(&link, "GET", "/info/worker/9999", None).0, 404);
    assert_eq!(http(&link, "GET", "/info/worker/abc", None).0, 404);
    let key = held[0].key().to_string();
    let path = format!("/info/task/{}", key.replace('\'', "%27").replace(' ', "%20"));
    let (status, _, body) = http(&link, "GET", &path, None);
    assert!(status == 200 && body.contains("<dd id=\"state\">memory</dd>"), "{path}: {status} {body}");
    assert_eq!(http(&link, "GET", "/info/task/no-such-key", None).0, 404);

    // The graph: every known task with its state and dependencies, drawn by /graph.
    let (status, _, body) = http(&link, "GET", "/graph", None);
    assert!(status == 200 && body.contains("id=\"graph\"") && body.contains("/static/graph.js"), "{body}");
    assert_eq!(http(&link, "GET", "/static/graph.js", None).0, 200);
    let graph = get_json(&link, "/json/graph.json");
    assert_eq!(graph["cap"], 5000);
    let nodes = graph["nodes"].as_array().unwrap();
    assert_eq!(graph["tasks"].as_u64(), Some(nodes.len() as u64));
    let key = held[0].key().to_string();
    let node = nodes.iter().find(|n| n["key"] == key.as_str()).unwrap_or_else(|| panic!("{key} in {graph}"));
    assert_eq!(node["state"], "memory");
    for edge in graph["edges"].as_array().unwrap() {
        let (a, b) = (edge[0].as_u64().unwrap() as usize, edge[1].as_u64().unwrap() as usize);
        assert!(a < nodes.len() && b < nodes.len() && a != b, "{edge}");
    }
    // Above the cap the answer is only the count, for the page's note.
    let many = client.scatter((0..5_001i64).collect::<Vec<_>>()).unwrap();
    // The scheduler learns of scattered values from the workers' reports, a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    let graph = loop {
        let graph = get_json(&link, "/json/graph.json");
        if graph["tasks"].as_u64().unwrap() > 5000 || Instant::now() > deadline {
            break graph;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(graph["too_large"], true, "{graph}");
    assert!(graph["tasks"].as_u64().unwrap() > 5000 && graph.get("nodes").is_none(), "{graph}");
    drop(many);

    // Metrics: Dask's names under the kiln namespace, OpenMetrics text.
    let (status, head, text) = http(&link, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(head.contains("openmetrics-text"), "{head}");
    for needle in [
        "kiln_scheduler_tasks{state=\"memory\"}",
        "kiln_scheduler_workers{state=",
        "kiln_scheduler_tasks_compute_seconds_total{task_prefix_name=",
        "kiln_scheduler_tasks_output_bytes_total{task_prefix_name=",
        "kiln_scheduler_tick_duration_maximum_seconds",
        "kiln_worker_memory_bytes{worker=\"",
        "type=\"unmanaged\"",
        "kiln_worker_transfer_incoming_bytes_total",
        "kiln_worker_spill_bytes_total",
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    promtool_check(&text);

    // The live page keeps getting snapshots of the same shape.
    let data = next_snapshot(&mut page);
    assert_eq!(data["aggregates"]["workers"].as_array().unwrap().len(), 2);
    drop(page);

    // Bad API requests are refused with a reason.
    let (status, _, body) = http(&link, "POST", "/api/v1/retire_workers", Some("{\"workers\": [4242]}"));
    assert!(status == 404 && body.contains("unknown workers: 4242"), "{status} {body}");
    let (status, _, body) = http(&link, "POST", "/api/v1/retire_workers", Some("{\"workers\": [\"nobody\"]}"));
    assert!(status == 404 && body.contains("nobody"), "{status} {body}");
    let (status, _, body) = http(&link, "POST", "/api/v1/retire_workers", Some("{not json"));
    assert!(status == 400 && body.contains("malformed"), "{status} {body}");
    let (status, _, _) = http(&link, "POST", "/api/v1/retire_workers", Some("{\"hosts\": 1}"));
    assert_eq!(status, 400);
    let huge = format!("{{\"workers\": [\"{}\"]}}", "x".repeat(100_000));
    assert_eq!(http(&link, "POST", "/api/v1/retire_workers", Some(&huge)).0, 413);
    assert_eq!(http(&link, "GET", "/api/v1/retire_workers", None).0, 405);
    let (status, _, body) = http(&link, "POST", "/api/v1/retire_workers", Some("{\"workers\": [-1, true]}"));
    assert!(status == 404 && body.contains("unknown workers"), "{status} {body}");
    let (status, _, body) = http(&link, "POST", "/api/v1/retire_workers", Some("{\"workers\": []}"));
    assert!(status == 400 && body.contains("no workers"), "{status} {body}");
    for path in ["/api/v1/no_such_call", "/json/no_such.json", "/graph/extra", "/info/nothing", "/static/"] {
        assert_eq!(http(&link, "GET", path, None).0, 404, "{path}");
    }
    assert_eq!(http(&link, "POST", "/json/graph.json", Some("{}")).0, 405);

    // Retiring a real worker (by address) works and the cluster shrinks.
    let address = workers["workers"][1]["address"].as_str().unwrap().to_string();
    let (status, _, body) =
        http(&link, "POST", "/api/v1/retire_workers", Some(&format!("{{\"workers\": [\"{address}\"]}}")));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&address), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&link, "/api/v1/get_workers")["num_workers"] != 1 {
        assert!(Instant::now() < deadline, "the worker did not retire");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(held.len(), 3);
    drop(held);
}

/// Lints the metrics with `promtool check metrics` when it is installed.
fn promtool_check(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        println!("promtool is not installed; the metrics text is not linted");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dask_namespace_a_taken_port_and_no_dashboard() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = ServerConfig {
        dashboard: Some(DashboardConfig { address: format!("127.0.0.1:{port}"), namespace: "dask".into() }),
        ..ServerConfig::default()
    };
    let server = runtime.block_on(SchedulerServer::start("127.0.0.1:0", config)).unwrap();
    let notice = server.dashboard_notice().expect("the port was taken").to_string();
    assert!(notice.contains("already in use"), "{notice}");
    let link = server.dashboard_link().unwrap();
    assert!(!link.contains(&format!(":{port}/")), "{link}");
    let (status, _, text) = http(&link, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(text.contains("dask_scheduler_tasks{state=\"waiting\"} 0") && !text.contains("kiln_"), "{text}");

    let bad = ServerConfig {
        dashboard: Some(DashboardConfig { address: "127.0.0.1:0".into(), namespace: "9 lives".into() }),
        ..ServerConfig::default()
    };
    let error = runtime.block_on(SchedulerServer::start("127.0.0.1:0", bad)).err().expect("a bad namespace is refused");
    assert!(error.to_string().contains("namespace"), "{error}");

    let plain = runtime.block_on(SchedulerServer::start("127.0.0.1:0", ServerConfig::default())).unwrap();
    assert!(plain.dashboard_link().is_none());
    let off = LocalCluster::builder().workers(1).mode(WorkerMode::Threads).dashboard(false).start().unwrap();
    assert!(off.dashboard_link().is_none() && off.client().unwrap().dashboard_link().is_none());
    drop(taken);
}

/// The value of the first sample of `text` whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{prefix} missing from\n{text}"))
}

/// Each worker of a real LocalCluster serves its own `/metrics`: its tasks by state, memory,
/// values served and fetched, spills, event-loop turns and network bytes, in text promtool
/// accepts; other paths are 404.
#[test]
fn workers_serve_their_own_metrics() {
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(1)
        .mode(WorkerMode::Threads)
        .dashboard(false)
        .worker_metrics(true)
        .start()
        .unwrap();
    let client = cluster.client().unwrap();
    let x = RandomState::new(7).random(&[600, 600], [100, 100]);
    let sum = (&x + &x.t()).sum_axis(0).compute_on(&client).unwrap();
    assert_eq!(sum.shape(), &[600]);
    let held = client.scatter(vec![1i64, 2, 3, 4]).unwrap();

    let addresses = cluster.worker_metrics_addresses();
    assert_eq!(addresses.len(), 2);
    let (mut in_memory, mut served, mut fetched) = (0.0, 0.0, 0.0);
    for address in &addresses {
        let base = format!("http://{address}");
        let (status, head, text) = http(&base, "GET", "/metrics", None);
        assert_eq!(status, 200, "{text}");
        assert!(head.contains("openmetrics-text"), "{head}");
        assert_eq!(sample(&text, "kiln_worker_threads "), 1.0);
        for state in ["waiting", "ready", "executing", "flight"] {
            assert_eq!(sample(&text, &format!("kiln_worker_tasks{{state=\"{state}\"}} ")), 0.0, "{text}");
        }
        in_memory += sample(&text, "kiln_worker_tasks{state=\"memory\"} ");
        served += sample(&text, "kiln_worker_transfer_outgoing_count_total ");
        fetched += sample(&text, "kiln_worker_transfer_incoming_count_total ");
        assert!(sample(&text, "kiln_worker_memory_bytes{type=\"managed\"} ") > 0.0, "{text}");
        // At rest nothing is arriving or waiting to be fetched.
        for idle in ["in_flight_count", "in_flight_bytes", "queued_count"] {
            assert_eq!(sample(&text, &format!("kiln_worker_transfer_incoming_{idle} ")), 0.0, "{text}");
        }
        assert!(sample(&text, "kiln_worker_tick_count_total ") > 0.0, "{text}");
        assert_eq!(sample(&text, "kiln_worker_spill_count_total{activity=\"disk_write\"} "), 0.0);
        assert!(sample(&text, "kiln_worker_network_bytes_total{direction=\"read\"} ") > 0.0, "{text}");
        assert!(sample(&text, "kiln_worker_network_bytes_total{direction=\"write\"} ") > 0.0, "{text}");
        promtool_check(&text);
        assert_eq!(http(&base, "GET", "/health", None).2, "ok");
        assert_eq!(http(&base, "GET", "/status", None).0, 404);
        assert_eq!(http(&base, "POST", "/metrics", Some("{}")).0, 405);
    }
    assert!(in_memory >= 4.0, "the four scattered values are held: {in_memory}");
    // The client fetched the result from a worker, and every value a worker fetched, a peer
    // served.
    assert!(served >= 1.0 && fetched <= served, "served {served}, fetched {fetched}");
    drop(held);
}
