//! The worker's command line, parsed once for every program that can be a worker: `kiln worker`
//! and a user's own binary through [`run_worker_if_requested`](super::run_worker_if_requested).
//! Both take the same flags, so a program started on another machine is configured exactly as
//! the stock worker is.

use std::path::PathBuf;
use std::time::Duration;

use crate::comm::tls::{Security, SecurityError, TlsRole, TlsVersion, token_from_bytes};
use crate::worker::WorkerConfig;

/// The security flags of `kiln scheduler` and `kiln worker` (Dask's `--tls-*` flags), plus the
/// token. The certificate is the process's own: the scheduler's for `kiln scheduler`, a
/// worker's for `kiln worker`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// PEM file of the certificate authority whose signature peers' certificates must carry;
    /// with it, every connection is TLS with mutual authentication.
    #[arg(long, value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of this process's certificate (chain), signed by the CA.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of this process's private key.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Lowest TLS version accepted: 1.2 (default) or 1.3.
    #[arg(long, value_name = "VERSION")]
    pub tls_min_version: Option<TlsVersion>,
    /// Refuse plain tcp:// connections (needs a certificate).
    #[arg(long)]
    pub require_encryption: bool,
    /// File holding a shared secret that every connection must present (checked in the
    /// handshake, over TCP or TLS). The variable KILN_AUTH_TOKEN may hold the secret itself.
    #[arg(long, value_name = "FILE")]
    pub auth_token: Option<PathBuf>,
}

impl SecurityArgs {
    /// The [`Security`] of a process in `role` with these flags (and `KILN_AUTH_TOKEN` when no
    /// `--auth-token` file is given).
    ///
    /// # Errors
    /// A file that cannot be read or does not hold what it should (named in the message).
    pub fn to_security(&self, role: TlsRole) -> Result<Security, SecurityError> {
        let mut security = Security::new();
        if let Some(ca) = &self.tls_ca_file {
            security = security.with_ca_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            security = security.with_identity_files(role, cert, key)?;
        }
        if let Some(version) = self.tls_min_version {
            security = security.with_min_version(version);
        }
        security = security.with_require_encryption(self.require_encryption);
        match &self.auth_token {
            Some(path) => security = security.with_token_file(path)?,
            None => {
                if let Some(value) = std::env::var_os("KILN_AUTH_TOKEN") {
                    use std::os::unix::ffi::OsStrExt;
                    let token = token_from_bytes(value.as_bytes())
                        .ok_or_else(|| SecurityError::Config("KILN_AUTH_TOKEN must hold 1 to 1024 bytes".into()))?;
                    security = security.with_token(Some(token));
                }
            }
        }
        // Checked now, so a bad combination fails before anything listens.
        security.transport(role)?;
        Ok(security)
    }
}

/// The flags of `worker ADDR ...` (Dask's `dask-worker`).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The scheduler's address (e.g. tcp://192.168.0.1:8786 or tls://...); or give
    /// --scheduler-file.
    #[arg(required_unless_present = "scheduler_file")]
    pub scheduler: Option<String>,
    /// Read the scheduler's address from this JSON file, which `kiln scheduler
    /// --scheduler-file` writes (waiting for it to appear up to --death-timeout).
    #[arg(long, value_name = "PATH")]
    pub scheduler_file: Option<PathBuf>,
    /// Exit (code 4, not restarted by the nanny) when no scheduler has been reachable for
    /// this many seconds, at start-up or after losing it.
    #[arg(long, value_name = "SECS")]
    pub death_timeout: Option<f64>,
    /// TLS and token.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Threads that run tasks (default: one per core).
    #[arg(long)]
    pub nthreads: Option<usize>,
    /// Memory limit: a size (4GiB, 500MB, 2147483648 bytes; at least 32 MiB), a fraction of
    /// this machine's memory (0.5), 0 for none, or `auto`: the container's (cgroup) memory
    /// limit when one is set below the machine's memory, else none.
    #[arg(long, default_value = "auto")]
    pub memory_limit: String,
    /// A name shown in logs and to clients.
    #[arg(long)]
    pub name: Option<String>,
    /// Interface for the data port that peers and clients fetch results from. The default,
    /// all interfaces, is advertised as the address the scheduler sees the worker connect from,
    /// so other machines can reach it; give an address to pin one interface.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Data port (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Directory for spill files: the worker makes its own directory in it and removes that
    /// when it exits (default: the system's temporary directory, TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub local_directory: Option<std::path::PathBuf>,
    /// Run the worker in this process instead of as a child that a nanny restarts when it
    /// dies abnormally (a signal, an abort, a non-zero exit).
    #[arg(long)]
    pub no_nanny: bool,
    /// Serve Prometheus `/metrics` and `/health` over HTTP at this address (`host:port`; `:0`
    /// for any free port on all interfaces; Dask's worker `--dashboard-address`). The address
    /// is logged at start. Default: no HTTP port.
    #[arg(long, value_name = "HOST:PORT")]
    pub dashboard_address: Option<String>,
    /// Metric name namespace on that port: `kiln` or `dask` (so Grafana dashboards written
    /// for Dask's worker metrics work).
    #[arg(long, default_value = "kiln")]
    pub metrics_namespace: String,
    /// Set by a nanny on the worker it runs (with `--no-nanny`): the worker may exit with
    /// [`EXIT_FRESH_START`](crate::EXIT_FRESH_START) to be started afresh.
    #[arg(long, hide = true)]
    pub supervised: bool,
}

