//! Job scripts per batch system against golden files (`tests/golden/*.sh`); run with
//! `KILN_BLESS=1` to rewrite them after an intended change, then review the diff.
//! And the outputs of the batch systems' commands, as their real versions print them.

use std::path::PathBuf;

use kiln_deploy::jobqueue::{JobSpec, JobState, JobSystem, Walltime, WorkerLaunch};

fn spec(processes: u32, extra: &str) -> JobSpec {
    JobSpec {
        cores: 8,
        memory: 32 << 30,
        processes,
        walltime: Some("01:30:00".parse().unwrap()),
        queue: Some("normal".into()),
        account: Some("proj42".into()),
        job_name: "kiln-worker".into(),
        job_extra: vec![extra.into(), "# a comment line is kept as it is".into()],
        prologue: vec!["module load kiln".into()],
        log_directory: Some(PathBuf::from("/shared/logs")),
    }
}

fn launch(tls: bool) -> WorkerLaunch {
    WorkerLaunch {
        binary: "/opt/kiln/bin/kiln".into(),
        scheduler: if tls { "tls://10.0.0.5:8786".into() } else { "tcp://10.0.0.5:8786".into() },
        death_timeout: 60,
        tls_files: tls.then(|| {
            ["ca.pem", "worker.pem", "worker-key.pem"].map(|f| PathBuf::from(format!("/shared/kiln dir/tls/{f}")))
        }),
        token_file: Some(PathBuf::from("/shared/kiln/auth-token")),
        extra_args: vec!["--local-directory".into(), "/scratch/kiln".into()],
    }
}

fn check(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with KILN_BLESS=1 to create it)", path.display()));
    assert_eq!(text, golden, "{name} differs from its golden file (KILN_BLESS=1 rewrites it)");
}

#[test]
fn slurm_script() {
    check("slurm.sh", &JobSystem::Slurm.render_script(&spec(1, "--exclusive"), &launch(false), "kiln-worker-3"));
}

#[test]
fn pbs_script_with_two_workers_per_job() {
    check("pbs.sh", &JobSystem::Pbs.render_script(&spec(2, "-l place=excl"), &launch(false), "kiln-worker-0"));
}

#[test]
fn sge_script_with_tls() {
    check("sge.sh", &JobSystem::Sge.render_script(&spec(1, "-l exclusive=true"), &launch(true), "kiln-worker-1"));
}

#[test]
fn lsf_script_with_four_workers_per_job() {
    check("lsf.sh", &JobSystem::Lsf.render_script(&spec(4, "-x"), &launch(false), "kiln-worker-2"));
}

#[test]
fn a_minimal_job_has_no_optional_lines() {
    let spec = JobSpec { walltime: None, ..JobSpec::default() };
    let script = JobSystem::Slurm.render_script(&spec, &launch(false), "w");
    assert!(!script.contains(" -p ") && !script.contains(" -A ") && !script.contains(" -t "), "{script}");
    assert!(script.contains("#SBATCH --cpus-per-task=1\n#SBATCH --mem=4096M\n"), "{script}");
}

