//! Performance reports of cluster work: a real `LocalCluster` (workers as threads, real TCP,
//! the scheduler's dashboard over HTTP) runs an array computation inside
//! `Client::performance_report`; the file must be self-contained and count the graph's tasks.

use std::collections::BTreeMap;

use kiln_array::random::RandomState;
use kiln_distributed::report::prefix_rows;
use kiln_distributed::{LocalCluster, WorkerMode};
use kiln_graph::Scheduler;
use kiln_graph::collection::graph_of;

#[test]
fn a_cluster_computation_gives_a_self_contained_report_that_counts_its_tasks() {
    let dir = std::env::temp_dir().join(format!("kiln-report-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.html");
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(2).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let x = RandomState::new(9).random(&[600, 600], [100, 100]);
    let y = (&x + &x.t()).sum_axis(0);
    let (graph, outputs) = graph_of(&y).unwrap();
    let values = client.performance_report(&path, || client.compute(&graph, &outputs).unwrap()).unwrap();
    assert_eq!(values.len(), outputs.len());

    let html = std::fs::read_to_string(&path).unwrap();
    let outside = kiln_dashboard::report::external_references(&html);
    assert!(outside.is_empty(), "the report refers to something outside it: {outside:?}");
    assert!(!html.contains("broke off"), "the live stream failed");
    assert_eq!(html.matches("<svg").count(), 3);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for id in graph.ids() {
        *expected.entry(graph.key(id).prefix().to_string()).or_insert(0) += 1;
    }
    let rows = prefix_rows(&html);
    let counted: BTreeMap<String, u64> = rows.iter().map(|(p, (n, _))| (p.clone(), *n)).collect();
    assert_eq!(counted, expected);
    assert!(html.contains(&format!("<tr><th>Tasks</th><td>{}</td></tr>", graph.len())));
    assert!(html.contains("<tr><th>Threads</th><td>4</td></tr>"));
    // Both workers' memory is drawn, and their threads are rows of the task stream.
    assert!(html.matches("(process)").count() >= 2, "worker memory series missing");
    // Results are measured (per-block partial sums of 100 f64 and their sums).
    for (prefix, (n, bytes)) in &rows {
        assert!(*bytes >= n * 800, "{prefix}: {rows:?}");
    }

    // A scheduler without a dashboard cannot record a task stream: a clear error.
    drop(client);
    drop(cluster);
    let quiet = LocalCluster::builder().workers(1).mode(WorkerMode::Threads).dashboard(false).start().unwrap();
    let client = quiet.client().unwrap();
    let err = client.performance_report(dir.join("none.html"), || ()).unwrap_err().to_string();
    assert!(err.contains("serves no dashboard"), "{err}");
    assert!(!dir.join("none.html").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