/// Why worker flags do not make a worker configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerArgsInvalid {
    /// `--nthreads 0`.
    #[error("--nthreads must be at least 1")]
    NoThreads,
    /// Bad security settings or files.
    #[error("{0}")]
    Security(String),
    /// The scheduler file could not be read.
    #[error("{0}")]
    SchedulerFile(String),
    /// A death timeout that is not a positive number of seconds.
    #[error("--death-timeout {0}: expected a positive number of seconds")]
    DeathTimeout(String),
    /// A memory limit that is not a size or a fraction.
    #[error("--memory-limit {text:?}: {reason}")]
    MemoryLimit {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl WorkerArgs {
    /// The worker configuration these flags describe.
    ///
    /// # Errors
    /// [`WorkerArgsInvalid`] for zero threads or a memory limit that is neither a size nor a
    /// fraction of the machine's memory.
    pub fn to_config(&self) -> Result<WorkerConfig, WorkerArgsInvalid> {
        let death_timeout = match self.death_timeout {
            Some(s) if !(s.is_finite() && s > 0.0 && s < 1e9) => {
                return Err(WorkerArgsInvalid::DeathTimeout(s.to_string()));
            }
            s => s.map(Duration::from_secs_f64),
        };
        let scheduler = match (&self.scheduler, &self.scheduler_file) {
            (Some(address), _) => address.clone(),
            (None, Some(path)) => super::scheduler_file::wait_for(path, death_timeout.unwrap_or_default())
                .map_err(|e| WorkerArgsInvalid::SchedulerFile(e.to_string()))?,
            (None, None) => {
                return Err(WorkerArgsInvalid::SchedulerFile(
                    "give the scheduler's address or --scheduler-file".into(),
                ));
            }
        };
        let mut config = WorkerConfig::new(&scheduler);
        config.death_timeout = death_timeout;
        config.security =
            self.security.to_security(TlsRole::Worker).map_err(|e| WorkerArgsInvalid::Security(e.to_string()))?;
        if let Some(n) = self.nthreads {
            if n == 0 {
                return Err(WorkerArgsInvalid::NoThreads);
            }
            config.nthreads = n;
        }
        config.memory_limit = if self.memory_limit.trim().eq_ignore_ascii_case("auto") {
            // In a container, the kernel kills the worker at the cgroup's limit: spilling and
            // pausing must happen below it.
            cgroup_memory_limit().unwrap_or(0)
        } else {
            parse_memory_limit(&self.memory_limit, total_memory())?
        };
        config.name = self.name.clone();
        config.listen = format!("{}:{}", self.host, self.port);
        config.supervised = self.supervised;
        config.local_directory = self.local_directory.clone();
        config.http = self.dashboard_address.clone();
        config.metrics_namespace = self.metrics_namespace.clone();
        Ok(config)
    }
}

/// This machine's memory in bytes (`MemTotal` of `/proc/meminfo`), if known.
fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's control group (cgroup v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), when one is set below the machine's memory.
fn cgroup_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let text = read("/sys/fs/cgroup/memory.max").or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    parse_cgroup_limit(text.as_deref(), total_memory())
}

/// A cgroup memory limit's text: `max` or a number of bytes; cgroup v1 writes "no limit" as a
/// huge number, so a limit not below the machine's memory is none.
fn parse_cgroup_limit(text: Option<&str>, machine: Option<u64>) -> Option<u64> {
    let limit: u64 = text?.trim().parse().ok()?;
    match machine {
        Some(machine) if limit >= machine => None,
        _ => Some(limit).filter(|&l| l >= MIN_MEMORY_LIMIT),
    }
}

