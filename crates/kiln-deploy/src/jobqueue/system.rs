//! What differs between batch systems, as pure functions: the job script's header, the
//! commands that submit, cancel and list jobs, and how their output is read. Nothing here runs
//! a process, so every system's text is a unit test.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::JobQueueError;
use crate::shell::quote;

/// A batch system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobSystem {
    /// SLURM: `sbatch`, `squeue`, `scancel`.
    Slurm,
    /// PBS Professional / OpenPBS: `qsub`, `qstat`, `qdel`.
    Pbs,
    /// (Son of) Grid Engine: `qsub`, `qstat`, `qdel`.
    Sge,
    /// IBM Spectrum LSF: `bsub`, `bjobs`, `bkill`.
    Lsf,
}

impl std::str::FromStr for JobSystem {
    type Err = JobQueueError;
    fn from_str(text: &str) -> Result<JobSystem, JobQueueError> {
        match text.to_ascii_lowercase().as_str() {
            "slurm" => Ok(JobSystem::Slurm),
            "pbs" => Ok(JobSystem::Pbs),
            "sge" => Ok(JobSystem::Sge),
            "lsf" => Ok(JobSystem::Lsf),
            _ => Err(JobQueueError::Invalid(format!("unknown batch system {text:?} (slurm, pbs, sge or lsf)"))),
        }
    }
}

/// Where a job is in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources (or held).
    Pending,
    /// Started.
    Running,
    /// Finished, failed or cancelled (or no longer listed).
    Ended,
}

/// One job as the status command lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The batch system's job id.
    pub id: String,
    /// Its state.
    pub state: JobState,
    /// The state as the system wrote it (`PENDING`, `qw`, `RUN`, ...).
    pub raw: String,
}

/// How a command receives the job script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptInput {
    /// As the last argument (a file).
    Argument,
    /// On standard input (`bsub < script`).
    Stdin,
}

/// A wall-clock limit, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walltime(pub u64);

impl std::str::FromStr for Walltime {
    type Err = JobQueueError;
    /// `HH:MM:SS`, `MM:SS`, `D-HH:MM:SS` or a number of minutes.
    fn from_str(text: &str) -> Result<Walltime, JobQueueError> {
        let bad = || JobQueueError::Invalid(format!("walltime {text:?}: expected HH:MM:SS, D-HH:MM:SS or minutes"));
        let (days, rest) = match text.split_once('-') {
            Some((d, rest)) => (d.parse::<u64>().map_err(|_| bad())?, rest),
            None => (0, text),
        };
        let parts: Vec<u64> = rest.split(':').map(|p| p.parse::<u64>().map_err(|_| bad())).collect::<Result<_, _>>()?;
        let secs = match parts.as_slice() {
            [m] if days == 0 => m.checked_mul(60),
            [m, s] if *s < 60 => m.checked_mul(60).and_then(|m| m.checked_add(*s)),
            [h, m, s] if *m < 60 && *s < 60 => h.checked_mul(3600).and_then(|h| h.checked_add(m * 60 + s)),
            _ => None,
        }
        .and_then(|s| days.checked_mul(86_400).and_then(|d| d.checked_add(s)))
        .filter(|&s| s > 0)
        .ok_or_else(bad)?;
        Ok(Walltime(secs))
    }
}

impl Walltime {
    /// `HH:MM:SS` (hours may exceed 24).
    pub fn hms(self) -> String {
        format!("{:02}:{:02}:{:02}", self.0 / 3600, self.0 / 60 % 60, self.0 % 60)
    }

    /// `HH:MM`, minutes rounded up (LSF's `-W`).
    pub fn hm(self) -> String {
        let minutes = self.0.div_ceil(60);
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

/// What one job asks the batch system for, and how many workers it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Cores of the job, shared by its worker processes.
    pub cores: u32,
    /// Memory of the job in bytes, shared by its worker processes.
    pub memory: u64,
    /// Worker processes per job (each gets `cores / processes` threads).
    pub processes: u32,
    /// The job's wall-clock limit.
    pub walltime: Option<Walltime>,
    /// The queue (SLURM partition).
    pub queue: Option<String>,
    /// The account or project charged.
    pub account: Option<String>,
    /// The job's name in the queue.
    pub job_name: String,
    /// More header directives, with or without the system's prefix (`--exclusive` becomes
    /// `#SBATCH --exclusive`).
    pub job_extra: Vec<String>,
    /// Shell lines run before the workers (`module load ...`, `source env/bin/activate`).
    pub prologue: Vec<String>,
    /// Where the batch system writes the job's output (default: its own choice).
    pub log_directory: Option<PathBuf>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            cores: 1,
            memory: 4 << 30,
            processes: 1,
            walltime: Some(Walltime(3600)),
            queue: None,
            account: None,
            job_name: "kiln-worker".into(),
            job_extra: Vec::new(),
            prologue: Vec::new(),
            log_directory: None,
        }
    }
}

