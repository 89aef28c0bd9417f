//! The nanny (Dask's `Nanny`): `kiln worker` runs the worker as a child process and starts a
//! new one when it dies abnormally, so one task that aborts its process (an allocation that
//! fails, a crashing kernel) costs a restart, not a worker for the rest of the cluster's life.
//!
//! The child is this same executable re-run with the same arguments plus `--no-nanny`: that
//! works for the stock `kiln` binary and for a user's program made a worker by
//! [`run_worker_if_requested`](super::run_worker_if_requested) alike, because both parse the
//! same [`WorkerArgs`](super::WorkerArgs), and the child knows the same kernels as its parent.
//! The child also gets `--supervised`, which lets it end a memory pause that waiting cannot
//! end by exiting with [`EXIT_FRESH_START`] for a new process (a planned restart, not a death).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Exit code of a worker that cannot start with its settings (flags that do not work, a
/// scheduler that cannot be reached, a port in use): its nanny does not restart it, since the
/// next attempt would fail the same way, and exits with the same code.
pub const EXIT_CANNOT_START: i32 = 2;

/// Exit code of a worker that asks its nanny for a fresh process: it was paused for memory it
/// could not free while running nothing and holding no data (its own allocator arenas, caches,
/// a library's buffers), so it loses nothing by restarting and a new process starts without
/// that memory. The nanny restarts it at once and does not count it as a death.
pub const EXIT_FRESH_START: i32 = 3;

/// Exit code of a worker that stopped because no scheduler was reachable for its
/// `--death-timeout`: a batch job's worker must end rather than be restarted to wait again.
pub const EXIT_NO_SCHEDULER: i32 = 4;

/// How a nanny restarts its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NannyPolicy {
    /// Restarts allowed within [`NannyPolicy::window`]; one more death in the window and the
    /// nanny gives up (a worker that dies this often is not helped by restarting it).
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
    /// The wait before a restart after a first death; it doubles with every further restart
    /// in the window (at most 16 times), so a crash loop does not spin the CPU.
    pub backoff: Duration,
}

impl Default for NannyPolicy {
    fn default() -> Self {
        NannyPolicy { max_restarts: 5, window: Duration::from_secs(60), backoff: Duration::from_millis(500) }
    }
}

/// The restarts within the policy's window: decides whether and when to restart.
#[derive(Debug)]
struct Restarts {
    policy: NannyPolicy,
    recent: VecDeque<Instant>,
}

impl Restarts {
    fn new(policy: NannyPolicy) -> Self {
        Restarts { policy, recent: VecDeque::new() }
    }

    /// A death at `now`: `Some((n, wait))` to restart as the `n`th restart in the window after
    /// `wait`, `None` when the window's restarts are used up.
    fn death(&mut self, now: Instant) -> Option<(u32, Duration)> {
        while self.recent.front().is_some_and(|&t| now.saturating_duration_since(t) >= self.policy.window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts as usize {
            return None;
        }
        self.recent.push_back(now);
        let n = self.recent.len() as u32;
        Some((n, self.policy.backoff.saturating_mul(1 << (n - 1).min(16))))
    }
}

/// How a worker process ended, as its nanny sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Exit code 0: retired, told to leave, or stopped by a signal it handled.
    Clean,
    /// It could not start with its settings ([`EXIT_CANNOT_START`]).
    CannotStart,
    /// It left to be started afresh ([`EXIT_FRESH_START`]).
    FreshStart,
    /// No scheduler was reachable for its death timeout ([`EXIT_NO_SCHEDULER`]).
    NoScheduler,
    /// Killed by a signal or failed with another code: the cause, for the log.
    Died(String),
}

fn ending(status: ExitStatus) -> Ending {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ending::Clean,
        (Some(EXIT_CANNOT_START), _) => Ending::CannotStart,
        (Some(EXIT_FRESH_START), _) => Ending::FreshStart,
        (Some(EXIT_NO_SCHEDULER), _) => Ending::NoScheduler,
        (Some(code), _) => Ending::Died(format!("exit code {code}")),
        (None, Some(signal)) => Ending::Died(format!("signal {signal} ({})", signal_name(signal))),
        (None, None) => Ending::Died(format!("{status}")),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => "unnamed",
    }
}

