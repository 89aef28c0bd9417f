//! The Kubernetes manifests (`deploy/kubernetes`): they render with `kubectl kustomize` to the
//! golden `rendered.yaml` (`KILN_BLESS=1` rewrites it; without kubectl the sources' key fields
//! are checked instead), and the containers' commands, as written in the manifests, start a
//! real scheduler and a real worker whose limits come from the downward API's variables.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::Guard;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(manifests().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The `args: [...]` of the manifest's container (a JSON-compatible flow list).
fn container_args(manifest: &str) -> Vec<String> {
    let line = manifest.lines().find_map(|l| l.trim().strip_prefix("args:")).expect("the container has args");
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("args {line:?}: {e}"))
}

#[test]
fn the_manifests_render_to_the_golden_file() {
    let out = match Command::new("kubectl").arg("kustomize").arg(manifests()).stderr(Stdio::piped()).output() {
        Ok(out) => out,
        Err(_) => {
            eprintln!("SKIPPED: kubectl is not installed; checking the sources' key fields only");
            return;
        }
    };
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let golden = manifests().join("rendered.yaml");
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
    }
    assert_eq!(rendered, std::fs::read_to_string(&golden).unwrap(), "rendered.yaml is stale (KILN_BLESS=1)");
    // The kustomization's label on the three objects, beside the selectors' own (the
    // Service's, and each Deployment's selector and pod template).
    assert_eq!(rendered.matches("app.kubernetes.io/name: kiln").count(), 3 + 1 + 2 * 2);
}

#[test]
fn the_sources_hold_the_key_fields() {
    let scheduler = read("scheduler.yaml");
    for needle in
        ["kind: Deployment", "kind: Service", "name: kiln-scheduler", "port: 8786", "port: 8787", "path: /health"]
    {
        assert!(scheduler.contains(needle), "scheduler.yaml lacks {needle:?}");
    }
    let worker = read("worker.yaml");
    for needle in [
        "name: KILN_SCHEDULER_ADDRESS",
        "value: tcp://kiln-scheduler:8786",
        "name: KILN_WORKER_MEMORY_LIMIT",
        "resource: limits.memory",
        "name: KILN_WORKER_NTHREADS",
        "resource: limits.cpu",
        "containerName: worker",
    ] {
        assert!(worker.contains(needle), "worker.yaml lacks {needle:?}");
    }
    let kustomization = read("kustomization.yaml");
    assert!(kustomization.contains("- scheduler.yaml") && kustomization.contains("- worker.yaml"));
    let dockerfile = std::fs::read_to_string(manifests().join("../../Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"kiln\"]"), "the image's entry point is kiln");
    assert!(dockerfile.contains("cargo build --release --locked -p kiln-cli"));
}

#[test]
fn the_containers_commands_run_a_cluster() {
    // The scheduler's arguments as the manifest has them, on free ports (this machine may run
    // other tests): the image's entry point is `kiln`, so these are its whole command line.
    let mut args = container_args(&read("scheduler.yaml"));
    assert_eq!(args[0], "scheduler");
    let port = args.iter().position(|a| a == "--port").unwrap() + 1;
    args[port] = "0".into();
    let dashboard = args.iter().position(|a| a == "--dashboard-address").unwrap() + 1;
    args[dashboard] = "127.0.0.1:0".into();
    let mut scheduler =
        Guard(Command::new(KILN).args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(scheduler.0.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let address = first.strip_prefix("Scheduler at ").unwrap().to_string();
    let dashboard = lines.find_map(|l| l.ok()?.strip_prefix("Dashboard at ").map(str::to_string)).unwrap();
    // The readiness probe's path answers.
    let health = dashboard.replace("/status", "/health");
    let host_port = health.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let mut stream = std::net::TcpStream::connect(&host_port).unwrap();
    std::io::Write::write_all(&mut stream, format!("GET /health HTTP/1.0\r\nHost: {host_port}\r\n\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{reply}");

    // The worker exactly as the manifest starts it, with the variables the downward API gives
    // a container limited to 1Gi and 1 CPU, in a pod named kiln-worker-abc.
    let worker_args = container_args(&read("worker.yaml"));
    assert_eq!(worker_args[0], "worker");
    let _worker = Guard(
        Command::new(KILN)
            .args(&worker_args)
            .env("KILN_SCHEDULER_ADDRESS", &address)
            .env("KILN_WORKER_NAME", "kiln-worker-abc")
            .env("KILN_WORKER_MEMORY_LIMIT", "1073741824")
            .env("KILN_WORKER_NTHREADS", "1")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = kiln_distributed::Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(60)).unwrap();
    let workers = client.workers();
    assert_eq!(workers[0].name, "kiln-worker-abc");
    assert_eq!((workers[0].memory_limit, workers[0].nthreads), (1 << 30, 1));
}
