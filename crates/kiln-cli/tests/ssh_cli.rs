//! `kiln ssh` end to end against a real `sshd` on this machine: started by the test on a free
//! loopback port as the current user, with a throwaway host key and an authorized key in a
//! temporary directory. Skipped, saying so, where `sshd` or `ssh-keygen` is not installed
//! (Debian: `openssh-server`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::Collection;

mod support;
use support::{Guard, processes_mentioning};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    _daemon: Guard,
    port: u16,
    identity: PathBuf,
}

fn keygen(path: &Path) -> bool {
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_sshd(dir: &Path) -> Option<Sshd> {
    if !Path::new(SSHD).is_file() {
        eprintln!("SKIPPED: {SSHD} is not installed (Debian: apt-get install openssh-server)");
        return None;
    }
    let (host_key, identity) = (dir.join("host_key"), dir.join("id"));
    if !(keygen(&host_key) && keygen(&identity)) {
        eprintln!("SKIPPED: ssh-keygen is missing or failed");
        return None;
    }
    std::fs::copy(identity.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    // sshd run by root needs its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel ERROR\n",
            host_key.display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let daemon =
        Guard(Command::new(SSHD).arg("-D").arg("-e").arg("-f").arg(&config).stdin(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Sshd { _daemon: daemon, port, identity })
}

fn ssh_options(sshd: &Sshd) -> Vec<String> {
    [
        format!("Port={}", sshd.port),
        format!("IdentityFile={}", sshd.identity.display()),
        "IdentitiesOnly=yes".into(),
        "StrictHostKeyChecking=no".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "LogLevel=ERROR".into(),
    ]
    .into_iter()
    .flat_map(|o| ["--ssh-option".to_string(), o])
    .collect()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "still waiting after {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_cluster_over_ssh_computes_and_ctrl_c_stops_every_remote_process() {
    let dir = std::env::temp_dir().join(format!("kiln-ssh-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Some(sshd) = start_sshd(&dir) else { return };
    // A path only the remote scheduler's command line holds, to find it later.
    let marker = dir.join("scheduler-marker.json");
    let mut kiln = Command::new(KILN);
    kiln.args(["ssh", "127.0.0.1", "127.0.0.1", "127.0.0.1", "--remote-kiln", KILN])
        .args(["--nthreads", "1", "--memory-limit", "1GiB", "--scheduler-port", "0"])
        .args(["--scheduler-arg=--no-dashboard", &format!("--scheduler-arg=--scheduler-file={}", marker.display())])
        .args(ssh_options(&sshd))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut cli = Guard(kiln.spawn().unwrap());
    let mut lines = BufReader::new(cli.0.stdout.take().unwrap()).lines();
    // The remote processes' log lines may come first (they share this output).
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("Scheduler at ").map(str::to_string))
        .expect("kiln ssh prints the scheduler's address");
    // Keep reading so the command never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});

    let client = kiln_distributed::Client::connect(&address).unwrap();
    client.wait_for_workers(2, Duration::from_secs(60)).unwrap();
    assert!(client.workers().iter().all(|w| w.nthreads == 1 && w.memory_limit == 1 << 30), "{:?}", client.workers());
    let x = kiln::array::arange::<f64>(0.0, 10_000.0, 1.0, 500);
    assert_eq!(x.sum().compute_on(&client).unwrap().first().copied(), Some(49_995_000.0));
    drop(client);
    // The remote scheduler (and its watchdog and login shell, whose command lines hold it too).
    assert!(!processes_mentioning(&marker.display().to_string()).is_empty(), "the remote scheduler runs");

    // Ctrl-C: the command ends, and with it every remote process.
    assert!(Command::new("kill").args(["-INT", &cli.0.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = cli.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kiln ssh did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let port = address.rsplit(':').next().unwrap().to_string();
    wait_until("the remote scheduler and workers to end", Duration::from_secs(30), || {
        processes_mentioning(&marker.display().to_string()).is_empty()
            && processes_mentioning(&format!("worker {address}")).is_empty()
    });
    assert!(std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_host_that_refuses_the_key_is_named() {
    let dir = std::env::temp_dir().join(format!("kiln-ssh-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Some(sshd) = start_sshd(&dir) else { return };
    // Another key than the authorized one.
    let stranger = dir.join("stranger");
    assert!(keygen(&stranger));
    let options = ssh_options(&Sshd {
        _daemon: Guard(Command::new("true").spawn().unwrap()),
        port: sshd.port,
        identity: stranger,
    });
    let out = Command::new(KILN)
        .args(["ssh", "127.0.0.1", "127.0.0.1", "--remote-kiln", KILN])
        .args(options)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the scheduler on 127.0.0.1 did not start"), "{err}");
    assert!(err.contains("Permission denied"), "ssh's own reason is shown: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
