//! What the dashboard costs the scheduler (issue 15): the distributed trivial-task benchmark
//! (`distributed_overhead`'s graph: n `inc` tasks feeding an 8-ary tree of sums) on two
//! `LocalCluster`s of worker processes, one without a dashboard and one whose dashboard serves
//! ten live pages (ten server-sent-event clients reading every snapshot). Runs alternate
//! between the two clusters after one warm-up each, and which one goes first alternates from
//! one repetition to the next (off-on, on-off, ...), so drift in the machine's load and any
//! cost of following the other cluster's run hit both; medians are compared. The bar:
//! throughput with ten pages open within 5 % of the dashboard off. `--control` serves no
//! dashboard on either cluster (an A/A run: the noise floor of the comparison). `--browser`
//! opens the pages in headless Chromium instead (one browser process per page, each loading
//! `/status` with its scripts and canvases, as `bench/dask_dashboard_overhead.py` does for
//! Dask's Bokeh pages): the browsers then also compete for the cores, in both conditions.
//!
//! `cargo run --release -p kiln-bench --bin dashboard_overhead -- [--n 100000] [--runs 5]
//! [--workers 2] [--clients 10] [--control] [--browser]`

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiln_bench::{arg, median};
use kiln_distributed::{LocalCluster, run_worker_if_requested};
use kiln_graph::{KernelRegistry, Scheduler};

