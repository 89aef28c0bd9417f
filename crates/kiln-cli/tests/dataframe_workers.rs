//! Dataframe plans on `kiln worker` processes: the stock binary registers the dataframe
//! kernels and codec (`kiln::register_builtins`), partitions cross process boundaries as Arrow
//! IPC (split pieces through their own codec), and the answers are the local scheduler's.

use kiln::Collection;
use kiln::dataframe::{Agg, CsvOptions, DataFrame, How, MergeOptions, read_csv};
use kiln::local::LocalScheduler;
use kiln_distributed::LocalCluster;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[test]
fn a_groupby_runs_on_worker_processes() {
    kiln::register_builtins();
    let dir = std::env::temp_dir().join(format!("kiln-cli-df-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in 0..4 {
        let mut text = String::from("ts,key,value\n");
        for row in 0..500 {
            let i = file * 500 + row;
            let value = if i % 13 == 0 { String::new() } else { format!("{}", (i * 7919) % 1000) };
            text += &format!("2015-01-{:02} {:02}:00:00,{},{value}\n", 1 + i % 28, i % 24, ["a", "b", "c"][i % 3]);
        }
        std::fs::write(dir.join(format!("part-{file}.csv")), text).unwrap();
    }
    let df = read_csv(&format!("{}/*.csv", dir.display()), &CsvOptions::default().parse_dates(["ts"])).unwrap();
    let grouped = df
        .groupby([df.col("ts").dt().hour()])
        .unwrap()
        .split_every(2)
        .agg([Agg::mean("value"), Agg::std("value").alias("spread"), Agg::size()])
        .unwrap();
    let in_memory = DataFrame::from_batch(df.compute_on(&LocalScheduler::new()).unwrap(), 3).unwrap();
    let by_key = in_memory.groupby(["key"]).unwrap().agg([Agg::sum("value"), Agg::max("ts")]).unwrap();

    let cluster = LocalCluster::builder().workers(2).binary(KILN).start().unwrap();
    let client = cluster.client().unwrap();
    let remote = grouped.compute_on(&client).unwrap();
    assert_eq!(remote.num_rows(), 24);
    assert_eq!(remote, grouped.compute_on(&LocalScheduler::new()).unwrap());
    assert_eq!(by_key.compute_on(&client).unwrap(), by_key.compute_on(&LocalScheduler::new()).unwrap());
    // The shuffle, merge and range-shuffle kernels and the pieces codec are built in too.
    let by_hour_key = df
        .groupby([df.col("ts").dt().hour().rename("hour"), df.col("key")])
        .unwrap()
        .split_out(3)
        .max_branch(2)
        .agg([Agg::size()])
        .unwrap();
    let merged = df
        .merge(&by_hour_key.rename(&[("key", "k")]).unwrap(), &MergeOptions::left_right(["key"], ["k"]).how(How::Outer))
        .unwrap();
    assert_eq!(merged.len().compute_on(&client).unwrap(), merged.len().compute_on(&LocalScheduler::new()).unwrap());
    let sorted = df.sort_values("value", false, &client).unwrap();
    assert_eq!(sorted.compute_on(&client).unwrap(), sorted.compute_on(&LocalScheduler::new()).unwrap());
    drop(client);
    cluster.close();
    std::fs::remove_dir_all(&dir).unwrap();
}
