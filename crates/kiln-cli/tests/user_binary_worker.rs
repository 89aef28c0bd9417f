//! The README's promise for workers on other machines: a user's own program, made a worker by
//! `run_worker_if_requested`, takes `kiln worker`'s flags and advertises an address other
//! machines reach. The worker runs in its own network namespace (another host, as far as the
//! network is concerned) with a non-loopback address; the client and the scheduler fetch its
//! results from there. Needs root for the namespace: as root it runs or fails, otherwise it says
//! loudly that it skipped.
//!
//! This file is its own test program (`harness = false`): started as `<it> worker ADDR ...`, it
//! is the worker.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln::delayed::{Func1, Func2, func1, func2};
use kiln::graph::KernelRegistry;
use kiln_distributed::{Client, SchedulerServer, ServerConfig, run_worker_if_requested};

mod support;
use support::{Guard, Netns, effective_uid};

fn triple() -> Func1<i64, i64> {
    func1("triple", |x: &i64| 3 * x).portable("test.user.triple")
}
fn add() -> Func2<i64, i64, i64> {
    func2("add", |a: &i64, b: &i64| a + b).portable("test.user.add")
}

fn main() {
    kiln::register_builtins();
    KernelRegistry::global().register_instance(triple().kernel());
    KernelRegistry::global().register_instance(add().kernel());
    run_worker_if_requested();

    // A bad flag is refused with the same message `kiln worker` gives.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["worker", "tcp://127.0.0.1:1", "--nthreads", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--nthreads must be at least 1"), "{stderr}");
    let out = Command::new(std::env::current_exe().unwrap()).args(["worker", "--memory-limit"]).output().unwrap();
    assert!(!out.status.success());

    let tag = std::process::id() % 10_000;
    let Some(ns) = Netns::create(214, tag) else {
        assert!(effective_uid() != Some(0), "running as root but cannot create a network namespace (`ip netns add`)");
        eprintln!("\n*** SKIPPED user_binary_worker: needs root for `ip netns` ***\n");
        return;
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = runtime.block_on(SchedulerServer::start("0.0.0.0:0", ServerConfig::default())).unwrap();
    let port = server.address().port();
    let scheduler = format!("tcp://{}:{port}", ns.host_ip);

    // The user's binary as a worker inside the namespace, with kiln worker's flags and defaults
    // (all interfaces; the advertised address is the one the scheduler sees).
    let _inside = Guard(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(std::env::current_exe().unwrap())
            .args(["worker", &scheduler, "--nthreads", "1", "--memory-limit", "256MiB", "--name", "inside"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::connect(&format!("127.0.0.1:{port}")).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let inside = client.workers().into_iter().find(|w| w.name == "inside").expect("the inside worker registered");
    assert!(
        inside.address.starts_with(&format!("{}:", ns.ns_ip)),
        "the worker advertises {}, not its address {} on the link",
        inside.address,
        ns.ns_ip
    );
    assert_eq!(inside.memory_limit, 256 << 20, "--memory-limit 256MiB");

    // Its user-registered function runs there, and the client fetches the result across the link.
    let tripled = client.submit(triple().call(14)).unwrap();
    assert_eq!(tripled.result().unwrap(), 42);
    assert_eq!(client.who_has(std::slice::from_ref(tripled.key())).unwrap()[0], vec![inside.id]);

    // A second worker on this host must fetch the inside worker's result peer to peer.
    let _outside = Guard(
        Command::new(std::env::current_exe().unwrap())
            .args(["worker", &scheduler, "--nthreads", "1", "--name", "outside", "--host", &ns.host_ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    client.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    let outside = client.workers().into_iter().find(|w| w.name == "outside").expect("the outside worker registered");
    let scattered = client.scatter(vec![1000i64, 2000]).unwrap();
    let holders = client.who_has(&[scattered[0].key().clone(), scattered[1].key().clone()]).unwrap();
    assert!(holders.iter().any(|h| h.contains(&outside.id)), "round-robin scatter reached the outside worker");
    // Each sum needs the inside result and an outside value: whichever worker runs it fetches
    // one input across the link.
    let sums: Vec<_> = scattered.iter().map(|s| client.submit(add().call(&tripled, s)).unwrap()).collect();
    assert_eq!(client.gather(&sums).unwrap(), vec![1042, 2042]);
    drop(client);
    server.stop("test over");
    eprintln!("user binary worker at {} served results across the link", inside.address);
}
