//! Deployment settings end to end with real `kiln` processes: a TLS cluster (certificates
//! generated here) found through a scheduler file, certificate files that are missing, the
//! worker's death timeout, and `kiln config`'s precedence (file < environment < flag).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::Collection;
use kiln::array::random::RandomState;
use kiln::local::LocalScheduler;
use kiln_distributed::{CertificateAuthority, Client, Security, TlsRole};

mod support;
use support::Guard;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-security-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA and one certificate per role, as PEM files in `dir`.
fn write_pki(dir: &Path) -> CertificateAuthority {
    let ca = CertificateAuthority::new("test CA").unwrap();
    std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).unwrap();
    for role in ["scheduler", "worker", "client"] {
        let (cert, key) = ca.issue(role).unwrap();
        std::fs::write(dir.join(format!("{role}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{role}-key.pem")), key).unwrap();
    }
    ca
}

fn tls_flags(dir: &Path, role: &str) -> Vec<String> {
    let path = |name: String| dir.join(name).display().to_string();
    vec![
        "--tls-ca-file".into(),
        path("ca.pem".into()),
        "--tls-cert".into(),
        path(format!("{role}.pem")),
        "--tls-key".into(),
        path(format!("{role}-key.pem")),
        "--require-encryption".into(),
    ]
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process {} did not exit within {within:?}", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_tls_cluster_of_kiln_processes_found_through_a_scheduler_file_computes_the_headline() {
    let dir = temp_dir("cluster");
    write_pki(&dir);
    let file = dir.join("scheduler.json");
    let mut scheduler = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file"])
        .arg(&file)
        .args(tls_flags(&dir, "scheduler"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _scheduler = Guard(scheduler);
    let printed = line.trim().strip_prefix("Scheduler at ").unwrap().to_string();
    assert!(printed.starts_with("tls://127.0.0.1:"), "{printed}");
    let address = kiln_distributed::scheduler_file::read(&file).unwrap();
    assert_eq!(address, printed);

    // One worker with flags, one with the KILN_TLS_* variables; both find the scheduler by file.
    let _w1 = Guard(
        Command::new(KILN)
            .args(["worker", "--nthreads", "1", "--name", "flags", "--scheduler-file"])
            .arg(&file)
            .args(tls_flags(&dir, "worker"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _w2 = Guard(
        Command::new(KILN)
            .args(["worker", "--nthreads", "1", "--name", "env"])
            .env("KILN_SCHEDULER_FILE", &file)
            .env("KILN_TLS_CA_FILE", dir.join("ca.pem"))
            .env("KILN_TLS_CERT", dir.join("worker.pem"))
            .env("KILN_TLS_KEY", dir.join("worker-key.pem"))
            .env("KILN_REQUIRE_ENCRYPTION", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let security = Security::new()
        .with_ca_file(dir.join("ca.pem"))
        .unwrap()
        .with_identity_files(TlsRole::Client, dir.join("client.pem"), dir.join("client-key.pem"))
        .unwrap();
    let client = Client::connect_with(&address, &security).unwrap();
    client.wait_for_workers(2, Duration::from_secs(60)).unwrap();
    assert!(client.workers().iter().all(|w| w.address.starts_with("tls://")), "{:?}", client.workers());
    let x = RandomState::new(3).random(&[600, 600], [200, 200]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let local = y.compute_on(&LocalScheduler::new()).unwrap().first().copied().unwrap();
    let remote = y.compute_on(&client).unwrap().first().copied().unwrap();
    assert!((local - remote).abs() <= 1e-9 * local.abs(), "{local} vs {remote}");
    // Without a certificate, nobody gets in.
    assert!(Client::connect(&address).is_err());
    drop(client);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_key_file_is_a_clear_error_naming_the_path() {
    let dir = temp_dir("missing");
    write_pki(&dir);
    let missing = dir.join("no-such-key.pem");
    for command in ["scheduler", "worker"] {
        let mut cmd = Command::new(KILN);
        cmd.arg(command);
        if command == "worker" {
            cmd.arg("tcp://127.0.0.1:1");
        } else {
            cmd.args(["--port", "0"]);
        }
        let output = cmd
            .arg("--tls-ca-file")
            .arg(dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(dir.join(format!("{command}.pem")))
            .arg("--tls-key")
            .arg(&missing)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command} started without its key");
        let expected = format!("cannot read the private key {}", missing.display());
        assert!(stderr.contains(&expected), "{command}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_worker_exits_after_its_death_timeout_and_its_nanny_does_not_restart_it() {
    // No scheduler at all: the worker (under its nanny) tries for a second, then exits 4.
    let mut lonely = Command::new(KILN)
        .args(["worker", &format!("tcp://127.0.0.1:{}", free_port()), "--death-timeout", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut lonely, Duration::from_secs(30));
    assert_eq!(status.code(), Some(kiln_distributed::EXIT_NO_SCHEDULER), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut lonely.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("within the death timeout"), "{stderr}");
    assert!(!stderr.contains("restarting"), "{stderr}");

    // A scheduler that goes away: the worker gives up after the timeout, and is not restarted.
    let mut scheduler = Command::new(KILN)
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("Scheduler at ").unwrap().to_string();
    let mut worker = Command::new(KILN)
        .args(["worker", &address, "--death-timeout", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    drop(client);
    scheduler.kill().unwrap();
    scheduler.wait().unwrap();
    let status = wait_exit(&mut worker, Duration::from_secs(30));
    assert_eq!(status.code(), Some(kiln_distributed::EXIT_NO_SCHEDULER), "{status}");
}

#[test]
fn kiln_config_merges_file_environment_and_flags_and_names_an_unknown_key() {
    let dir = temp_dir("config");
    let file = dir.join("kiln.toml");
    std::fs::write(
        &file,
        "[worker]\nnthreads = 2\nmemory-limit = \"1GiB\"\nname = \"from-file\"\n\n[scheduler]\nport = 9999\n\n\
         [security]\nca-file = \"ca.pem\"\n",
    )
    .unwrap();
    let output = Command::new(KILN)
        .args(["config", "worker", "--nthreads", "4"])
        .env("KILN_CONFIG", &file)
        .env("KILN_WORKER_MEMORY_LIMIT", "2GiB")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_string()
    };
    assert!(line("worker.nthreads").contains("\"4\"") && line("worker.nthreads").ends_with("# flag"), "{text}");
    assert!(
        line("worker.memory-limit").contains("\"2GiB\"")
            && line("worker.memory-limit").ends_with("# env KILN_WORKER_MEMORY_LIMIT")
    );
    assert!(line("worker.name").contains("\"from-file\"") && line("worker.name").contains("# file "), "{text}");
    let ca = dir.join("ca.pem").display().to_string();
    assert!(line("security.ca-file").contains(&ca), "{text}");
    assert!(line("worker.port").ends_with("# default"), "{text}");
    // The whole picture includes the scheduler's settings too.
    let all = Command::new(KILN).arg("config").env("KILN_CONFIG", &file).output().unwrap();
    assert!(String::from_utf8_lossy(&all.stdout).contains("scheduler.port = \"9999\""));

    std::fs::write(&file, "[worker]\nthreads = 2\n").unwrap();
    for args in [&["config"][..], &["worker", "tcp://127.0.0.1:1"][..]] {
        let output = Command::new(KILN).args(args).env("KILN_CONFIG", &file).output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!("unknown key `worker.threads` in config file {}", file.display());
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_secure_local_cluster_of_worker_processes_with_a_token_computes_and_cleans_up_its_files() {
    let token = kiln_protocol::AuthToken::new(b"local secret".to_vec());
    let security = Security::temporary().unwrap().with_token(token);
    let cluster = kiln_distributed::LocalCluster::builder().workers(2).binary(KILN).security(security).start().unwrap();
    let client = cluster.client().unwrap();
    assert!(cluster.address().starts_with("tls://"));
    assert!(client.workers().iter().all(|w| w.address.starts_with("tls://")), "{:?}", client.workers());
    let x = RandomState::new(4).random(&[300, 300], [100, 100]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let local = y.compute_on(&LocalScheduler::new()).unwrap().first().copied().unwrap();
    let remote = y.compute_on(&client).unwrap().first().copied().unwrap();
    assert!((local - remote).abs() <= 1e-9 * local.abs(), "{local} vs {remote}");
    // The cluster's certificates without its token are not enough.
    let tokenless = cluster.security().clone().with_token(None);
    assert!(Client::connect_with(&cluster.address(), &tokenless).is_err());
    drop(client);
    cluster.close();
    let prefix = format!("kiln-cluster-tls-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "certificate files left behind: {left:?}");
}
