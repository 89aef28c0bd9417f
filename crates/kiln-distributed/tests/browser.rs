//! The live `/status` page in a real headless Chromium while a `LocalCluster` computes: the
//! page's scripts run (vendored, offline), the task-stream canvas gets painted, a row per
//! worker appears and every progress bar reaches 100 %. A screenshot is saved under the target
//! directory (`kiln-dashboard-status.png`). The `/graph` page draws the running graph (or
//! says it is above its cap), and a performance report opens from its file with its charts.
//!
//! Skipped, with a message, when no Chromium is installed (`apt-get install chromium`; set
//! `KILN_CHROMIUM` to use another binary).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_array::random::RandomState;
use kiln_delayed::func1;
use kiln_distributed::{LocalCluster, WorkerMode};
use kiln_graph::{Collection, KernelRegistry};

/// Held open by the test, so that the computation is running (deterministically) while the
/// page is first loaded. Bounded, so a broken test cannot hang a worker forever.
static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn gated() -> kiln_delayed::Func1<i64, i64> {
    func1("gated", |x: &i64| {
        let (lock, changed) = &GATE;
        let open = lock.lock().unwrap();
        drop(changed.wait_timeout_while(open, Duration::from_secs(60), |open| !*open).unwrap());
        *x
    })
    .portable("test.browser.gated")
}

fn open_gate() {
    let (lock, changed) = &GATE;
    *lock.lock().unwrap() = true;
    changed.notify_all();
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Where test artifacts go: the cargo target directory.
fn artifacts() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir)
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=...`), killing it
/// if it takes longer than a minute; returns its standard output.
fn run_chromium(binary: &Path, profile: &Path, mode: &str, url: &str, budget_ms: u64) -> String {
    let _ = std::fs::remove_dir_all(profile);
    std::fs::create_dir_all(profile).unwrap();
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(mode)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The value of `attribute` on the element whose opening tag contains `marker`.
fn attribute(dom: &str, marker: &str, attribute: &str) -> Option<String> {
    let start = dom.find(marker)?;
    let tag_start = dom[..start].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let at = tag.find(&format!("{attribute}=\""))? + attribute.len() + 2;
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

fn get(link: &str, path: &str) -> String {
    use std::io::Write;
    let host = link.trim_start_matches("http://").trim_end_matches("/status");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// What the test reads off a dumped page: painted task-stream rectangles, worker rows, and the
/// progress bars' percentages.
fn inspect(dom: &str) -> (u64, usize, Vec<String>) {
    let painted = attribute(dom, "id=\"task-stream\"", "data-painted").and_then(|p| p.parse().ok()).unwrap_or(0);
    let rows = dom.matches("class=\"row worker-row\"").count();
    let percents = dom
        .match_indices("data-percent=\"")
        .map(|(i, m)| {
            let rest = &dom[i + m.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .collect();
    (painted, rows, percents)
}

#[test]
fn the_status_page_renders_a_running_computation_in_chromium() {
    let Some(binary) = chromium() else {
        println!("SKIPPED: no chromium binary found (apt-get install chromium, or set KILN_CHROMIUM)");
        return;
    };
    KernelRegistry::global().register_instance(gated().kernel());
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(2).mode(WorkerMode::Threads).start().unwrap();
    let link = cluster.dashboard_link().unwrap();
    let client = cluster.client().unwrap();
    let computing = std::thread::spawn(move || {
        // Thousands of array tasks, transfers between workers, and one task that waits for
        // the test to let it finish.
        let held = client.submit(gated().call(7)).unwrap();
        let x = RandomState::new(11).random(&[4000, 4000], [100, 100]);
        let y = (&x + &x.t()).sum_axis(1).sum();
        let total = y.compute_on(&client).unwrap();
        assert_eq!(held.result().unwrap(), 7);
        total
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts: serde_json::Value = serde_json::from_str(&get(&link, "/json/counts.json")).unwrap();
        if counts["processing"].as_u64().unwrap_or(0) > 0 || counts["memory"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the computation did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let dir = artifacts();
    let profile = dir.join("kiln-chromium-profile");
    let screenshot = dir.join("kiln-dashboard-status.png");
    let _ = std::fs::remove_file(&screenshot);
    // `?frames=N`: the page closes its live stream after N snapshots, so that the browser's
    // virtual clock (paused while a connection is open) runs out and it takes the picture.
    let live = format!("{link}?frames=6");
    run_chromium(&binary, &profile, &format!("--screenshot={}", screenshot.display()), &live, 2000);
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {} ({size} bytes)", screenshot.display());
    println!("screenshot of the status page: {}", screenshot.display());

    // While the gated task runs, the page shows it unfinished.
    let dom = run_chromium(&binary, &profile, "--dump-dom", &live, 2000);
    let (painted, rows, percents) = inspect(&dom);
    assert!(!computing.is_finished());
    assert_eq!(rows, 2, "a row per worker");
    assert!(percents.iter().any(|p| p != "100"), "the running task's bar is not full: {percents:?}");
    let _ = painted;

    // The graph page draws the running graph (or, above its cap, says why it does not).
    let dom =
        run_chromium(&binary, &profile, "--dump-dom", &format!("{}/graph", link.trim_end_matches("/status")), 2000);
    let tasks: u64 = attribute(&dom, "id=\"graph\"", "data-tasks").and_then(|t| t.parse().ok()).unwrap_or(0);
    let drawn: u64 = attribute(&dom, "id=\"graph\"", "data-drawn").and_then(|t| t.parse().ok()).unwrap_or(0);
    assert!(tasks > 0, "the graph page shows no tasks");
    if tasks <= 5000 {
        assert_eq!(drawn, tasks, "every task is drawn");
    } else {
        assert!(drawn == 0 && dom.contains("draws graphs of up to 5000 tasks"), "no note above the cap");
    }
    open_gate();

    // Reload until the page shows the finished computation.
    let mut last = String::new();
    let mut loads = 0;
    let finished = loop {
        let dom = run_chromium(&binary, &profile, "--dump-dom", &live, 2000);
        loads += 1;
        let (painted, rows, percents) = inspect(&dom);
        let done = computing.is_finished();
        if painted > 0 && rows == 2 && !percents.is_empty() && percents.iter().all(|p| p == "100") && done {
            break dom;
        }
        last = format!("painted {painted}, worker rows {rows}, progress {percents:?}, computation done {done}");
        assert!(loads < 15, "the page never showed the finished computation; last load: {last}");
    };
    assert!(finished.contains("data-frames=\"6\""), "the page did not get its updates over server-sent events");
    let total = computing.join().unwrap();
    assert!(total.iter().all(|v| v.is_finite()));
    let _ = last;

    // A performance report opens offline in the browser with its three charts drawn.
    let report = dir.join("kiln-performance-report.html");
    let client = cluster.client().unwrap();
    let x = RandomState::new(12).random(&[400, 400], [100, 100]);
    let sum = client.performance_report(&report, || (&x + &x.t()).sum_axis(0).compute_on(&client).unwrap()).unwrap();
    assert_eq!(sum.shape(), &[400]);
    let dom = run_chromium(&binary, &profile, "--dump-dom", &format!("file://{}", report.display()), 500);
    assert_eq!(dom.matches("<svg").count(), 3, "the report's charts are not in the rendered page");
    for text in ["Task stream", "Memory over time"] {
        assert!(dom.contains(text), "no {text:?} in the rendered report");
    }
    println!("performance report: {}", report.display());
    let _ = std::fs::remove_dir_all(&profile);
}
