//! Peers that are not kiln, or kiln gone wrong, against real `kiln scheduler` and `kiln worker`
//! processes (issue 10, items 5 and 9, and the `Put` refusal): big frames from strangers, silent
//! hellos, idle sockets under a small file-descriptor limit, values over the frame limit, and a
//! raw `Put` from a peer the scheduler never told about the worker.
//!
//! Every process here, this one included, runs with the same lowered limits (the `KILN_*`
//! variables are the real configuration knobs), so the tests stay fast and small.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::delayed::func1;
use kiln_distributed::Client;
use kiln_distributed::comm::{self, Limits};
use kiln_protocol::messages::{ClientToScheduler, PeerRequest, WorkerToScheduler, WriteToken};
use kiln_protocol::{Hello, Role, encode_header, encode_hello, encode_packet, packet_prefix};

mod support;
use support::Guard;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const MAX_FRAME: usize = 4 << 20;
const MAX_PACKET: usize = 8 << 20;

/// The limits of every process in these tests.
const ENV: [(&str, &str); 4] = [
    ("KILN_MAX_FRAME", "4194304"),
    ("KILN_MAX_PACKET", "8388608"),
    ("KILN_REGISTER_TIMEOUT", "1"),
    ("KILN_MAX_UNREGISTERED", "16"),
];

fn init() {
    let limits = Limits {
        max_frame: MAX_FRAME,
        max_packet: MAX_PACKET,
        register_timeout: Duration::from_secs(1),
        max_unregistered: 16,
        ..Limits::default()
    };
    comm::set_limits(limits).expect("every test sets the same limits");
    kiln::register_builtins();
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-hostile-{}-{name}.log", std::process::id()))
}

/// A `kiln scheduler` whose log goes to `log`; `fd_limit` runs it under `ulimit -n`.
fn start_scheduler(log: &Path, fd_limit: Option<u32>) -> (Guard, String) {
    let mut command = match fd_limit {
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" scheduler --host 127.0.0.1 --port 0"), KILN]);
            c
        }
        None => {
            let mut c = Command::new(KILN);
            c.args(["scheduler", "--host", "127.0.0.1", "--port", "0"]);
            c
        }
    };
    let mut child = command
        .envs(ENV)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    // The log goes to stdout after the address line: keep copying it to the log file.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut file);
    });
    let address = line.trim().strip_prefix("Scheduler at tcp://").unwrap_or_else(|| panic!("unexpected: {line}"));
    (Guard(child), address.to_string())
}