#[test]
fn scripts_are_valid_bash() {
    for (system, processes) in [(JobSystem::Slurm, 1), (JobSystem::Pbs, 2), (JobSystem::Sge, 1), (JobSystem::Lsf, 4)] {
        let script = system.render_script(&spec(processes, "-x"), &launch(true), "x");
        let out = std::process::Command::new("bash").arg("-n").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{system:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn settings_that_cannot_make_a_job_are_refused_by_name() {
    let err = |spec: JobSpec| spec.validate().unwrap_err().to_string();
    assert_eq!(err(JobSpec { cores: 0, ..JobSpec::default() }), "cores must be at least 1");
    assert!(err(JobSpec { cores: 2, processes: 3, ..JobSpec::default() }).contains("between 1 and cores (2), not 3"));
    assert!(err(JobSpec { memory: 40 << 20, processes: 2, cores: 2, ..JobSpec::default() }).contains("32 MiB"));
    assert!(err(JobSpec { job_extra: vec!["--x\nrm -rf /".into()], ..JobSpec::default() }).contains("line break"));
    assert!(err(JobSpec { job_name: "two words".into(), ..JobSpec::default() }).contains("non-empty word"));
    assert!("slurmm".parse::<JobSystem>().unwrap_err().to_string().contains("slurm, pbs, sge or lsf"));
}

#[test]
fn walltimes() {
    let w = |t: &str| t.parse::<Walltime>().map(|w| w.0);
    assert_eq!(w("01:00:00").unwrap(), 3600);
    assert_eq!(w("90").unwrap(), 5400);
    assert_eq!(w("30:15").unwrap(), 1815);
    assert_eq!(w("2-00:00:01").unwrap(), 172_801);
    assert_eq!(Walltime(3601).hm(), "01:01");
    assert_eq!(Walltime(100 * 3600).hms(), "100:00:00");
    for bad in ["", "1:60:00", "abc", "0", "1:2:3:4", "-5"] {
        assert!(w(bad).unwrap_err().to_string().contains("walltime"), "{bad}");
    }
}

#[test]
fn job_ids_as_each_submit_command_prints_them() {
    assert_eq!(JobSystem::Slurm.parse_job_id("Submitted batch job 4242\n").as_deref(), Some("4242"));
    assert_eq!(JobSystem::Pbs.parse_job_id("17.pbs-server.example\n").as_deref(), Some("17"));
    assert_eq!(
        JobSystem::Sge.parse_job_id("Your job 99 (\"kiln-worker\") has been submitted\n").as_deref(),
        Some("99")
    );
    assert_eq!(JobSystem::Lsf.parse_job_id("Job <123> is submitted to queue <normal>.\n").as_deref(), Some("123"));
    assert_eq!(JobSystem::Slurm.parse_job_id("sbatch: error: no partition\n"), None);
}

#[test]
fn status_as_each_status_command_prints_it() {
    let states = |system: JobSystem, text: &str| -> Vec<(String, JobState)> {
        system.parse_status(text).into_iter().map(|s| (s.id, s.state)).collect()
    };
    let s = |id: &str, st| (id.to_string(), st);
    use JobState::{Ended, Pending, Running};
    assert_eq!(
        states(JobSystem::Slurm, "101 RUNNING\n102 PENDING\n103 COMPLETING\n104 CANCELLED\n"),
        [s("101", Running), s("102", Pending), s("103", Running), s("104", Ended)]
    );
    let pbs = "Job id            Name             User              Time Use S Queue\n\
               ----------------  ---------------- ----------------  -------- - -----\n\
               17.server         kiln-worker      alice             00:00:01 R workq\n\
               18.server         kiln-worker      alice                    0 Q workq\n\
               19.server         kiln-worker      alice             00:10:00 F workq\n";
    assert_eq!(states(JobSystem::Pbs, pbs), [s("17", Running), s("18", Pending), s("19", Ended)]);
    let sge = "job-ID  prior   name       user         state submit/start at     queue      slots ja-task-ID\n\
               -----------------------------------------------------------------------------------------\n\
                   99 0.55500 kiln-worke alice        r     11/28/2026 02:40:00 all.q@n1       1\n\
                  100 0.00000 kiln-worke alice        qw    11/28/2026 02:40:01                1\n\
                  101 0.00000 kiln-worke alice        Eqw   11/28/2026 02:40:01                1\n\
                  102 0.00000 kiln-worke alice        dr    11/28/2026 02:40:01 all.q@n2       1\n";
    assert_eq!(states(JobSystem::Sge, sge), [s("99", Running), s("100", Pending), s("101", Ended), s("102", Ended)]);
    assert_eq!(
        states(JobSystem::Lsf, "123 RUN\n124 PEND\n125 DONE\n126 EXIT\n"),
        [s("123", Running), s("124", Pending), s("125", Ended), s("126", Ended)]
    );
}
