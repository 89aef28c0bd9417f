#![cfg(all(feature = "s3", feature = "dataframe", feature = "distributed"))]
//! Readers and writers on a real S3-compatible server on loopback (the `moto` server from PyPI;
//! `.ci/run` installs it): the same round trips as local files, the same answers, and clear
//! errors for what is missing. Skipped, saying so, when no `moto_server` can be started.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln::dataframe::arrow::array::AsArray;
use kiln::dataframe::arrow::datatypes::Float64Type;
use kiln::dataframe::{Agg, CsvOptions, read_csv, read_parquet};
use kiln::distributed::{LocalCluster, WorkerMode};
use kiln::storage::{StorageError, storage_for};
use kiln::{Collection, LocalScheduler};

/// A moto server for this test process, or why there is none.
struct Moto {
    _child: Child,
    endpoint: String,
}

fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();
    match MOTO.get_or_init(start_moto) {
        Ok(moto) => Some(moto),
        Err(why) => {
            eprintln!("SKIPPED: no S3-compatible server: {why}");
            None
        }
    }
}

fn start_moto() -> Result<Moto, String> {
    // Where scripts/install-moto.sh puts it, unless told otherwise; else the PATH's.
    let installed = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".cache/kiln-moto-venv/bin/moto_server"))
        .filter(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned());
    let program = std::env::var("KILN_MOTO_SERVER").ok().or(installed).unwrap_or_else(|| "moto_server".to_string());
    let found = if program.contains('/') {
        std::path::Path::new(&program).exists()
    } else {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(&program).exists()))
    };
    if !found {
        return Err(format!("{program} not found; install it with scripts/install-moto.sh or set KILN_MOTO_SERVER"));
    }
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    // The server must not outlive this test process (a static is never dropped, and an orphan
    // would keep whatever descriptors it inherited): a shell holds it and stops it when this
    // process's end closes the shell's standard input.
    let watchdog = r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & server=$!; cat >/dev/null; kill $server"#;
    let child = Command::new("sh")
        .args(["-c", watchdog, &program, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let moto = Moto { _child: child, endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{program} did not listen on port {port} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: set once, before any store is built and before any test thread reads these
    // variables (every test goes through this initialisation first); worker processes of a
    // cluster inherit them, as a real deployment's workers inherit their credentials.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    kiln::register_builtins();
    Ok(moto)
}

/// Creates a bucket with a plain HTTP request (moto takes unsigned ones; object stores have no
/// "create bucket" call).
fn create_bucket(moto: &Moto, bucket: &str) {
    let address = moto.endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "creating bucket {bucket}: {answer}");
}

fn csv_files() -> Vec<(String, String)> {
    (0..4)
        .map(|f| {
            let mut text = String::from("key,value,when\n");
            for i in 0..250 {
                let n = f * 250 + i;
                text.push_str(&format!("k{},{}.5,2015-01-{:02}T{:02}:00:00\n", n % 7, n, 1 + n % 28, n % 24));
            }
            (format!("2015-0{}.csv", f + 1), text)
        })
        .collect()
}

fn sums_by_key(batch: &kiln::dataframe::arrow::record_batch::RecordBatch) -> Vec<(String, f64)> {
    let keys = batch.column(0).as_string::<i32>();
    let sums = batch.column(1).as_primitive::<Float64Type>();
    let mut out: Vec<(String, f64)> =
        (0..batch.num_rows()).map(|i| (keys.value(i).to_string(), sums.value(i))).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn csv_and_parquet_round_trip_through_s3_with_the_local_answers() {
    let Some(moto) = moto() else { return };
    create_bucket(moto, "frames");
    let local_dir = std::env::temp_dir().join(format!("kiln-s3-frames-{}", std::process::id()));
    std::fs::create_dir_all(&local_dir).unwrap();
    let s3 = storage_for("s3://frames/").unwrap();
    for (name, text) in csv_files() {
        s3.write(&format!("s3://frames/csv/{name}"), text.as_bytes()).unwrap();
        std::fs::write(local_dir.join(&name), text).unwrap();
    }
    // A file the glob must not take.
    s3.write("s3://frames/csv/notes.txt", b"not a csv").unwrap();
    s3.write("s3://frames/csv/sub/2015-09.csv", b"key,value,when\n").unwrap();
    assert_eq!(
        s3.list("s3://frames/csv/2015-*.csv").unwrap(),
        [
            "s3://frames/csv/2015-01.csv",
            "s3://frames/csv/2015-02.csv",
            "s3://frames/csv/2015-03.csv",
            "s3://frames/csv/2015-04.csv"
        ]
    );

    let options = CsvOptions::default();
    let remote = read_csv("s3://frames/csv/2015-*.csv", &options).unwrap();
    let local = read_csv(&format!("{}/2015-*.csv", local_dir.display()), &options).unwrap();
    assert_eq!(remote.npartitions(), 4);
    let by_key = |df: &kiln::dataframe::DataFrame| {
        df.groupby(["key"]).unwrap().agg([Agg::sum("value")]).unwrap().compute_on(&LocalScheduler::new()).unwrap()
    };
    let expected = sums_by_key(&by_key(&local));
    assert_eq!(sums_by_key(&by_key(&remote)), expected);

    // Written to the store as Parquet and read back (footers and column chunks as ranges).
    let written = remote.to_parquet("s3://frames/parquet").compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(written, 1000);
    assert_eq!(s3.list("s3://frames/parquet/").unwrap().len(), 4);
    let back = read_parquet("s3://frames/parquet").unwrap();
    assert_eq!(sums_by_key(&by_key(&back)), expected);
    std::fs::remove_dir_all(local_dir).unwrap();
}

#[test]
fn a_projected_parquet_read_sends_requests_per_row_group_not_per_page() {
    use kiln::dataframe::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use kiln::dataframe::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    let Some(moto) = moto() else { return };
    create_bucket(moto, "pages");
    // A storage of this test's own under s3a:// (the same server), so that its counters see
    // only this test's reads.
    use kiln::storage::Storage;
    let storage = Arc::new(kiln::storage::object_store::ObjectStorage::default());
    kiln::storage::register_storage("s3a", storage.clone());
    // Five columns, 6 row groups of 20,000 rows, pages of at most 1,000 rows: 20 pages per
    // column chunk, 240 in the two columns read.
    let schema = Arc::new(Schema::new(
        ["a", "b", "c", "d", "e"]
            .map(|n| Field::new(n, if n == "c" { DataType::Int64 } else { DataType::Float64 }, true))
            .to_vec(),
    ));
    let rows = 120_000usize;
    let column = |k: usize| -> ArrayRef {
        if k == 2 {
            Arc::new(Int64Array::from_iter_values((0..rows as i64).map(|i| i * 3 % 1001)))
        } else {
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| ((i * (k + 7)) % 9973) as f64 * 0.5)))
        }
    };
    let batch = RecordBatch::try_new(schema.clone(), (0..5).map(column).collect()).unwrap();
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(20_000))
        .set_data_page_row_count_limit(1_000)
        .set_write_batch_size(1_000)
        .set_dictionary_enabled(false)
        .build();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let local = std::env::temp_dir().join(format!("kiln-s3-pages-{}.parquet", std::process::id()));
    std::fs::write(&local, &bytes).unwrap();
    let url = "s3a://pages/table.parquet";
    storage.write(url, &bytes).unwrap();

    // Columns b and d (not adjacent: c lies between them, 160 KB, inside the merging gap).
    let sums = |source: &str| {
        let frame = read_parquet(source).unwrap();
        let out = frame.agg([Agg::sum("b"), Agg::sum("d")]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
        (out.column(0).as_primitive::<Float64Type>().value(0), out.column(1).as_primitive::<Float64Type>().value(0))
    };
    let before = storage.read_stats();
    let remote = sums(url);
    let after = storage.read_stats();
    let expected = sums(&local.display().to_string());
    let plain = |k: usize| (0..rows).map(|i| ((i * (k + 7)) % 9973) as f64 * 0.5).sum::<f64>();
    assert_eq!(remote, expected);
    assert_eq!(remote, (plain(1), plain(3)));
    // Two footer reads (planning and the task), one coalesced range per row group.
    let requests = after.requests - before.requests;
    assert!(requests <= 2 * 2 + 6, "{requests} requests for 6 row groups: {after:?}");
    // Nothing of columns a and e was fetched beyond the footer reads' tail.
    let fetched = after.bytes_fetched - before.bytes_fetched;
    assert!(fetched < bytes.len() as u64 * 7 / 10, "{fetched} of {} bytes fetched", bytes.len());
    std::fs::remove_file(local).unwrap();
}

