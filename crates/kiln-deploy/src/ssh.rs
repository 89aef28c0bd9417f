//! A cluster over SSH (Dask's `SSHCluster`): the first host runs `kiln scheduler`, the others
//! `kiln worker`, each through the system `ssh` binary (so the user's keys, agent, config and
//! jump hosts apply).
//!
//! Nothing must outlive the cluster on the remote hosts, even when this process is killed:
//! each remote command runs under a small POSIX `sh` watchdog that holds the SSH session's
//! standard input. When the session ends (this process exits, is killed, or the network
//! drops), `sshd` closes that input, the watchdog sees end-of-file and stops the kiln process
//! with SIGTERM (a worker hands back its tasks, a scheduler tells its workers).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::CommandRunner;
use crate::shell::{join, quote};

/// How to start the processes of an [`SshCluster`].
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The `kiln` binary on the remote hosts.
    pub remote_kiln: String,
    /// `-o` options for every `ssh` (`Port=2222`, `IdentityFile=...`).
    pub ssh_options: Vec<String>,
    /// The scheduler's port on the first host (0: any free port).
    pub scheduler_port: u16,
    /// More flags for `kiln scheduler`.
    pub scheduler_args: Vec<String>,
    /// More flags for `kiln worker` (`--nthreads`, `--memory-limit`, ...).
    pub worker_args: Vec<String>,
    /// How long to wait for the scheduler's address.
    pub start_timeout: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            remote_kiln: "kiln".into(),
            ssh_options: Vec::new(),
            scheduler_port: 8786,
            scheduler_args: Vec::new(),
            worker_args: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// Why an SSH cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// No host given.
    #[error("give at least one host (the first runs the scheduler, the others workers)")]
    NoHosts,
    /// `ssh` is not installed here.
    #[error(transparent)]
    Command(#[from] crate::JobQueueError),
    /// `ssh` could not be started.
    #[error("cannot start ssh to {host}: {source}")]
    Spawn {
        /// The host.
        host: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The scheduler did not print its address.
    #[error("the scheduler on {host} did not start: {detail}")]
    Scheduler {
        /// The host.
        host: String,
        /// What happened instead (its last output, or the timeout).
        detail: String,
    },
}

/// The remote shell command that runs `words` under the watchdog described in the module
/// documentation, as one string for `ssh HOST COMMAND` (wrapped in `sh -c`, whatever the
/// user's login shell is).
pub fn remote_command<S: AsRef<str>>(words: &[S]) -> String {
    // fd 3 keeps the session's stdin: POSIX gives background jobs /dev/null as their stdin.
    // The loop polls once a second so the watchdog also ends when kiln ends by itself.
    let script = format!(
        "exec 3<&0; {} & pid=$!; cat <&3 >/dev/null & watch=$!; \
         while kill -0 $pid 2>/dev/null && kill -0 $watch 2>/dev/null; do sleep 1; done; \
         kill -TERM $pid $watch 2>/dev/null; wait $pid",
        join(words)
    );
    format!("sh -c {}", quote(&script))
}

/// The arguments of `ssh` that run `command` on `host`.
pub fn ssh_args(host: &str, options: &[String], command: &str) -> Vec<String> {
    // BatchMode: a missing key fails at once instead of prompting where nobody sees it.
    let mut args = vec!["-o".to_string(), "BatchMode=yes".into(), "-T".into()];
    for option in options {
        args.push("-o".into());
        args.push(option.clone());
    }
    args.push(host.to_string());
    args.push(command.to_string());
    args
}

/// The scheduler's address in its banner line (`Scheduler at tcp://10.0.0.1:8786`).
pub fn parse_banner(line: &str) -> Option<String> {
    let address = line.trim().strip_prefix("Scheduler at ")?;
    (address.starts_with("tcp://") || address.starts_with("tls://")).then(|| address.to_string())
}

struct Remote {
    host: String,
    child: Child,
    /// Held open: closing it ends the remote process (see the module documentation).
    stdin: Option<ChildStdin>,
}

/// A scheduler and workers started over SSH. Dropping it (or [`SshCluster::close`]) ends
/// every remote process.
pub struct SshCluster {
    address: String,
    scheduler: Remote,
    workers: Vec<Remote>,
}

impl SshCluster {
    /// Starts the scheduler on `hosts[0]`, waits for its address, then starts one worker on
    /// each other host (a host may be listed more than once).
    ///
    /// # Errors
    /// No host, no `ssh`, or a scheduler that does not print its address in time (with what
    /// it printed instead: a refused key, a missing `kiln`).
    pub fn start(hosts: &[String], options: &SshOptions, runner: &CommandRunner) -> Result<SshCluster, SshError> {
        let (first, others) = hosts.split_first().ok_or(SshError::NoHosts)?;
        let mut words = vec![options.remote_kiln.clone(), "scheduler".into(), "--port".into()];
        words.push(options.scheduler_port.to_string());
        words.extend(options.scheduler_args.iter().cloned());
        let mut scheduler = spawn(runner, first, options, &words, true)?;
        let stdout = scheduler.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref().map_while(Result::ok) {
                if !sent && let Some(address) = parse_banner(&line) {
                    let _ = tx.send(Ok(address));
                    sent = true;
                    continue;
                }
                if sent {
                    println!("{line}");
                } else {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let deadline = std::time::Instant::now() + options.start_timeout;
        let mut last = String::from("no output");
        let address = loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(Ok(address)) => break address,
                Ok(Err(line)) => last = line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Its session's end stops the remote scheduler, if one started.
                    let _ = scheduler.child.kill();
                    let _ = scheduler.child.wait();
                    return Err(SshError::Scheduler {
                        host: first.clone(),
                        detail: format!("no address within {:?} (last output: {last})", options.start_timeout),
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = scheduler.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(SshError::Scheduler {
                        host: first.clone(),
                        detail: format!("ssh ended ({status}); see its error output above"),
                    });
                }
            }
        };
        let mut cluster = SshCluster { address: address.clone(), scheduler, workers: Vec::new() };
        for host in others {
            let mut words = vec![options.remote_kiln.clone(), "worker".into(), address.clone()];
            words.extend(options.worker_args.iter().cloned());
            cluster.workers.push(spawn(runner, host, options, &words, false)?);
        }
        Ok(cluster)
    }

    /// The scheduler's address, as it printed it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The host whose `ssh` has ended, if one has (`None`: all running).
    pub fn ended(&mut self) -> Option<(String, String)> {
        std::iter::once(&mut self.scheduler).chain(self.workers.iter_mut()).find_map(|remote| {
            match remote.child.try_wait() {
                Ok(Some(status)) => Some((remote.host.clone(), status.to_string())),
                _ => None,
            }
        })
    }

    /// Whether the scheduler's `ssh` is still running.
    pub fn scheduler_running(&mut self) -> bool {
        matches!(self.scheduler.child.try_wait(), Ok(None))
    }

    /// Ends every remote process: closes their sessions' input (the watchdogs stop kiln), then
    /// the `ssh` processes, workers first.
    pub fn close(self) {}
}

impl Drop for SshCluster {
    fn drop(&mut self) {
        for remote in self.workers.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            remote.stdin.take();
        }
        // The watchdogs poll once a second; ssh ends when the remote command does.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for remote in self.workers.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            while std::time::Instant::now() < deadline && matches!(remote.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = remote.child.kill();
            let _ = remote.child.wait();
        }
    }
}