/// The smallest memory a worker process runs under (as `kiln worker --memory-limit`).
const MIN_WORKER_MEMORY: u64 = 32 << 20;

impl JobSpec {
    /// Checks that the settings make a job that can run workers.
    ///
    /// # Errors
    /// [`JobQueueError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), JobQueueError> {
        let invalid = |m: String| Err(JobQueueError::Invalid(m));
        if self.cores == 0 {
            return invalid("cores must be at least 1".into());
        }
        if self.processes == 0 || self.processes > self.cores {
            return invalid(format!("processes must be between 1 and cores ({}), not {}", self.cores, self.processes));
        }
        if self.memory / u64::from(self.processes) < MIN_WORKER_MEMORY {
            return invalid(format!(
                "memory {} bytes leaves less than 32 MiB per worker process ({} processes)",
                self.memory, self.processes
            ));
        }
        let lines = self.job_extra.iter().chain(&self.prologue).chain(&self.queue).chain(&self.account);
        for line in lines.chain(std::iter::once(&self.job_name)) {
            // A newline in a setting would inject lines into the script.
            if line.contains(['\n', '\r', '\0']) {
                return invalid(format!("{line:?} holds a line break: give one directive or line per value"));
            }
        }
        if self.job_name.is_empty() || self.job_name.contains(char::is_whitespace) {
            return invalid(format!("job name {:?} must be a non-empty word", self.job_name));
        }
        Ok(())
    }

    /// Threads per worker process.
    pub fn threads_per_worker(&self) -> u32 {
        (self.cores / self.processes.max(1)).max(1)
    }

    /// The names of the workers a job named `job` starts.
    pub fn worker_names(&self, job: &str) -> Vec<String> {
        if self.processes == 1 {
            vec![job.to_string()]
        } else {
            (0..self.processes).map(|i| format!("{job}-{i}")).collect()
        }
    }

    /// Memory limit per worker process, in bytes.
    pub fn memory_per_worker(&self) -> u64 {
        self.memory / u64::from(self.processes.max(1))
    }
}

/// The worker processes a job starts: everything of their command line but the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLaunch {
    /// The `kiln` binary (or the user's worker binary) as the compute node sees it.
    pub binary: String,
    /// The scheduler's address (`tcp://host:port` or `tls://...`).
    pub scheduler: String,
    /// Seconds a worker waits for an unreachable scheduler before it exits (and the job ends).
    pub death_timeout: u64,
    /// `--tls-ca-file`, `--tls-cert`, `--tls-key`, on the shared file system.
    pub tls_files: Option<[PathBuf; 3]>,
    /// `--auth-token FILE` on the shared file system.
    pub token_file: Option<PathBuf>,
    /// More flags for `kiln worker`.
    pub extra_args: Vec<String>,
}

impl WorkerLaunch {
    /// The shell command line of the worker named `name` of a job of `spec`.
    pub fn command_line(&self, spec: &JobSpec, name: &str) -> String {
        let mut words = vec![
            quote(&self.binary),
            "worker".to_string(),
            quote(&self.scheduler),
            "--nthreads".into(),
            spec.threads_per_worker().to_string(),
            "--memory-limit".into(),
            spec.memory_per_worker().to_string(),
            "--name".into(),
            quote(name),
            "--death-timeout".into(),
            self.death_timeout.to_string(),
        ];
        if let Some([ca, cert, key]) = &self.tls_files {
            for (flag, path) in [("--tls-ca-file", ca), ("--tls-cert", cert), ("--tls-key", key)] {
                words.push(flag.into());
                words.push(quote(&path.to_string_lossy()));
            }
        }
        if let Some(token) = &self.token_file {
            words.push("--auth-token".into());
            words.push(quote(&token.to_string_lossy()));
        }
        words.extend(self.extra_args.iter().map(|a| quote(a)));
        words.join(" ")
    }
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

impl JobSystem {
    /// `slurm`, `pbs`, `sge` or `lsf`.
    pub fn name(self) -> &'static str {
        match self {
            JobSystem::Slurm => "slurm",
            JobSystem::Pbs => "pbs",
            JobSystem::Sge => "sge",
            JobSystem::Lsf => "lsf",
        }
    }

