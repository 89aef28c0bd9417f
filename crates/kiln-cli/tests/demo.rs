//! `kiln demo`, the README's first command, at a small size: it runs on a local cluster and on
//! threads, the two agree, the delayed loop matches its plain-loop answer, and its flags work.

use std::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn demo(args: &[&str]) -> String {
    let out = Command::new(KILN).arg("demo").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kiln demo {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The number printed after the last ": " on the first line containing `marker`.
fn value_after(stdout: &str, marker: &str) -> f64 {
    let line = stdout.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker:?} in\n{stdout}"));
    let tail = line.rsplit(": ").next().unwrap();
    let number = tail.split_whitespace().next().unwrap().trim_start_matches("total = ");
    number.parse().unwrap_or_else(|_| panic!("no number in {line:?}"))
}

#[test]
fn the_demo_agrees_on_a_cluster_and_on_threads() {
    let out =
        demo(&["--n", "1200", "--chunk", "300", "--side", "12", "--workers", "1", "--threads", "2", "--days", "16"]);
    assert!(out.contains("local cluster at tcp://"), "{out}");
    let on_cluster = value_after(&out, "on distributed(");
    let on_threads = value_after(&out, "computed on threads(2)");
    assert_eq!(on_cluster, on_threads, "{out}");
    // Uniform data: the standard deviation of x + x.T - mean tends to sqrt(1/6).
    assert!((on_threads - (1.0f64 / 6.0).sqrt()).abs() < 0.01, "{out}");
    assert!(out.contains("matches the plain-loop answer"), "{out}");
    // The dataframe part checks its own answers against row-by-row means; 16 files make the
    // group-by split out (hours come back in hash order).
    assert!(out.contains("read_csv('") && out.contains("2015-*-*.csv"), "{out}");
    assert!(out.contains("value.mean() in") && out.contains("24 hours"), "{out}");
    assert!(out.contains("384 hourly means, matches"), "{out}");
}

#[test]
fn without_workers_the_demo_skips_the_cluster_and_draws_the_graph() {
    let dot = std::env::temp_dir().join(format!("kiln-demo-{}.dot", std::process::id()));
    let out =
        demo(&["--n", "400", "--chunk", "100", "--side", "5", "--workers", "0", "--visualize", dot.to_str().unwrap()]);
    assert!(!out.contains("local cluster"), "{out}");
    let drawn = std::fs::read_to_string(&dot).unwrap();
    assert!(drawn.starts_with("digraph"), "{drawn}");
    std::fs::remove_file(&dot).unwrap();
}

#[test]
fn a_bad_flag_is_refused_with_a_message() {
    let out = Command::new(KILN).args(["demo", "--n", "many"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--n"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(KILN).args(["demo", "--chunk", "0", "--workers", "0"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--chunk must be positive"), "{stderr}");
}