fn spawn(
    runner: &CommandRunner,
    host: &str,
    options: &SshOptions,
    words: &[String],
    capture: bool,
) -> Result<Remote, SshError> {
    let mut command = runner.command("ssh")?;
    command
        .args(ssh_args(host, &options.ssh_options, &remote_command(words)))
        .stdin(Stdio::piped())
        .stdout(if capture { Stdio::piped() } else { Stdio::inherit() })
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|source| SshError::Spawn { host: host.to_string(), source })?;
    let stdin = child.stdin.take();
    Ok(Remote { host: host.to_string(), child, stdin })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_gives_the_address() {
        assert_eq!(parse_banner("Scheduler at tcp://10.0.0.1:8786\n").as_deref(), Some("tcp://10.0.0.1:8786"));
        assert_eq!(parse_banner("Scheduler at tls://h:1").as_deref(), Some("tls://h:1"));
        assert_eq!(parse_banner("Dashboard at http://h:8787/status"), None);
        assert_eq!(parse_banner("Scheduler at nowhere"), None);
    }

    #[test]
    fn ssh_gets_batch_mode_the_options_and_one_command() {
        let args = ssh_args("alice@node1", &["Port=2222".into()], "sh -c 'x'");
        assert_eq!(args, ["-o", "BatchMode=yes", "-T", "-o", "Port=2222", "alice@node1", "sh -c 'x'"]);
    }

    /// The watchdog, run by a real `sh` here: the command runs with its arguments intact, and
    /// it is stopped when the input ends.
    #[test]
    fn the_watchdog_runs_the_command_and_stops_it_when_the_input_ends() {
        let dir = std::env::temp_dir().join(format!("kiln-ssh-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("it's running");
        // A command that records its argument, then would run for a minute.
        let words = ["sh", "-c", "echo \"$1\" > \"$2\"; exec sleep 60", "sh", "an argument; with $pecial chars", ""];
        let mut words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        words[5] = marker.display().to_string();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(remote_command(&words))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !marker.exists() {
            assert!(std::time::Instant::now() < deadline, "the command did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // `wait $pid` of a process ended by SIGTERM: 128 + 15.
                assert_eq!(status.code(), Some(143));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the watchdog did not stop the command");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "an argument; with $pecial chars\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