fn start_worker(scheduler: &str, log: &Path) -> Guard {
    Guard(
        Command::new(KILN)
            .args(["worker", scheduler, "--nthreads", "1", "--name", "w"])
            .envs(ENV)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits (up to a generous bound, for a hang) until the log has a line containing every part.
fn wait_for_log(log: &Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no log line with {parts:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Connects and says hello in `role`, reading the listener's reply.
fn hello(address: &str, role: Role) -> TcpStream {
    let mut s = TcpStream::connect(address).unwrap();
    s.write_all(&encode_hello(&Hello::new(role, "hostile"))).unwrap();
    let mut reply = [0u8; 11];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[6], 0, "the hello was accepted");
    s
}

fn packet(header: Vec<u8>, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_packet(&header, frames, &mut out);
    out
}

/// Announces three 1 GiB frames and streams zeros after them until the listener drops the
/// connection; fails as soon as the process at `pid` has grown by more than 512 MB.
fn flood(mut s: TcpStream, pid: u32) {
    let before = peak_rss(pid);
    let gib = 1usize << 30;
    s.write_all(&packet_prefix(8, [gib, gib, gib].into_iter())).unwrap();
    let chunk = vec![0u8; 1 << 20];
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sent = 0usize;
    let dropped = loop {
        if s.write_all(&chunk).is_err() {
            break true;
        }
        sent += chunk.len();
        if sent.is_multiple_of(64 << 20) {
            let grown = peak_rss(pid).saturating_sub(before);
            assert!(grown < 512 << 20, "the listener grew by {grown} bytes after {sent} bytes of announced frames");
        }
        if sent >= 3 * gib + 8 {
            break false;
        }
    };
    assert!(dropped, "the listener read 3 GiB of frames from a stranger");
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(grown < 512 << 20, "the listener grew by {grown} bytes");
}

#[test]
fn big_frames_from_strangers_and_clients_do_not_grow_the_scheduler_and_are_logged() {
    init();
    let log = log_path("flood");
    let (scheduler, address) = start_scheduler(&log, None);
    let pid = scheduler.0.id();

    // A worker that never registered: limited to small frames.
    let s = hello(&address, Role::Worker);
    let port = s.local_addr().unwrap().port().to_string();
    flood(s, pid);
    let line = wait_for_log(&log, &["dropped connection from", &port, "exceeds the maximum"]);
    assert!(line.contains("65536"), "{line}");

    // A registered client: frames up to the (lowered) frame limit, and no further.
    let mut s = hello(&address, Role::Client);
    s.write_all(&packet(encode_header(&vec![ClientToScheduler::Register { name: "c".into() }]).unwrap(), &[])).unwrap();
    let port = s.local_addr().unwrap().port().to_string();
    flood(s, pid);
    let line = wait_for_log(&log, &["dropping the connection", &port, "exceeds the maximum"]);
    assert!(line.contains(&MAX_FRAME.to_string()), "{line}");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_hello_without_registration_is_dropped_after_the_deadline() {
    init();
    let log = log_path("silent");
    let (_scheduler, address) = start_scheduler(&log, None);
    let mut s = hello(&address, Role::Worker);
    let port = s.local_addr().unwrap().port().to_string();
    // The scheduler closes the connection; the read timeout only guards against a hang.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(s.read(&mut byte).expect("closed, not timed out"), 0);
    wait_for_log(&log, &["dropped connection from", &port, "did not register within 1s"]);
    let _ = std::fs::remove_file(&log);
}

/// The demo's sum (`kiln worker` registers it under this id).
fn sum(v: impl kiln::delayed::IntoArg<Vec<i64>>) -> kiln::delayed::Delayed<i64> {
    func1("sum", |v: &Vec<i64>| v.iter().sum::<i64>()).portable("kiln.demo.sum").call(v)
}

#[test]
fn idle_strangers_do_not_lock_real_clients_out_under_a_small_fd_limit() {
    init();
    let log = log_path("idle");
    let wlog = log_path("idle-worker");
    let (_scheduler, address) = start_scheduler(&log, Some(64));
    // 150 idle sockets: silent, hello as a worker, hello as a client; none registers.
    let mut idle = Vec::new();
    for i in 0..150 {
        let mut s = TcpStream::connect(&address).unwrap();
        match i % 3 {
            0 => {}
            1 => s.write_all(&encode_hello(&Hello::new(Role::Worker, "idle"))).unwrap(),
            _ => s.write_all(&encode_hello(&Hello::new(Role::Client, "idle"))).unwrap(),
        }
        idle.push(s);
    }
    let _worker = start_worker(&address, &wlog);
    let client = Client::connect(&address).expect("a real client gets in");
    client.wait_for_workers(1, Duration::from_secs(30)).expect("a real worker gets in");
    let total = client.submit(sum(vec![1i64, 2, 3, 4])).unwrap().result().unwrap();
    assert_eq!(total, 10);
    wait_for_log(&log, &["dropped connection from", "waiting to register"]);
    drop(idle);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&wlog);
}

#[test]
fn values_over_the_frame_limit_are_refused_by_the_client_with_what_to_do() {
    init();
    let log = log_path("toolarge");
    let wlog = log_path("toolarge-worker");
    let (_scheduler, address) = start_scheduler(&log, None);
    let _worker = start_worker(&address, &wlog);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();

    let err = client.scatter(vec![vec![0i64; 1_000_000]]).map(|_| ()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, kiln::ComputeError::OverFrameLimit { size: 8_000_000, .. }), "{err:?}");
    for part in ["8.0 MB", "frame limit of 4.2 MB", "scatter it in smaller pieces", "KILN_MAX_FRAME"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    let err = client.submit(sum(vec![0i64; 1_000_000])).map(|_| ()).unwrap_err();
    assert!(matches!(err, kiln::ComputeError::OverFrameLimit { .. }), "{err:?}");
    assert!(err.to_string().contains("literal input 0"), "{err}");

    // Smaller values still travel, and the connection is still up.
    let small = client.scatter(vec![vec![5i64; 1000]]).unwrap();
    assert_eq!(client.submit(sum(&small[0])).unwrap().result().unwrap(), 5000);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&wlog);
}

#[test]
fn a_put_from_a_peer_the_scheduler_did_not_introduce_is_refused() {
    init();
    let log = log_path("put");
    let wlog = log_path("put-worker");
    let (_scheduler, address) = start_scheduler(&log, None);
    let _worker = start_worker(&address, &wlog);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let data = client.scatter(vec![vec![1i64, 2, 3]]).unwrap();
    let worker = client.workers().remove(0);

    // A well-formed Put of the same key with other data, straight to the data port.
    let mut s = hello(&worker.address, Role::Peer);
    let port = s.local_addr().unwrap().port().to_string();
    let value = kiln::Value::new(vec![100i64]);
    let (values, frames) =
        comm::values_to_wire([(data[0].key().clone(), value)], kiln::graph::CodecRegistry::global()).unwrap();
    let frames: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    s.write_all(&packet(encode_header(&vec![PeerRequest::Put { request: 1, values }]).unwrap(), &frames)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    wait_for_log(&wlog, &["dropped connection from", &port, "refused a Put"]);

    assert_eq!(client.submit(sum(&data[0])).unwrap().result().unwrap(), 6, "the value was overwritten");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&wlog);
}

#[test]
fn big_frames_from_a_stranger_on_a_data_port_do_not_grow_the_worker() {
    init();
    let log = log_path("wflood");
    let wlog = log_path("wflood-worker");
    let (_scheduler, address) = start_scheduler(&log, None);
    let worker = start_worker(&address, &wlog);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let data_port = client.workers().remove(0).address;

    let s = hello(&data_port, Role::Peer);
    let port = s.local_addr().unwrap().port().to_string();
    flood(s, worker.0.id());
    wait_for_log(&wlog, &["dropped connection from", &port, "exceeds the maximum of 65536"]);
    // The worker still serves its real peers.
    assert_eq!(client.submit(sum(vec![1i64, 2])).unwrap().result().unwrap(), 3);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&wlog);
}

#[test]
fn a_scatter_to_a_worker_whose_data_port_is_gone_goes_to_another_worker() {
    init();
    let log = log_path("scatter-gone");
    let (_scheduler, address) = start_scheduler(&log, None);
    let _worker = start_worker(&address, &log_path("scatter-gone-worker"));
    // A worker still registered whose data port is gone (as one killed or cut off a moment ago
    // looks until the scheduler notices): a port bound and released at once.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let register = WorkerToScheduler::Register {
        address: gone,
        name: "gone".into(),
        nthreads: 1,
        memory_limit: 0,
        write_token: WriteToken(7),
    };
    let mut fake = hello(&address, Role::Worker);
    fake.write_all(&packet(encode_header(&vec![register]).unwrap(), &[])).unwrap();
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    // Half the values are meant for the gone worker: they go to the other one.
    let items: Vec<Vec<i64>> = (0..10).map(|i| vec![i; 3]).collect();
    let futures = client.scatter(items.clone()).unwrap();
    assert_eq!(client.gather(&futures).unwrap(), items);
    let real = client.workers().into_iter().find(|w| w.name == "w").unwrap().id;
    let keys: Vec<kiln::Key> = futures.iter().map(|f| f.key().clone()).collect();
    assert!(client.who_has(&keys).unwrap().iter().all(|h| h == &vec![real]), "a value is listed on the gone worker");
    drop(fake);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log_path("scatter-gone-worker"));
}