/// The nanny's log: through `tracing` when the program set up a subscriber (`kiln worker`
/// does), else on stderr, so a user's worker binary does not restart workers silently.
fn log(level: tracing::Level, message: &str) {
    if tracing::dispatcher::has_been_set() {
        match level {
            tracing::Level::ERROR => tracing::error!("{message}"),
            tracing::Level::WARN => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
    } else if level <= tracing::Level::WARN {
        eprintln!("kiln nanny: {message}");
    }
}

/// Runs this executable again with `args` and `--no-nanny` as a supervised worker, restarting
/// it when it dies abnormally (see [`NannyPolicy`]), until it exits cleanly, cannot start, or
/// dies once too often. SIGTERM and SIGINT are passed on to the worker, which leaves cleanly;
/// the nanny then exits. If the nanny itself is killed, the worker gets SIGTERM from the
/// kernel (Linux), so no worker outlives its nanny.
///
/// `local_directory` is the worker's `--local-directory` (`None`: the temporary directory):
/// the nanny removes what a dead worker left there.
///
/// Returns the exit code for the nanny's process: 0 after a clean exit, the worker's code
/// when it could not start, 1 when the nanny gave up.
///
/// # Errors
/// The executable cannot be found or started, or the nanny's runtime cannot start.
pub fn run_nanny(args: Vec<OsString>, policy: NannyPolicy, local_directory: Option<PathBuf>) -> std::io::Result<i32> {
    let program = std::env::current_exe()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let spill_parent = local_directory.unwrap_or_else(std::env::temp_dir);
    runtime.block_on(supervise(program, args, policy, spill_parent))
}

async fn supervise(
    program: PathBuf,
    args: Vec<OsString>,
    policy: NannyPolicy,
    spill_parent: PathBuf,
) -> std::io::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut restarts = Restarts::new(policy.clone());
    loop {
        let mut child = spawn_worker(&program, &args)?;
        let pid = child.id();
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = term.recv() => return forward(&mut child, libc::SIGTERM).await,
            _ = interrupt.recv() => return forward(&mut child, libc::SIGINT).await,
        };
        if let Some(pid) = pid {
            remove_spill_directories(&spill_parent, pid);
        }
        let cause = match ending(status) {
            Ending::Clean => return Ok(0),
            Ending::CannotStart => return Ok(EXIT_CANNOT_START),
            Ending::NoScheduler => return Ok(EXIT_NO_SCHEDULER),
            Ending::FreshStart => {
                // The worker said why (at warn); a planned restart is not a death.
                log(tracing::Level::INFO, "worker left for a fresh start; starting a new one");
                continue;
            }
            Ending::Died(cause) => cause,
        };
        let window = policy.window.as_secs();
        let Some((n, wait)) = restarts.death(Instant::now()) else {
            log(
                tracing::Level::ERROR,
                &format!(
                    "worker exited with {cause}; not restarting it: it already restarted {} times in {window} s",
                    policy.max_restarts
                ),
            );
            return Ok(1);
        };
        log(
            tracing::Level::WARN,
            &format!("worker exited with {cause}; restarting ({n} of {} in {window} s)", policy.max_restarts),
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = term.recv() => return Ok(0),
            _ = interrupt.recv() => return Ok(0),
        }
    }
}

/// Removes what a dead worker left in its spill location (`kiln-worker-<pid>-<port>` in its
/// local directory): a worker killed by a signal cannot clean up after itself, and one that
/// exits cleanly has already done so.
fn remove_spill_directories(parent: &std::path::Path, pid: u32) {
    let prefix = format!("kiln-worker-{pid}-");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => log(
                    tracing::Level::WARN,
                    &format!("removed the dead worker's spill directory {}", entry.path().display()),
                ),
                Err(e) => log(
                    tracing::Level::ERROR,
                    &format!("cannot remove the dead worker's spill directory {}: {e}", entry.path().display()),
                ),
            }
        }
    }
}

/// Passes a signal on to the worker and waits for it to leave.
async fn forward(child: &mut tokio::process::Child, signal: i32) -> std::io::Result<i32> {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid of our own, still unreaped, child.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
    let status = child.wait().await?;
    Ok(if status.success() { 0 } else { 1 })
}

fn spawn_worker(program: &PathBuf, args: &[OsString]) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).arg("--no-nanny").arg("--supervised");
    #[cfg(target_os = "linux")]
    {
        let nanny = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe system calls run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // The kernel sends SIGTERM (a clean leave) when the thread that forked us dies:
                // a SIGKILLed nanny leaves no worker behind. This runtime has one thread.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The nanny died before the line above: nobody would ever signal us.
                if libc::getppid() != nanny {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_and_stop_at_the_limit_within_the_window() {
        let policy =
            NannyPolicy { max_restarts: 3, window: Duration::from_secs(60), backoff: Duration::from_millis(100) };
        let mut restarts = Restarts::new(policy);
        let t0 = Instant::now();
        assert_eq!(restarts.death(t0), Some((1, Duration::from_millis(100))));
        assert_eq!(restarts.death(t0 + Duration::from_secs(1)), Some((2, Duration::from_millis(200))));
        assert_eq!(restarts.death(t0 + Duration::from_secs(2)), Some((3, Duration::from_millis(400))));
        assert_eq!(restarts.death(t0 + Duration::from_secs(3)), None);
        // The first restart leaves the window: one more is allowed.
        assert_eq!(restarts.death(t0 + Duration::from_secs(60)), Some((3, Duration::from_millis(400))));
    }

    #[test]
    fn exits_are_told_apart() {
        assert_eq!(ending(ExitStatus::from_raw(0)), Ending::Clean);
        assert_eq!(ending(ExitStatus::from_raw(EXIT_CANNOT_START << 8)), Ending::CannotStart);
        assert_eq!(ending(ExitStatus::from_raw(EXIT_FRESH_START << 8)), Ending::FreshStart);
        assert_eq!(ending(ExitStatus::from_raw(1 << 8)), Ending::Died("exit code 1".into()));
        assert_eq!(ending(ExitStatus::from_raw(libc::SIGABRT)), Ending::Died("signal 6 (SIGABRT)".into()));
        assert_eq!(ending(ExitStatus::from_raw(libc::SIGKILL)), Ending::Died("signal 9 (SIGKILL)".into()));
    }
}
