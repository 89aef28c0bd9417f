//! Job-queue clusters against fake batch systems: `sbatch/squeue/scancel`, `qsub/qstat/qdel`
//! (PBS and SGE) and `bsub/bjobs/bkill` written by the test as shell scripts on the cluster's
//! `PATH`. They do what the real ones do to a job script: check its header, run it (as a
//! process group of its own, in the background), list it while it runs, and signal it when
//! cancelled. The jobs' `kiln worker` processes are real and compute real array sums.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln::Collection;
use kiln_deploy::jobqueue::{JobQueueCluster, JobSpec, JobState, JobSystem};
use kiln_deploy::{JobQueueClusterBuilder, JobQueueError};

mod support;
use support::processes_mentioning;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A fresh directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-jobqueue-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/bash\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes the fake commands of `system` into `bin`, keeping their queue in `queue`.
fn fake_batch_system(system: JobSystem, bin: &Path, queue: &Path) {
    let q = queue.display();
    // Submit: the script as an argument or on stdin; its header must be this system's.
    let (submit, directive, printed, stdin) = match system {
        JobSystem::Slurm => ("sbatch", "#SBATCH", "Submitted batch job %s", false),
        JobSystem::Pbs => ("qsub", "#PBS", "%s.fake-pbs-server", false),
        JobSystem::Sge => ("qsub", "#\\$", "Your job %s (\"kiln-worker\") has been submitted", false),
        JobSystem::Lsf => ("bsub", "#BSUB", "Job <%s> is submitted to default queue <normal>.", true),
    };
    let read_script = if stdin {
        format!("script={q}/stdin-$$.sh; cat > \"$script\"")
    } else {
        "script=\"$1\"; [ -f \"$script\" ] || { echo \"no such script: $script\" >&2; exit 2; }".to_string()
    };
    write_script(
        &bin.join(submit),
        &format!(
            "set -e\n{read_script}\n\
             grep -q '^{directive} ' \"$script\" || {{ echo \"{submit}: not a {directive} script\" >&2; exit 1; }}\n\
             n=$(( $(cat {q}/next 2>/dev/null || echo 100) + 1 )); echo $n > {q}/next\n\
             setsid bash \"$script\" > {q}/$n.log 2>&1 < /dev/null &\n\
             echo $! > {q}/$n.pid\n\
             printf '{printed}\\n' $n\n"
        ),
    );
    // Cancel: signal the job's process group; an unknown or ended job is an error, as qdel's.
    let cancel = system.cancel_command();
    write_script(
        &bin.join(cancel),
        &format!(
            "status=0\nfor id in \"$@\"; do id=${{id%%.*}}\n\
               p=$(cat {q}/$id.pid 2>/dev/null) && kill -0 $p 2>/dev/null \
                 && kill -TERM -- -$p || {{ echo \"{cancel}: job $id does not exist\" >&2; status=1; }}\n\
             done\nexit $status\n"
        ),
    );
    // Status: the running jobs, in this system's format.
    let (status, header, line) = match system {
        JobSystem::Slurm => ("squeue", "", "$id RUNNING"),
        JobSystem::Pbs => (
            "qstat",
            "Job id            Name             User              Time Use S Queue\n\
             ----------------  ---------------- ----------------  -------- - -----",
            "$id.fake-pbs-server kiln-worker me 00:00:01 R workq",
        ),
        JobSystem::Sge => (
            "qstat",
            "job-ID  prior   name       user         state submit/start at     queue     slots\n\
             --------------------------------------------------------------------------------",
            "    $id 0.55500 kiln-worke me           r     11/28/2026 02:40:00 all.q@n1     1",
        ),
        JobSystem::Lsf => ("bjobs", "", "$id RUN"),
    };
    let header = if header.is_empty() { String::new() } else { format!("cat <<'EOF'\n{header}\nEOF\n") };
    write_script(
        &bin.join(status),
        &format!(
            "{header}for f in {q}/*.pid; do [ -e \"$f\" ] || continue; id=$(basename $f .pid)\n\
               kill -0 $(cat $f) 2>/dev/null && echo \"{line}\"\n\
             done\nexit 0\n"
        ),
    );
}

struct Fake {
    dir: PathBuf,
    queue: PathBuf,
    path: String,
}

impl Fake {
    fn new(system: JobSystem, tag: &str) -> Fake {
        let dir = temp_dir(tag);
        let (bin, queue) = (dir.join("bin"), dir.join("queue"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&queue).unwrap();
        fake_batch_system(system, &bin, &queue);
        Fake { path: format!("{}:/usr/bin:/bin", bin.display()), dir, queue }
    }

    fn builder(&self, system: JobSystem, spec: JobSpec) -> JobQueueClusterBuilder {
        JobQueueCluster::builder(system, spec)
            .binary(KILN)
            .host("127.0.0.1")
            .directory(self.dir.join("shared"))
            .command_path(&self.path)
            .death_timeout(30)
            // One process per worker keeps the test light; the nanny is tested elsewhere.
            .worker_args(vec!["--no-nanny".into()])
    }

    /// The jobs' logs, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.queue).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                text += &format!("== {}\n{}\n", entry.path().display(), std::fs::read_to_string(entry.path()).unwrap());
            }
        }
        text
    }

    /// Jobs the fake system has started so far.
    fn submitted(&self) -> usize {
        std::fs::read_to_string(self.queue.join("next")).map_or(0, |n| n.trim().parse::<usize>().unwrap() - 100)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // Whatever a failed test left running: every job's process group.
        if let Ok(entries) = std::fs::read_dir(&self.queue) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "pid") {
                    let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let _ =
                        std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", pid.trim())]).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(cores: u32, processes: u32) -> JobSpec {
    JobSpec { cores, processes, memory: u64::from(processes) * (256 << 20), ..JobSpec::default() }
}