    /// The header lines' prefix (`#SBATCH`, ...).
    pub fn directive(self) -> &'static str {
        match self {
            JobSystem::Slurm => "#SBATCH",
            JobSystem::Pbs => "#PBS",
            JobSystem::Sge => "#$",
            JobSystem::Lsf => "#BSUB",
        }
    }

    /// The command that submits a script, and how it takes the script.
    pub fn submit_command(self) -> (&'static str, ScriptInput) {
        match self {
            JobSystem::Slurm => ("sbatch", ScriptInput::Argument),
            JobSystem::Pbs | JobSystem::Sge => ("qsub", ScriptInput::Argument),
            JobSystem::Lsf => ("bsub", ScriptInput::Stdin),
        }
    }

    /// The command that cancels jobs (ids as arguments).
    pub fn cancel_command(self) -> &'static str {
        match self {
            JobSystem::Slurm => "scancel",
            JobSystem::Pbs | JobSystem::Sge => "qdel",
            JobSystem::Lsf => "bkill",
        }
    }

    /// The command and arguments that list the state of `ids`.
    pub fn status_command(self, ids: &[String]) -> (&'static str, Vec<String>) {
        match self {
            JobSystem::Slurm => {
                ("squeue", vec!["--noheader".into(), "--format=%i %T".into(), format!("--jobs={}", ids.join(","))])
            }
            JobSystem::Pbs => ("qstat", ids.to_vec()),
            // SGE's qstat lists all of the user's jobs; the ids are picked out of it.
            JobSystem::Sge => ("qstat", Vec::new()),
            JobSystem::Lsf => {
                let mut args = vec!["-noheader".to_string(), "-o".into(), "jobid stat".into()];
                args.extend(ids.iter().cloned());
                ("bjobs", args)
            }
        }
    }

    /// The job id in what the submit command printed: its first run of digits (`Submitted
    /// batch job 42`, `42.pbs-server`, `Your job 42 ("kiln") has been submitted`, `Job <42>
    /// is submitted to queue <normal>.`).
    pub fn parse_job_id(self, output: &str) -> Option<String> {
        let start = output.find(|c: char| c.is_ascii_digit())?;
        let digits: String = output[start..].chars().take_while(char::is_ascii_digit).collect();
        Some(digits)
    }

    /// The jobs listed in the status command's output (header lines skipped).
    pub fn parse_status(self, output: &str) -> Vec<JobStatus> {
        let (id_column, state_column) = match self {
            JobSystem::Slurm | JobSystem::Lsf => (0, 1),
            JobSystem::Pbs | JobSystem::Sge => (0, 4),
        };
        output
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let id = words.get(id_column)?;
                // `42.pbs-server` is job 42; headers and rules do not start with a digit.
                let id: String = id.chars().take_while(char::is_ascii_digit).collect();
                if id.is_empty() {
                    return None;
                }
                let raw = words.get(state_column)?.to_string();
                Some(JobStatus { id, state: self.state_of(&raw), raw })
            })
            .collect()
    }

    fn state_of(self, raw: &str) -> JobState {
        match self {
            JobSystem::Slurm => match raw {
                "PENDING" | "CONFIGURING" | "REQUEUED" | "RESV_DEL_HOLD" | "SUSPENDED" => JobState::Pending,
                "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => JobState::Running,
                _ => JobState::Ended,
            },
            JobSystem::Pbs => match raw {
                "Q" | "H" | "W" | "T" | "S" | "U" => JobState::Pending,
                "R" | "E" | "B" => JobState::Running,
                _ => JobState::Ended,
            },
            // Grid Engine states are letter sets: `qw`, `hqw`, `r`, `t`, `Eqw`, `dr`.
            JobSystem::Sge if raw.contains(['d', 'E']) => JobState::Ended,
            JobSystem::Sge if raw.contains(['r', 't']) => JobState::Running,
            JobSystem::Sge if raw.contains(['q', 'h', 's', 'S']) => JobState::Pending,
            JobSystem::Sge => JobState::Ended,
            JobSystem::Lsf => match raw {
                "PEND" | "PSUSP" | "WAIT" => JobState::Pending,
                "RUN" | "USUSP" | "SSUSP" | "PROV" => JobState::Running,
                _ => JobState::Ended,
            },
        }
    }

    /// The header directives of a job of `spec`.
    pub fn header(self, spec: &JobSpec) -> Vec<String> {
        let d = self.directive();
        let name = &spec.job_name;
        let memory = mib(spec.memory);
        let mut lines = Vec::new();
        let log = spec.log_directory.as_ref().map(|p| p.to_string_lossy().into_owned());
        match self {
            JobSystem::Slurm => {
                lines.push(format!("{d} -J {name}"));
                if let Some(log) = &log {
                    lines.push(format!("{d} -o {log}/%x-%j.out"));
                }
                if let Some(q) = &spec.queue {
                    lines.push(format!("{d} -p {q}"));
                }
                if let Some(a) = &spec.account {
                    lines.push(format!("{d} -A {a}"));
                }
                lines.push(format!("{d} -n 1"));
                lines.push(format!("{d} --cpus-per-task={}", spec.cores));
                lines.push(format!("{d} --mem={memory}M"));
                if let Some(w) = spec.walltime {
                    lines.push(format!("{d} -t {}", w.hms()));
                }
            }
            JobSystem::Pbs => {
                lines.push(format!("{d} -N {name}"));
                if let Some(log) = &log {
                    lines.push(format!("{d} -j oe"));
                    lines.push(format!("{d} -o {log}/"));
                }
                if let Some(q) = &spec.queue {
                    lines.push(format!("{d} -q {q}"));
                }
                if let Some(a) = &spec.account {
                    lines.push(format!("{d} -A {a}"));
                }
                lines.push(format!("{d} -l select=1:ncpus={}:mem={memory}mb", spec.cores));
                if let Some(w) = spec.walltime {
                    lines.push(format!("{d} -l walltime={}", w.hms()));
                }
            }
            JobSystem::Sge => {
                lines.push(format!("{d} -N {name}"));
                lines.push(format!("{d} -S /bin/bash"));
                lines.push(format!("{d} -cwd"));
                lines.push(format!("{d} -j y"));
                if let Some(log) = &log {
                    lines.push(format!("{d} -o {log}"));
                }
                if let Some(q) = &spec.queue {
                    lines.push(format!("{d} -q {q}"));
                }
                if let Some(a) = &spec.account {
                    lines.push(format!("{d} -P {a}"));
                }
                if spec.cores > 1 {
                    // The parallel environment's name is the site's; `smp` is the common
                    // one (another can be given with a job-extra `-pe NAME N`).
                    lines.push(format!("{d} -pe smp {}", spec.cores));
                }
                // h_vmem is per slot.
                lines.push(format!("{d} -l h_vmem={}M", memory.div_ceil(u64::from(spec.cores.max(1)))));
                if let Some(w) = spec.walltime {
                    lines.push(format!("{d} -l h_rt={}", w.hms()));
                }
            }
            JobSystem::Lsf => {
                lines.push(format!("{d} -J {name}"));
                if let Some(log) = &log {
                    lines.push(format!("{d} -o {log}/{name}-%J.out"));
                }
                if let Some(q) = &spec.queue {
                    lines.push(format!("{d} -q {q}"));
                }
                if let Some(a) = &spec.account {
                    lines.push(format!("{d} -P {a}"));
                }
                lines.push(format!("{d} -n {}", spec.cores));
                lines.push(format!("{d} -R \"span[hosts=1]\""));
                lines.push(format!("{d} -M {memory}MB"));
                if let Some(w) = spec.walltime {
                    lines.push(format!("{d} -W {}", w.hm()));
                }
            }
        }
        for extra in &spec.job_extra {
            let extra = extra.trim();
            lines.push(if extra.starts_with('#') { extra.to_string() } else { format!("{d} {extra}") });
        }
        lines
    }

    /// The whole job script of job `job` (its workers are named `{job}` or `{job}-{i}`).
    pub fn render_script(self, spec: &JobSpec, launch: &WorkerLaunch, job: &str) -> String {
        let mut script = String::from("#!/usr/bin/env bash\n");
        for line in self.header(spec) {
            script.push_str(&line);
            script.push('\n');
        }
        script.push('\n');
        for line in &spec.prologue {
            script.push_str(line);
            script.push('\n');
        }
        if spec.processes == 1 {
            // `exec`: the batch system's signals reach the worker itself.
            let _ = writeln!(script, "exec {}", launch.command_line(spec, job));
        } else {
            script.push_str("trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT\n");
            for i in 0..spec.processes {
                let _ = writeln!(script, "{} &", launch.command_line(spec, &format!("{job}-{i}")));
            }
            script.push_str("wait\n");
        }
        script
    }
}