#[test]
fn a_cluster_reads_s3_paths_itself_with_the_same_answer() {
    let Some(moto) = moto() else { return };
    create_bucket(moto, "cluster");
    let s3 = storage_for("s3://cluster/").unwrap();
    for (name, text) in csv_files() {
        s3.write(&format!("s3://cluster/in/{name}"), text.as_bytes()).unwrap();
    }
    let df = read_csv("s3://cluster/in/*.csv", &CsvOptions::default()).unwrap();
    let mean = df.groupby(["key"]).unwrap().agg([Agg::mean("value")]).unwrap();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let on_cluster = mean.compute_on(&client).unwrap();
    let on_local = mean.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(sums_by_key(&on_cluster), sums_by_key(&on_local));
}

#[test]
fn objects_stream_and_ranges_come_back_exactly() {
    let Some(moto) = moto() else { return };
    create_bucket(moto, "bytes");
    let s3 = storage_for("s3://bytes/x").unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    s3.write("s3://bytes/big.bin", &data).unwrap();
    assert_eq!(s3.size("s3://bytes/big.bin").unwrap(), data.len() as u64);
    assert_eq!(s3.read_range("s3://bytes/big.bin", 1_000_000..1_000_100).unwrap(), &data[1_000_000..1_000_100]);
    let mut streamed = Vec::new();
    s3.open("s3://bytes/big.bin").unwrap().read_to_end(&mut streamed).unwrap();
    assert!(streamed == data, "the streamed object differs");
    let error = s3.read_range("s3://bytes/big.bin", 2_999_990..3_000_010).unwrap_err();
    assert!(error.to_string().contains("s3://bytes/big.bin"), "{error}");
    s3.delete("s3://bytes/big.bin").unwrap();
    s3.delete("s3://bytes/big.bin").unwrap();
    assert!(matches!(s3.size("s3://bytes/big.bin"), Err(StorageError::NotFound { .. })));
}