/// The smallest memory limit a worker can run under.
const MIN_MEMORY_LIMIT: u64 = 32 << 20;

/// Parses `4GiB`, `500MB`, `1.5G`, `2147483648` (bytes; at least 32 MiB), `0` (no limit) or a
/// fraction in (0, 1] of `machine` bytes (as Dask reads `--memory-limit 0.5`).
///
/// # Errors
/// [`WorkerArgsInvalid::MemoryLimit`] with the reason.
pub fn parse_memory_limit(text: &str, machine: Option<u64>) -> Result<u64, WorkerArgsInvalid> {
    let invalid = |reason: &str| WorkerArgsInvalid::MemoryLimit { text: text.to_string(), reason: reason.to_string() };
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| invalid("not a size (try 4GiB, 500MB or 0.5)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    if unit.is_empty() && value > 0.0 && value <= 1.0 && number.contains('.') {
        let machine = machine.ok_or_else(|| invalid("a fraction needs the machine's memory, which is unknown here"))?;
        return Ok((value * machine as f64) as u64);
    }
    let factor: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0f64.powi(3),
        "tib" => 1024.0f64.powi(4),
        _ => return Err(invalid("unknown unit (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(invalid("too large"));
    }
    if bytes > 0.0 && bytes < MIN_MEMORY_LIMIT as f64 {
        // A limit this small pauses the worker before it runs anything: refuse it rather than
        // start a worker that can never work (`2.5` is 2 bytes, not 2.5 GB).
        return Err(invalid("below the 32 MiB a worker needs (give a unit: 2.5GB, or a fraction: 0.5)"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_units_and_fractions() {
        let gib = 1u64 << 30;
        assert_eq!(parse_memory_limit("4GiB", None), Ok(4 * gib));
        assert_eq!(parse_memory_limit("500MB", None), Ok(500_000_000));
        assert_eq!(parse_memory_limit("1.5G", None), Ok(1_500_000_000));
        assert_eq!(parse_memory_limit("33554432", None), Ok(32 << 20));
        assert_eq!(parse_memory_limit("0", None), Ok(0));
        assert_eq!(parse_memory_limit("0.5", Some(24 * gib)), Ok(12 * gib));
        assert_eq!(parse_memory_limit("1.0", Some(gib)), Ok(gib));
    }

    #[test]
    fn limits_that_cannot_work_are_refused_with_the_reason() {
        let reason = |text: &str, machine| match parse_memory_limit(text, machine) {
            Err(WorkerArgsInvalid::MemoryLimit { reason, .. }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert!(reason("lots", None).contains("not a size"));
        assert!(reason("4 parsecs", None).contains("unknown unit"));
        assert!(reason("0.5", None).contains("machine's memory"));
        assert!(reason("99999999999TiB", None).contains("too large"));
        assert!(reason("2.5", None).contains("below the 32 MiB"));
        assert!(reason("1024", None).contains("below the 32 MiB"));
    }

    #[test]
    fn the_cgroup_limit_is_used_only_when_it_limits() {
        let gib = 1u64 << 30;
        assert_eq!(parse_cgroup_limit(Some("4294967296\n"), Some(16 * gib)), Some(4 * gib));
        assert_eq!(parse_cgroup_limit(Some("max\n"), Some(16 * gib)), None);
        // cgroup v1's "no limit".
        assert_eq!(parse_cgroup_limit(Some("9223372036854771712"), Some(16 * gib)), None);
        assert_eq!(parse_cgroup_limit(Some("4294967296"), None), Some(4 * gib));
        assert_eq!(parse_cgroup_limit(None, Some(gib)), None);
        assert_eq!(parse_cgroup_limit(Some("garbage"), Some(gib)), None);
    }

    #[test]
    fn zero_threads_are_refused() {
        let args = WorkerArgs {
            scheduler: Some("tcp://h:1".into()),
            scheduler_file: None,
            death_timeout: None,
            security: SecurityArgs::default(),
            nthreads: Some(0),
            memory_limit: "0".into(),
            name: None,
            host: "0.0.0.0".into(),
            port: 0,
            local_directory: None,
            dashboard_address: None,
            metrics_namespace: "kiln".into(),
            no_nanny: false,
            supervised: false,
        };
        assert_eq!(args.to_config().unwrap_err(), WorkerArgsInvalid::NoThreads);
    }
}
