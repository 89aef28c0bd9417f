//! `kiln scheduler` serves the dashboard and prints where; `--no-dashboard` serves none.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

mod support;
use support::Guard;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn banner(extra: &[&str]) -> (Guard, Vec<String>) {
    let mut child = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    lines.push(line.trim().to_string());
    // The banner is one write: what follows the first line is already in the pipe.
    line.clear();
    reader.read_line(&mut line).unwrap();
    lines.push(line.trim().to_string());
    (Guard(child), lines)
}

#[test]
fn the_scheduler_prints_its_dashboard_and_serves_it() {
    let (_guard, lines) = banner(&["--dashboard-address", "127.0.0.1:0", "--metrics-namespace", "dask"]);
    assert!(lines[0].starts_with("Scheduler at tcp://127.0.0.1:"), "{lines:?}");
    let link = lines[1].strip_prefix("Dashboard at ").unwrap_or_else(|| panic!("{lines:?}"));
    let host = link.trim_start_matches("http://").trim_end_matches("/status");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200") && response.contains("dask_scheduler_workers"), "{response}");
}

#[test]
fn no_dashboard_means_none() {
    let mut child = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("Scheduler at tcp://"), "{first}");
    // The banner is one write: stop the scheduler, and whatever else it printed is here.
    drop(Guard(child));
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
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