/// A live page: reads the event stream until told to stop, counting snapshots and bytes.
fn sse_client(
    link: &str,
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let host = link.trim_start_matches("http://").trim_end_matches("/status").to_string();
    std::thread::Builder::new()
        .name("sse-page".into())
        .spawn(move || {
            let mut stream = TcpStream::connect(&host).expect("the dashboard accepts connections");
            stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            write!(stream, "GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while !stop.load(Ordering::Relaxed) {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if line.starts_with("event: snapshot") {
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        })
        .expect("a page thread starts")
}

/// The first Chromium on `PATH` (Debian's `chromium`).
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Established TCP connections whose local port is `port` (IPv4 and IPv6), from `/proc/net`.
fn connections_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port =
                fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// `pages` headless Chromium processes showing `link`, each with its own profile directory,
/// once every one holds a connection to the dashboard (and a few seconds more for the first
/// render). Killed (with their profiles removed) on drop.
struct BrowserPages {
    children: Vec<std::process::Child>,
    profiles: Vec<std::path::PathBuf>,
}

impl BrowserPages {
    fn open(link: &str, pages: usize) -> Result<BrowserPages, Box<dyn std::error::Error>> {
        let binary = chromium().ok_or("--browser: no Chromium on PATH (Debian: apt-get install chromium)")?;
        let port: u16 = link
            .trim_start_matches("http://")
            .split('/')
            .next()
            .and_then(|host| host.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in the dashboard link {link}"))?;
        let mut opened = BrowserPages { children: Vec::new(), profiles: Vec::new() };
        for i in 0..pages {
            let profile = std::env::temp_dir().join(format!("kiln-dash-page-{}-{i}", std::process::id()));
            let child = std::process::Command::new(&binary)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("--window-size=1600,1000")
                .arg(link)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                // Its own process group, so that the browser's helper processes go with it.
                .process_group(0)
                .spawn()?;
            opened.children.push(child);
            opened.profiles.push(profile);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while connections_to(port) < pages {
            if Instant::now() > deadline {
                return Err(format!("only {} of {pages} pages connected within 120 s", connections_to(port)).into());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(5));
        println!("{pages} Chromium pages open on {link} ({} connections to the dashboard)", connections_to(port));
        Ok(opened)
    }
}

impl Drop for BrowserPages {
    fn drop(&mut self) {
        for child in &mut self.children {
            // The group's id is the browser's pid; `kill -KILL -pgid` reaches its renderers too.
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
        }
        for profile in &self.profiles {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// CPU seconds (from `schedstat`) of this process's threads named `kiln-cluster*`: the two
/// clusters' runtimes, where the schedulers (and the dashboard) run. Wall time on a shared
/// machine swings with others' load; the scheduler's CPU per task does much less.
fn scheduler_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut total = 0.0;
    for entry in dir.flatten() {
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !name.starts_with("kiln-cluster") {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e9;
    }
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (inc, add) = kiln_bench::portable_foundation_kernels();
    KernelRegistry::global().register_instance(inc.clone());
    KernelRegistry::global().register_instance(add.clone());
    run_worker_if_requested();

    let n: usize = arg("--n", 100_000);
    let runs: usize = arg("--runs", 5);
    let workers: usize = arg("--workers", 2);
    let clients: usize = arg("--clients", 10);
    let control = std::env::args().any(|a| a == "--control");
    let browser = std::env::args().any(|a| a == "--browser");
    let exe = std::env::current_exe()?;
    let start = |dashboard: bool| {
        LocalCluster::builder().workers(workers).threads_per_worker(1).binary(exe.clone()).dashboard(dashboard).start()
    };
    let off = start(false)?;
    let on = start(!control)?;
    let link = on.dashboard_link();
    match &link {
        Some(link) => println!(
            "clusters: {workers} worker processes x 1 thread each; dashboard at {link} with {clients} live pages"
        ),
        None => println!("clusters: {workers} worker processes x 1 thread each; control run, no dashboard on either"),
    }
    let (off_client, on_client) = (off.client()?, on.client()?);

    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let pages: Vec<_> = match &link {
        Some(link) if !browser => {
            (0..clients).map(|_| sse_client(link, stop.clone(), events.clone(), bytes.clone())).collect()
        }
        _ => Vec::new(),
    };
    let browser_pages = match &link {
        Some(link) if browser => Some(BrowserPages::open(link, clients)?),
        _ => None,
    };

    let (graph, root) = kiln_bench::foundation_graph(n, 8, &inc, &add);
    let tasks = graph.len();
    let (mut off_s, mut on_s) = (Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    let (mut on_events, mut on_wall) = (0u64, 0.0f64);
    // Run 0 warms both clusters up and is dropped.
    for rep in 0..=runs {
        let order = if rep % 2 == 0 {
            [("off", &off_client), ("on", &on_client)]
        } else {
            [("on", &on_client), ("off", &off_client)]
        };
        for (name, client) in order {
            let before = events.load(Ordering::Relaxed);
            let (t, cpu0) = (Instant::now(), scheduler_cpu());
            let out = Scheduler::compute(client, &graph, &[root])?;
            let secs = t.elapsed().as_secs_f64();
            let cpu_us = (scheduler_cpu() - cpu0) / tasks as f64 * 1e6;
            let got = events.load(Ordering::Relaxed) - before;
            std::hint::black_box(out);
            println!(
                "  {} {name}: {secs:.3} s = {:.0} tasks/s, scheduler CPU {cpu_us:.2} us/task{}",
                if rep == 0 { "warm-up".to_string() } else { format!("run {rep}") },
                tasks as f64 / secs,
                if name == "on" {
                    format!(" ({got} snapshots delivered to the {clients} pages)")
                } else {
                    String::new()
                }
            );
            if rep > 0 {
                if name == "off" {
                    off_s.push(secs);
                    off_cpu.push(cpu_us);
                } else {
                    on_s.push(secs);
                    on_cpu.push(cpu_us);
                    on_events += got;
                    on_wall += secs;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(browser_pages);
    for page in pages {
        let _ = page.join();
    }
    let total_events = events.load(Ordering::Relaxed);
    let total_bytes = bytes.load(Ordering::Relaxed);
    drop((off_client, on_client));
    off.close();
    on.close();

    let off_tps = tasks as f64 / median(&off_s);
    let on_tps = tasks as f64 / median(&on_s);
    let ratio = on_tps / off_tps;
    let met = ratio >= 0.95;
    let (off_cpu, on_cpu) = (median(&off_cpu), median(&on_cpu));
    let cpu_ratio = on_cpu / off_cpu;
    let per_page_hz = on_events as f64 / clients.max(1) as f64 / on_wall.max(1e-9);
    println!(
        "dashboard off: {off_tps:.0} tasks/s; on with {clients} live pages: {on_tps:.0} tasks/s; ratio {ratio:.3} \
         (bar >= 0.95: {}); each page got {per_page_hz:.1} snapshots/s while computing; {total_events} snapshots, \
         {:.1} MB sent in all",
        if met { "met" } else { "MISSED" },
        total_bytes as f64 / 1e6
    );
    println!(
        "scheduler runtime CPU per task (median): off {off_cpu:.2} us, on {on_cpu:.2} us ({:+.1} %)",
        (cpu_ratio - 1.0) * 100.0
    );
    println!(
        "RESULT tasks={tasks} workers={workers} runs={runs} sse_clients={clients} off_tasks_per_s={off_tps:.0} \
         on_tasks_per_s={on_tps:.0} ratio={ratio:.3} snapshots_per_page_per_s={per_page_hz:.2} sse_events={total_events} \
         sse_bytes={total_bytes} off_sched_cpu_us_per_task={off_cpu:.2} on_sched_cpu_us_per_task={on_cpu:.2} \
         sched_cpu_ratio={cpu_ratio:.3} within_5pct={met} control={control} browser={browser}"
    );
    Ok(())
}