#[test]
fn missing_buckets_objects_and_files_are_clear_errors_naming_the_url() {
    let Some(_) = moto() else { return };
    let s3 = storage_for("s3://no-such-bucket/").unwrap();
    let error = s3.read("s3://no-such-bucket/a.csv").unwrap_err();
    assert!(error.to_string().contains("s3://no-such-bucket/a.csv"), "{error}");
    let error = read_csv("s3://no-such-bucket/*.csv", &CsvOptions::default()).err().unwrap().to_string();
    assert!(error.contains("s3://no-such-bucket"), "{error}");
    let error = read_parquet("s3://frames-missing/nothing-here.parquet").err().unwrap().to_string();
    assert!(error.contains("frames-missing"), "{error}");
}

#[cfg(feature = "zarr")]
#[test]
fn a_zarr_array_written_to_s3_reads_back_block_by_block_with_the_same_answers() {
    use kiln::array::random::RandomState;
    use kiln::array::zarr::from_zarr;
    let Some(moto) = moto() else { return };
    create_bucket(moto, "arrays");
    let x = RandomState::new(7).random(&[300, 200], [64, 50]);
    let blocks = x.to_zarr("s3://arrays/x.zarr").unwrap().compute_on(&LocalScheduler::new()).unwrap();
    assert!(blocks > 0);
    let s3 = storage_for("s3://arrays/").unwrap();
    assert!(s3.size("s3://arrays/x.zarr/zarr.json").unwrap() > 0, "no metadata object");
    let back = from_zarr::<f64>("s3://arrays/x.zarr", None).unwrap();
    assert_eq!(back.shape(), x.shape());
    let local = LocalScheduler::new();
    assert_eq!(back.compute_on(&local).unwrap(), x.compute_on(&local).unwrap());
    let seed = |a: &kiln::array::Array<f64>| (a + &a.t() - &a.mean_axis(0)).std().scalar().compute_on(&local).unwrap();
    let square = from_zarr::<f64>("s3://arrays/x.zarr", Some(kiln::array::ChunkSpec::Uniform(100))).unwrap();
    let square = square.slice(&kiln::array::idx![..200, ..]);
    let local_square = x.slice(&kiln::array::idx![..200, ..]);
    // Other blocks, so other summation orders: equal to rounding.
    let (remote, local) = (seed(&square), seed(&local_square));
    assert!((remote - local).abs() <= 1e-12 * local.abs(), "{remote} vs {local}");
    let error = from_zarr::<f64>("s3://arrays/missing.zarr", None).err().unwrap().to_string();
    assert!(error.contains("s3://arrays/missing.zarr"), "{error}");
}

