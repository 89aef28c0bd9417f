//! Bags on stock `kiln worker` processes: the binary registers the bag kernels, steps and
//! element types (`kiln::register_builtins`), so the seeds' pipelines over schemaless JSON
//! records, with built-in steps only, run there and give the local scheduler's answers.

use kiln::Collection;
use kiln::bag::{Bag, read_json_lines};
use kiln::local::LocalScheduler;
use kiln_distributed::LocalCluster;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[test]
fn the_seed_pipelines_run_on_kiln_worker_processes() {
    kiln::register_builtins();
    let dir = std::env::temp_dir().join(format!("kiln-cli-bag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in 0..3 {
        let text: String = (0..300)
            .map(|i| format!("{{\"type\": \"T{}\", \"name\": \"N{}\", \"id\": {}}}\n", (i * 7 + file) % 5, i % 4, i))
            .collect();
        std::fs::write(dir.join(format!("part-{file}.jsonl")), text).unwrap();
    }
    let records = read_json_lines::<serde_json::Value>(&format!("{}/*.jsonl", dir.display())).unwrap();
    let top = records.pluck("type").frequencies();
    let names = records.pluck("name").distinct().count();
    let ids = records.pluck("id").repartition(5).random_sample(0.5, 1);
    let numbers = Bag::range(1000, 4).repartition(2);

    let cluster = LocalCluster::builder().workers(2).binary(KILN).start().unwrap();
    let client = cluster.client().unwrap();
    let local = LocalScheduler::new();
    assert_eq!(top.compute_on(&client).unwrap(), top.compute_on(&local).unwrap());
    assert_eq!(names.compute_on(&client).unwrap(), 4);
    assert_eq!(ids.compute_on(&client).unwrap(), ids.compute_on(&local).unwrap());
    assert_eq!(numbers.sum().compute_on(&client).unwrap(), 999 * 1000 / 2);
    assert_eq!(numbers.var(1).compute_on(&client).unwrap(), numbers.var(1).compute_on(&local).unwrap());
    drop(client);
    cluster.close();
    std::fs::remove_dir_all(&dir).unwrap();
}
