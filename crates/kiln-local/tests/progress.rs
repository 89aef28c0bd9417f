//! The progress bar, as a user sees it on stderr. The test runs itself again as a child process
//! (with stderr piped, so not a terminal) and reads what the child drew.

use std::process::Command;
use std::time::Duration;

use kiln_graph::GraphBuilder;
use kiln_graph::kernel::func1;
use kiln_local::{LocalScheduler, Progress};

const CHILD: &str = "KILN_PROGRESS_TEST_CHILD";

/// In the child: a run of about a second (longer than the bar's half-second delay).
fn slow_run(progress: Progress) {
    let mut b = GraphBuilder::new();
    let nap = std::sync::Arc::new(func1("nap", |x: &i64| {
        std::thread::sleep(Duration::from_millis(25));
        *x
    }));
    let outs: Vec<_> = (0..40i64)
        .map(|i| {
            b.add(kiln_graph::Key::with_index("nap", [i as u32]), nap.clone(), [kiln_graph::Arg::literal(i)]).unwrap()
        })
        .collect();
    let g = b.build().unwrap();
    LocalScheduler::threads(1).with_progress(progress).run(&g, &outs).unwrap();
}

fn stderr_of_child(mode: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_draws", "--nocapture", "--test-threads", "1"])
        .env(CHILD, mode)
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn child_draws() {
    match std::env::var(CHILD).as_deref() {
        Ok("always") => slow_run(Progress::Always),
        Ok("never") => slow_run(Progress::Never),
        Ok("auto") => slow_run(Progress::Auto),
        _ => {} // run directly by the harness: nothing to do
    }
}

#[test]
fn a_forced_bar_draws_on_stderr_even_when_it_is_not_a_terminal() {
    let drawn = stderr_of_child("always");
    assert!(drawn.contains("/40 tasks"), "no progress bar on stderr:\n{drawn}");
    assert!(drawn.contains("40/40 tasks"), "the bar does not end at the total:\n{drawn}");
}

#[test]
fn the_bar_ends_with_the_peak_of_held_memory() {
    let drawn = stderr_of_child("always");
    let last = drawn.lines().rev().find(|l| l.contains("tasks")).unwrap_or_default();
    // Forty i64 results held to the end, 8 bytes each as their codec measures them.
    assert!(last.contains("40/40 tasks") && last.contains("; peak held 320 B of a "), "{drawn}");
}

#[test]
fn the_automatic_bar_stays_quiet_off_a_terminal_and_never_means_never() {
    for mode in ["auto", "never"] {
        let drawn = stderr_of_child(mode);
        assert!(!drawn.contains("tasks"), "{mode}: a bar was drawn off a terminal:\n{drawn}");
    }
}
