//! Performance reports of cluster work ([`Client::performance_report`]).
//!
//! The scheduler records its task stream only while a live page watches, so the report opens
//! one: it reads the dashboard's `/events` stream on a thread of its own for the length of the
//! computation, merges the stream entries of every snapshot by number (as the live page does),
//! and takes each worker's process memory from each snapshot. The page is rendered by
//! [`kiln_dashboard::report`].

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_dashboard::report::{MemorySeries, ReportData, ReportError, TaskRecord};
use serde_json::Value as Json;

use super::Client;

/// How long the report waits for the dashboard's first snapshot, and for the last ones.
const WAIT: Duration = Duration::from_secs(20);
/// Snapshots the report waits for after the computation: a live snapshot carries the entries
/// of the last two publications, so the second one published after the end holds them all.
const SNAPSHOTS_AFTER: u64 = 2;

impl Client {
    /// Runs `computation` (typically work on this client) while recording the cluster's task
    /// stream and its workers' memory, then writes one self-contained HTML report to `path`
    /// and returns the computation's result (Dask's `performance_report`). Needs the
    /// scheduler's dashboard (it is what records the task stream); tasks of other clients
    /// that run meanwhile appear too.
    ///
    /// # Errors
    /// [`ReportError::Source`] when the scheduler has no dashboard or it cannot be read,
    /// [`ReportError::Write`] when the file cannot be written.
    pub fn performance_report<T>(
        &self,
        path: impl AsRef<Path>,
        computation: impl FnOnce() -> T,
    ) -> Result<T, ReportError> {
        let link = self.dashboard_link().ok_or_else(|| {
            ReportError::Source(format!("the scheduler at {} serves no dashboard", self.scheduler_address()))
        })?;
        let started = Instant::now();
        let started_us = unix_us();
        let watch = Watch::open(&link)?;
        let value = computation();
        let wall_s = started.elapsed().as_secs_f64();
        let collected = watch.finish();
        let data = collected.into_report(self.scheduler_address(), started_us, wall_s);
        data.write(path.as_ref())?;
        Ok(value)
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// What the live stream showed.
#[derive(Default)]
struct Collected {
    /// Snapshots read.
    snapshots: u64,
    /// Entries numbered below this were there before the report.
    base_seq: Option<u64>,
    /// Compute and error entries by number: (lane, prefix, start µs, duration µs, bytes, failed).
    entries: BTreeMap<u64, (String, String, u64, u64, u64, bool)>,
    /// Every entry number seen (any kind), to count the ones missed.
    seqs: Vec<u64>,
    /// Process memory per worker name: (µs since the epoch, bytes).
    memory: BTreeMap<String, Vec<(u64, u64)>>,
    /// Threads per worker id.
    threads: HashMap<String, u64>,
    /// Why reading stopped early.
    error: Option<String>,
}

impl Collected {
    fn add(&mut self, snapshot: &Json) {
        let a = &snapshot["aggregates"];
        let names: Vec<String> = a["prefixes"]
            .as_array()
            .map(|p| p.iter().map(|p| p["name"].as_str().unwrap_or("?").to_string()).collect())
            .unwrap_or_default();
        let mut worker_names: HashMap<String, String> = HashMap::new();
        let time_us = a["time_us"].as_u64().unwrap_or(0);
        for w in a["workers"].as_array().into_iter().flatten() {
            let id = w["id"].to_string();
            let name =
                w["name"].as_str().filter(|n| !n.is_empty()).map_or_else(|| format!("worker {id}"), String::from);
            self.threads.insert(id.clone(), w["nthreads"].as_u64().unwrap_or(0));
            self.memory.entry(name.clone()).or_default().push((time_us, w["process"].as_u64().unwrap_or(0)));
            worker_names.insert(id, name);
        }
        let stream = a["stream"].as_array().map(Vec::as_slice).unwrap_or_default();
        let last = stream.iter().filter_map(|e| e["seq"].as_u64()).max();
        let base = *self.base_seq.get_or_insert(last.map_or(0, |s| s + 1));
        for e in stream {
            let Some(seq) = e["seq"].as_u64() else { continue };
            if seq < base {
                continue;
            }
            self.seqs.push(seq);
            let failed = match e["kind"].as_str() {
                Some("compute") => false,
                Some("error") => true,
                _ => continue,
            };
            let id = e["worker"].to_string();
            let worker = worker_names.get(&id).cloned().unwrap_or_else(|| format!("worker {id}"));
            let lane = format!("{worker} / {}", e["thread"].as_u64().unwrap_or(0));
            let prefix = e["prefix"]
                .as_u64()
                .and_then(|i| names.get(i as usize).cloned())
                .unwrap_or_else(|| "(unknown)".to_string());
            let field = |k: &str| e[k].as_u64().unwrap_or(0);
            self.entries.insert(seq, (lane, prefix, field("start_us"), field("duration_us"), field("nbytes"), failed));
        }
        self.snapshots += 1;
    }

    fn into_report(mut self, scheduler: &str, started_us: u64, wall_s: f64) -> ReportData {
        // Clocks of the scheduler's machine and this one may differ: times count from the
        // earlier of the report's start and its first task.
        let t0 = self.entries.values().map(|e| e.2).min().map_or(started_us, |s| s.min(started_us));
        let secs = |us: u64| us.saturating_sub(t0) as f64 / 1e6;
        self.seqs.sort_unstable();
        self.seqs.dedup();
        let missed = match (self.seqs.first(), self.seqs.last()) {
            (Some(first), Some(last)) => (last - first + 1) - self.seqs.len() as u64,
            _ => 0,
        };
        let tasks = self
            .entries
            .into_values()
            .map(|(lane, prefix, start, duration, nbytes, failed)| TaskRecord {
                prefix,
                lane,
                start_s: secs(start),
                stop_s: secs(start + duration),
                nbytes,
                failed,
            })
            .collect();
        let memory = self
            .memory
            .into_iter()
            .map(|(name, points)| MemorySeries {
                name: format!("{name} (process)"),
                points: points.into_iter().map(|(t, b)| (secs(t), b)).collect(),
            })
            .collect();
        let mut title = "kiln performance report".to_string();
        if let Some(e) = &self.error {
            title.push_str(&format!(" (the live stream broke off: {e})"));
        }
        ReportData {
            title,
            scheduler: format!("cluster at {scheduler}"),
            started_us,
            wall_s,
            threads: self.threads.values().sum::<u64>() as usize,
            tasks,
            memory,
            tasks_not_shown: missed,
        }
    }
}

/// A live page held open by the report.
struct Watch {
    shared: Arc<(Mutex<Collected>, Condvar)>,
    socket: TcpStream,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    /// Connects to the dashboard's live stream and waits for its first snapshot, after which
    /// the scheduler records the task stream.
    fn open(link: &str) -> Result<Watch, ReportError> {
        let host = link.trim_start_matches("http://").split('/').next().unwrap_or_default().to_string();
        let fail = |e: std::io::Error| ReportError::Source(format!("dashboard at {host}: {e}"));
        let address = host
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| ReportError::Source(format!("dashboard address {host} resolves to nothing")))?;
        let mut socket = TcpStream::connect_timeout(&address, WAIT).map_err(fail)?;
        write!(socket, "GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n").map_err(fail)?;
        let reader = BufReader::new(socket.try_clone().map_err(fail)?);
        let shared = Arc::new((Mutex::new(Collected::default()), Condvar::new()));
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kiln-report-watch".into())
                .spawn(move || read_events(reader, &shared))
                .map_err(fail)?
        };
        let watch = Watch { shared, socket, thread };
        if !watch.wait_for(1) {
            let error = watch.lock().error.clone().unwrap_or_else(|| "no snapshot in 20 s".into());
            let _ = watch.socket.shutdown(Shutdown::Both);
            return Err(ReportError::Source(format!("dashboard at {host}: {error}")));
        }
        Ok(watch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `n` snapshots were read (false: the stream ended or the wait timed out).
    fn wait_for(&self, n: u64) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut c = self.lock();
        while c.snapshots < n && c.error.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self.shared.1.wait_timeout(c, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        c.snapshots >= n
    }

    /// Reads the snapshots published after the computation, then closes the page.
    fn finish(self) -> Collected {
        let have = self.lock().snapshots;
        if !self.wait_for(have + SNAPSHOTS_AFTER) {
            let mut c = self.lock();
            c.error.get_or_insert_with(|| "the last snapshots did not come in 20 s".into());
        }
        // Closing the socket ends the reader with an error of its own, which is no fault.
        let error = self.lock().error.clone();
        let _ = self.socket.shutdown(Shutdown::Both);
        let _ = self.thread.join();
        let mut collected = std::mem::take(&mut *self.shared.0.lock().unwrap_or_else(|p| p.into_inner()));
        collected.error = error;
        collected
    }
}

/// Reads server-sent events until the connection closes, folding each snapshot in.
fn read_events(mut reader: BufReader<TcpStream>, shared: &(Mutex<Collected>, Condvar)) {
    let mut line = String::new();
    let mut in_snapshot = false;
    let error = loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break "the dashboard closed the stream".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
        if line.starts_with("event: snapshot") {
            in_snapshot = true;
        } else if in_snapshot && let Some(data) = line.strip_prefix("data: ") {
            in_snapshot = false;
            match serde_json::from_str::<Json>(data.trim()) {
                Ok(snapshot) => {
                    shared.0.lock().unwrap_or_else(|p| p.into_inner()).add(&snapshot);
                    shared.1.notify_all();
                }
                Err(e) => break format!("a snapshot that is not JSON ({e})"),
            }
        }
    };
    let mut c = shared.0.lock().unwrap_or_else(|p| p.into_inner());
    c.error.get_or_insert(error);
    shared.1.notify_all();
}