#[test]
fn npy_files_and_npy_block_directories_live_on_s3_too() {
    use kiln::array::npy::{read_npy_as, write_npy};
    use kiln::array::npy_blocks::from_npy_blocks;
    let Some(moto) = moto() else { return };
    create_bucket(moto, "npy");
    let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[30, 7]), |i| (i[0] * 7 + i[1]) as f64 * 0.25);
    write_npy("s3://npy/a.npy", &a).unwrap();
    assert_eq!(read_npy_as::<f64>("s3://npy/a.npy").unwrap(), a);
    let x = kiln::array::random::RandomState::new(3).random(&[50, 40], [20, 15]);
    let local = LocalScheduler::new();
    assert_eq!(x.to_npy_blocks("s3://npy/blocks").unwrap().compute_on(&local).unwrap(), 9);
    let back = from_npy_blocks::<f64>("s3://npy/blocks").unwrap();
    assert_eq!(back.chunks(), x.chunks());
    assert_eq!(back.compute_on(&local).unwrap(), x.compute_on(&local).unwrap());
    // Rewritten with other blocks: the old files go, the grid is the new one.
    let y = x.rechunk(kiln::array::ChunkSpec::Uniform(25));
    assert_eq!(y.to_npy_blocks("s3://npy/blocks").unwrap().compute_on(&local).unwrap(), 4);
    assert_eq!(from_npy_blocks::<f64>("s3://npy/blocks").unwrap().chunks(), y.chunks());
    let error = read_npy_as::<f64>("s3://npy/missing.npy").unwrap_err().to_string();
    assert!(error.contains("s3://npy/missing.npy"), "{error}");
}

#[test]
fn bags_read_and_write_text_and_json_lines_on_s3() {
    use kiln::bag::{Bag, Compression, read_json_lines, read_text, read_text_blocks};
    let Some(moto) = moto() else { return };
    create_bucket(moto, "bags");
    let local = LocalScheduler::new();
    let written = Bag::range(1000, 4).map(|i| format!("{{\"n\": {i}, \"even\": {}}}", i % 2 == 0));
    let paths = written.to_textfiles("s3://bags/json", Compression::Gzip).compute_on(&local).unwrap();
    assert_eq!(paths.len(), 4);
    assert!(paths[0].to_string_lossy().starts_with("s3://bags/json/part.0.txt.gz"), "{paths:?}");
    let lines = read_text("s3://bags/json/*.gz").unwrap();
    assert_eq!(lines.count().compute_on(&local).unwrap(), 1000);
    let records = read_json_lines::<serde_json::Value>("s3://bags/json/*.gz").unwrap();
    let evens = records.filter(|r| r["even"] == true).count().compute_on(&local).unwrap();
    assert_eq!(evens, 500);
    // Uncompressed objects split into byte ranges: every line once, whatever the block size.
    let plain = Bag::range(5000, 2).map(|i| format!("line {i}"));
    plain.to_textfiles("s3://bags/plain", Compression::None).compute_on(&local).unwrap();
    for blocksize in [1000, 7777, 1 << 20] {
        let back = read_text_blocks("s3://bags/plain/*.txt", blocksize).unwrap().compute_on(&local).unwrap();
        assert_eq!(back.len(), 5000, "blocksize {blocksize}");
        assert_eq!(back[4999], "line 4999");
    }
    let error = read_text("s3://bags/nothing-*.txt").err().unwrap().to_string();
    assert!(error.contains("s3://bags/nothing-*.txt"), "{error}");
}