/// The sum of 0..n in chunks of `chunk`, on the cluster.
fn array_sum(client: &kiln_distributed::Client, n: usize, chunk: usize) -> f64 {
    let x = kiln::array::arange::<f64>(0.0, n as f64, 1.0, chunk);
    x.sum().compute_on(client).unwrap().first().copied().unwrap()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "still waiting after {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Scales up, computes, scales down (retiring the removed jobs' workers), computes again,
/// closes, and checks that no job process is left.
fn scale_up_and_down(system: JobSystem, tag: &str, cores: u32, processes: u32, secure: bool) {
    let fake = Fake::new(system, tag);
    let cluster = fake.builder(system, spec(cores, processes)).secure(secure).start().unwrap();
    assert!(cluster.address().starts_with(if secure { "tls://127.0.0.1:" } else { "tcp://127.0.0.1:" }));
    let per_job = processes as usize;
    cluster.scale(2 * per_job).unwrap();
    assert_eq!(cluster.jobs().len(), 2);
    assert_eq!(cluster.requested_workers(), 2 * per_job);
    if let Err(e) = cluster.wait_for_workers(2 * per_job, Duration::from_secs(60)) {
        panic!("{e}\n{}", fake.logs());
    }
    let states = cluster.job_status().unwrap();
    assert!(states.iter().all(|s| s.state == JobState::Running), "{states:?}");
    let client = cluster.client().unwrap();
    let names: Vec<String> = client.workers().into_iter().map(|w| w.name).collect();
    let expected_names: Vec<String> = cluster.jobs().iter().flat_map(|j| j.workers.clone()).collect();
    assert!(expected_names.iter().all(|n| names.contains(n)), "{names:?} vs {expected_names:?}");
    assert_eq!(array_sum(&client, 10_000, 500), 49_995_000.0);

    // Down to one job: the newest goes, its workers retired, then it is cancelled.
    let leaving = cluster.jobs()[1].clone();
    cluster.scale(per_job).unwrap();
    assert_eq!(cluster.jobs().len(), 1);
    wait_until("the removed job's workers to leave", Duration::from_secs(30), || {
        client.workers().iter().all(|w| !leaving.workers.contains(&w.name))
    });
    assert_eq!(client.workers().len(), per_job);
    let address = cluster.address().to_string();
    wait_until("the removed job's process to end", Duration::from_secs(30), || {
        processes_mentioning(&leaving.script.display().to_string()).is_empty()
    });
    assert_eq!(array_sum(&client, 20_000, 1000), 199_990_000.0);

    drop(client);
    cluster.close().unwrap();
    wait_until("every job process to end", Duration::from_secs(30), || processes_mentioning(&address).is_empty());
    assert_eq!(fake.submitted(), 2);
}

#[test]
fn slurm_jobs_scale_up_and_down() {
    scale_up_and_down(JobSystem::Slurm, "slurm", 1, 1, false);
}

#[test]
fn pbs_jobs_of_two_workers_scale_up_and_down() {
    scale_up_and_down(JobSystem::Pbs, "pbs", 2, 2, false);
}

#[test]
fn sge_jobs_over_tls_scale_up_and_down() {
    scale_up_and_down(JobSystem::Sge, "sge", 1, 1, true);
}

#[test]
fn lsf_jobs_scale_up_and_down() {
    scale_up_and_down(JobSystem::Lsf, "lsf", 1, 1, false);
}

#[test]
fn adaptive_jobs_follow_the_load_and_end_when_it_stops() {
    let fake = Fake::new(JobSystem::Slurm, "adapt");
    let cluster = fake.builder(JobSystem::Slurm, spec(1, 1)).start().unwrap();
    cluster.adapt(0, 2);
    let client = cluster.client().unwrap();
    // No job yet: the graph's tasks are the load that makes the cluster grow.
    assert_eq!(array_sum(&client, 40_000, 1000), 799_980_000.0);
    assert!(fake.submitted() >= 1, "no job was submitted");
    // Idle: the jobs are removed (after the scale-down delay) and their processes end.
    wait_until("the idle cluster to shrink to no job", Duration::from_secs(60), || cluster.jobs().is_empty());
    let address = cluster.address().to_string();
    wait_until("the jobs' processes to end", Duration::from_secs(30), || processes_mentioning(&address).is_empty());
    cluster.stop_adapting();
    cluster.close().unwrap();
}

#[test]
fn a_missing_batch_system_is_named_at_start() {
    let dir = temp_dir("missing");
    let err = JobQueueCluster::builder(JobSystem::Lsf, spec(1, 1))
        .host("127.0.0.1")
        .directory(dir.join("shared"))
        .command_path(dir.join("empty-bin"))
        .start()
        .err()
        .unwrap();
    assert!(matches!(err, JobQueueError::CommandMissing { .. }), "{err:?}");
    assert!(err.to_string().starts_with("`bsub` was not found on PATH"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_submit_command_is_reported_with_its_output() {
    let fake = Fake::new(JobSystem::Slurm, "failing");
    let bin = fake.dir.join("bin");
    write_script(&bin.join("sbatch"), "echo 'sbatch: error: invalid partition specified: bogus' >&2\nexit 1\n");
    let mut bogus = spec(1, 1);
    bogus.queue = Some("bogus".into());
    let cluster = fake.builder(JobSystem::Slurm, bogus).start().unwrap();
    let err = cluster.scale(1).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("`sbatch "), "{text}");
    assert!(text.contains("exit status: 1") && text.contains("invalid partition specified: bogus"), "{text}");
    assert!(cluster.jobs().is_empty());
    // A submit command that prints no job id is an error too, not a job.
    write_script(&bin.join("sbatch"), "echo 'queue is closed'\n");
    let err = cluster.scale(1).unwrap_err();
    assert!(matches!(err, JobQueueError::NoJobId { .. }), "{err:?}");
    assert!(err.to_string().contains("queue is closed"), "{err}");
    cluster.close().unwrap();
}

#[test]
fn the_cli_prints_the_job_script_with_dry_run() {
    let out = std::process::Command::new(KILN)
        .args(["jobqueue", "slurm", "--jobs", "4", "--cores", "8", "--memory", "32GiB", "--walltime", "01:00:00"])
        .args(["--queue", "normal", "--account", "proj42", "--job-extra=--exclusive", "--dry-run"])
        .args(["--host", "10.1.2.3", "--remote-kiln", "/opt/kiln/bin/kiln"])
        // No batch system is needed to print a script.
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = "#!/usr/bin/env bash\n#SBATCH -J kiln-worker\n#SBATCH -p normal\n#SBATCH -A proj42\n\
                    #SBATCH -n 1\n#SBATCH --cpus-per-task=8\n#SBATCH --mem=32768M\n#SBATCH -t 01:00:00\n\
                    #SBATCH --exclusive\n\n\
                    exec /opt/kiln/bin/kiln worker tcp://10.1.2.3:8786 --nthreads 8 --memory-limit 34359738368 \
                    --name kiln-worker-0 --death-timeout 60\n";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    // Settings that cannot make a job are refused before anything is submitted.
    let out = std::process::Command::new(KILN)
        .args(["jobqueue", "pbs", "--cores", "2", "--processes", "4", "--dry-run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("processes must be between 1 and cores (2), not 4"));
}

#[test]
fn the_cli_submits_jobs_and_cancels_them_on_sigterm() {
    use std::io::BufRead;
    let fake = Fake::new(JobSystem::Slurm, "cli");
    let scheduler_file = fake.dir.join("scheduler.json");
    let mut command = std::process::Command::new(KILN);
    command
        .args(["jobqueue", "slurm", "--jobs", "2", "--memory", "512MiB", "--host", "127.0.0.1", "--port", "0"])
        .args(["--remote-kiln", KILN, "--worker-arg=--no-nanny", "--directory"])
        .arg(fake.dir.join("shared"))
        .arg("--scheduler-file")
        .arg(&scheduler_file)
        .env("PATH", &fake.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut cli = support::Guard(command.spawn().unwrap());
    let mut lines = std::io::BufReader::new(cli.0.stdout.take().unwrap()).lines();
    // Log lines may come between (the logs go to standard output too).
    let mut after = |prefix: &str| {
        lines.by_ref().map_while(Result::ok).find_map(|l| l.strip_prefix(prefix).map(str::to_string)).unwrap()
    };
    let address = after("Scheduler at ");
    assert_eq!(kiln_distributed::scheduler_file::read(&scheduler_file).unwrap(), address);
    assert_eq!(after("Submitted "), "2 jobs: 101 102");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let client = kiln_distributed::Client::connect(&address).unwrap();
    if let Err(e) = client.wait_for_workers(2, Duration::from_secs(60)) {
        panic!("{e}\n{}", fake.logs());
    }
    assert_eq!(array_sum(&client, 10_000, 500), 49_995_000.0);
    drop(client);
    assert!(std::process::Command::new("kill").args(["-TERM", &cli.0.id().to_string()]).status().unwrap().success());
    wait_until("kiln jobqueue to exit", Duration::from_secs(30), || cli.0.try_wait().unwrap().is_some());
    assert!(cli.0.try_wait().unwrap().unwrap().success());
    wait_until("the jobs' processes to end", Duration::from_secs(30), || processes_mentioning(&address).is_empty());
    assert!(!scheduler_file.exists(), "the scheduler file is removed at exit");
}
