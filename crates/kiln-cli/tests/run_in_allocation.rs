//! `kiln run-in-allocation` as a batch launcher runs it: four processes of the same command
//! with ranks 0 to 3 in `SLURM_PROCID` (or `PMI_RANK`), meeting through a scheduler file. Rank
//! 1 runs the client command, which is this program again (no test harness, so it can be):
//! with `KILN_TEST_RESULT` set it connects to `KILN_SCHEDULER_ADDRESS`, waits for the two
//! workers, computes an array sum and writes it there. When it exits, the cluster shuts down
//! and every rank ends.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::Collection;

mod support;
use support::Guard;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn main() {
    if let Some(result) = std::env::var_os("KILN_TEST_RESULT") {
        client_command(PathBuf::from(result));
        return;
    }
    ranks_become_scheduler_client_and_workers();
    println!("test ranks_become_scheduler_client_and_workers ... ok");
    a_missing_rank_is_named();
    println!("test a_missing_rank_is_named ... ok");
}

/// What rank 1 runs.
fn client_command(result: PathBuf) {
    kiln::register_builtins();
    let address = std::env::var("KILN_SCHEDULER_ADDRESS").expect("rank 1 gets the scheduler's address");
    assert!(std::env::var_os("KILN_SCHEDULER_FILE").is_some());
    let client = kiln_distributed::Client::connect(&address).unwrap();
    client.wait_for_workers(2, Duration::from_secs(60)).unwrap();
    let x = kiln::array::arange::<f64>(0.0, 10_000.0, 1.0, 500);
    let sum = x.sum().compute_on(&client).unwrap().first().copied().unwrap();
    std::fs::write(result, format!("{sum} {}", client.workers().len())).unwrap();
}

fn ranks_become_scheduler_client_and_workers() {
    let dir = std::env::temp_dir().join(format!("kiln-allocation-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scheduler_file = dir.join("scheduler.json");
    let result = dir.join("result");
    let this = std::env::current_exe().unwrap();
    let mut ranks: Vec<Guard> = (0..4)
        .map(|rank| {
            let mut command = Command::new(KILN);
            command
                .args(["run-in-allocation", "--scheduler-port", "0", "--nthreads", "1", "--scheduler-file"])
                .arg(&scheduler_file)
                .arg("--")
                .arg(&this)
                .env("KILN_TEST_RESULT", &result)
                .env_remove("SLURM_PROCID")
                .env_remove("PMI_RANK")
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            // Two launchers' variables, as srun and mpirun set them.
            command.env(if rank % 2 == 0 { "SLURM_PROCID" } else { "PMI_RANK" }, rank.to_string());
            Guard(command.spawn().unwrap())
        })
        .collect();
    // Rank 1 exits with its command's status; then the others end as the cluster shuts down.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut statuses = vec![None; 4];
    while statuses.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "ranks still running: {statuses:?}");
        for (rank, guard) in ranks.iter_mut().enumerate() {
            if statuses[rank].is_none() {
                statuses[rank] = guard.0.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(statuses[1].unwrap().success(), "the client rank: {:?}", statuses[1]);
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "49995000 2");
    assert!(statuses[0].unwrap().success(), "the scheduler rank: {:?}", statuses[0]);
    // The scheduler removes its file when it stops, so the next job cannot read a stale one.
    assert!(!scheduler_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn a_missing_rank_is_named() {
    let out = Command::new(KILN)
        .args(["run-in-allocation", "--scheduler-file", "/nonexistent/s.json", "--", "true"])
        .env_remove("SLURM_PROCID")
        .env_remove("PMI_RANK")
        .env_remove("OMPI_COMM_WORLD_RANK")
        .env_remove("PMIX_RANK")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no rank in the environment (none of SLURM_PROCID, PMI_RANK"), "{err}");
}
