//! Performance reports of local work: a real array computation on the threaded scheduler,
//! recorded through the global hook, written to a real file, and read back.

use std::collections::BTreeMap;

use kiln_array::random::RandomState;
use kiln_dashboard::report::{ReportData, performance_report, prefix_rows};
use kiln_graph::collection::graph_of;
use kiln_local::LocalScheduler;

fn graph_prefixes(graph: &kiln_graph::Graph) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for id in graph.ids() {
        *counts.entry(graph.key(id).prefix().to_string()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_local_array_computation_gives_a_self_contained_report_that_counts_its_tasks() {
    let dir = std::env::temp_dir().join(format!("kiln-report-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.html");
    let x = RandomState::new(3).random(&[600, 600], [100, 100]);
    let y = (&x + &x.t()).sum_axis(0);
    let (graph, outputs) = graph_of(&y).unwrap();
    let values = performance_report(&path, || LocalScheduler::threads(2).run(&graph, &outputs).unwrap()).unwrap();
    assert_eq!(values.len(), outputs.len());

    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    // Self-contained: nothing to fetch, no scripts or stylesheets from elsewhere.
    let outside = kiln_dashboard::report::external_references(&html);
    assert!(outside.is_empty(), "the report refers to something outside it: {outside:?}");
    // Three charts, with titles and axis names.
    assert_eq!(html.matches("<svg").count(), 3);
    for text in ["Task stream", "time since start (s)", "Compute time per task prefix", "Memory over time", "thread 0"]
    {
        assert!(html.contains(text), "no {text:?} in the report");
    }
    // Every task of the graph ran once, under its prefix.
    let rows = prefix_rows(&html);
    let expected = graph_prefixes(&graph);
    let counted: BTreeMap<String, u64> = rows.iter().map(|(p, (n, _))| (p.clone(), *n)).collect();
    assert_eq!(counted, expected);
    assert!(html.contains(&format!("<tr><th>Tasks</th><td>{}</td></tr>", graph.len())));
    // Results are measured: the array is fused into per-block partial sums, each a vector of
    // 100 f64 (800 bytes), and so is every sum of them.
    for (prefix, (n, bytes)) in &rows {
        assert_eq!(*bytes, n * 800, "{prefix}: {rows:?}");
    }

    // Outside a report, runs record nothing: a second run leaves no trace in a new report.
    LocalScheduler::threads(2).run(&graph, &outputs).unwrap();
    let empty = dir.join("empty.html");
    performance_report(&empty, || ()).unwrap();
    let html = std::fs::read_to_string(&empty).unwrap();
    assert!(prefix_rows(&html).is_empty());
    assert!(html.contains("<tr><th>Tasks</th><td>0</td></tr>"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_tasks_and_hostile_names_are_shown_escaped() {
    let data = ReportData {
        title: "a <b>report</b>".into(),
        scheduler: "x".into(),
        started_us: 0,
        wall_s: 1.0,
        threads: 1,
        tasks: vec![kiln_dashboard::report::TaskRecord {
            prefix: "<script>".into(),
            lane: "thread 0".into(),
            start_s: 0.1,
            stop_s: 0.5,
            nbytes: 0,
            failed: true,
        }],
        memory: vec![],
        tasks_not_shown: 0,
    };
    let html = data.to_html().unwrap();
    assert!(!html.contains("<script>") && !html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("<tr><th>Failed tasks</th><td>1</td></tr>"));
    let missing = std::path::Path::new("/nonexistent-dir/report.html");
    let err = data.write(missing).unwrap_err().to_string();
    assert!(err.contains("/nonexistent-dir/report.html"), "{err}");
}
