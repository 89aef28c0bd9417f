//! The pages: the live `/status` page is static HTML plus vendored scripts (compiled in);
//! the others are rendered on the server from a snapshot.

use std::fmt::Write;

use kiln_scheduler::TaskInfo;
use kiln_scheduler::aggregate::WorkerStats;

use crate::Snapshot;

pub(crate) const STATUS_HTML: &str = include_str!("../assets/status.html");
pub(crate) const GRAPH_HTML: &str = include_str!("../assets/graph.html");

/// A vendored file by name: its MIME type and bytes.
pub(crate) fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "dashboard.js" => ("text/javascript; charset=utf-8", include_str!("../assets/dashboard.js")),
        "graph.js" => ("text/javascript; charset=utf-8", include_str!("../assets/graph.js")),
        "dashboard.css" => ("text/css; charset=utf-8", include_str!("../assets/dashboard.css")),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", include_str!("../assets/uPlot.iife.min.js")),
        "uPlot.min.css" => ("text/css; charset=utf-8", include_str!("../assets/uPlot.min.css")),
        "LICENSE-uPlot" => ("text/plain; charset=utf-8", include_str!("../assets/LICENSE-uPlot")),
        _ => return None,
    })
}

/// Text made safe for HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a key for a link.
fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · kiln</title>\
         <link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head><body>\
         <nav><a href=\"/status\">Status</a> <a href=\"/workers\">Workers</a> <a href=\"/graph\">Graph</a> <a href=\"/metrics\">Metrics</a></nav>\
         <h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

pub(crate) fn not_found(message: &str) -> String {
    page("Not found", &format!("<p>{}</p>", escape(message)))
}

pub(crate) fn workers(s: &Snapshot) -> String {
    let now = s.aggregates.time_us;
    let mut rows = String::new();
    for w in &s.aggregates.workers {
        let load = s.loads.iter().find(|l| l.id == w.id);
        let _ = write!(
            rows,
            "<tr class=\"worker-row\"><td><a href=\"/info/worker/{id}\">{name}</a></td><td>{addr}</td><td>{threads}</td>\
             <td>{mem} / {limit}</td><td>{processing}</td><td>{held}</td><td>{cpu:.0} %</td>\
             <td>{read_rate}/s ({read})</td><td>{written_rate}/s ({written})</td><td>{seen:.1} s ago</td></tr>",
            id = w.id,
            name = escape(&w.name),
            addr = escape(&w.address),
            threads = w.nthreads,
            mem = bytes(w.process),
            limit = if w.memory_limit == 0 { "no limit".to_string() } else { bytes(w.memory_limit) },
            processing = load.map_or(0, |l| l.processing),
            held = load.map_or(0, |l| l.held),
            cpu = w.cpu_percent,
            read_rate = bytes(w.network_read_bps as u64),
            read = bytes(w.network_read_bytes),
            written_rate = bytes(w.network_written_bps as u64),
            written = bytes(w.network_written_bytes),
            seen = now.saturating_sub(w.last_seen_us) as f64 / 1e6,
        );
    }
    page(
        "Workers",
        &format!(
            "<table id=\"workers\"><thead><tr><th>name</th><th>address</th><th>threads</th><th>memory</th>\
             <th>processing</th><th>in memory</th><th>CPU</th><th>network in (total)</th><th>network out (total)</th>\
             <th>last seen</th></tr></thead><tbody>{rows}</tbody></table>"
        ),
    )
}

pub(crate) fn worker(s: &Snapshot, w: &WorkerStats, tasks: &(Vec<String>, Vec<String>)) -> String {
    let list = |keys: &[String]| -> String {
        keys.iter().map(|k| format!("<li><a href=\"/info/task/{}\">{}</a></li>", url_encode(k), escape(k))).collect()
    };
    let log: String = w.log.iter().map(|l| format!("<li>{}</li>", escape(l))).collect();
    let load = s.loads.iter().find(|l| l.id == w.id);
    page(
        &format!("Worker {} ({})", w.id, w.name),
        &format!(
            "<dl><dt>address</dt><dd>{addr}</dd><dt>threads</dt><dd>{threads}</dd>\
             <dt>memory</dt><dd>managed {m}, unmanaged {u}, spilled {sp}, limit {lim}</dd>\
             <dt>CPU</dt><dd>{cpu:.0} %</dd>\
             <dt>network</dt><dd>in {read_rate}/s ({read} total), out {written_rate}/s ({written} total)</dd>\
             <dt>tasks finished</dt><dd>{done}</dd><dt>tasks failed</dt><dd>{failed}</dd>\
             <dt>occupancy</dt><dd>{occ:.3} s per thread</dd><dt>status</dt><dd>{status}</dd></dl>\
             <h2>Processing</h2><ul id=\"processing\">{p}</ul><h2>In memory</h2><ul id=\"held\">{h}</ul>\
             <h2>Recent log</h2><ul id=\"log\">{log}</ul>",
            addr = escape(&w.address),
            threads = w.nthreads,
            m = bytes(w.managed),
            u = bytes(w.unmanaged()),
            sp = bytes(w.spilled),
            lim = if w.memory_limit == 0 { "none".to_string() } else { bytes(w.memory_limit) },
            cpu = w.cpu_percent,
            read_rate = bytes(w.network_read_bps as u64),
            read = bytes(w.network_read_bytes),
            written_rate = bytes(w.network_written_bps as u64),
            written = bytes(w.network_written_bytes),
            done = w.tasks_finished,
            failed = w.tasks_failed,
            occ = load.map_or(0.0, |l| l.occupancy_s),
            status = if w.retiring {
                "retiring"
            } else if w.paused {
                "paused"
            } else {
                "running"
            },
            p = list(&tasks.0),
            h = list(&tasks.1),
        ),
    )
}

pub(crate) fn task(info: &TaskInfo) -> String {
    let link = |k: &String| format!("<li><a href=\"/info/task/{}\">{}</a></li>", url_encode(k), escape(k));
    let deps: String = info.dependencies.iter().map(link).collect();
    let dependents: String = info.dependents.iter().map(link).collect();
    let holders: String =
        info.who_has.iter().map(|w| format!("<a href=\"/info/worker/{w}\">worker {w}</a> ")).collect();
    let exception = info
        .exception
        .as_ref()
        .map(|e| format!("<h2>Exception</h2><pre id=\"exception\">{}</pre>", escape(e)))
        .unwrap_or_default();
    page(
        &format!("Task {}", info.key),
        &format!(
            "<dl><dt>state</dt><dd id=\"state\">{state}</dd><dt>prefix</dt><dd>{prefix}</dd>\
             <dt>who has</dt><dd>{holders}</dd><dt>processing on</dt><dd>{on}</dd><dt>bytes</dt><dd>{nbytes}</dd></dl>\
             <h2>Dependencies ({dc})</h2><ul>{deps}</ul><h2>Dependents ({tc})</h2><ul>{dependents}</ul>{exception}",
            state = info.state,
            prefix = escape(&info.prefix),
            on = info.processing_on.map(|w| format!("worker {w}")).unwrap_or_else(|| "-".into()),
            nbytes = bytes(info.nbytes),
            dc = info.dependency_count,
            tc = info.dependent_count,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_sizes_read_well() {
        assert_eq!(escape("<a href='x'>&</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;");
        assert_eq!(url_encode("('x-1', 0)"), "%28%27x-1%27%2C%200%29");
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert!(asset("uPlot.iife.min.js").is_some() && asset("../Cargo.toml").is_none());
    }
}
