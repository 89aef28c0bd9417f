//! Reading from an object store (an S3-compatible server, or plain HTTP) against reading the same
//! data from local disk:
//! a Zarr array (`from_zarr(..).sum()`) and a Parquet data set (`read_parquet(..)` summed over
//! every column), each about `--gb` GB, beside Dask (`da.from_zarr`, `dd.read_parquet` through
//! s3fs, bench/dask_object_store_read.py) on the same server and data. The bar: kiln's S3 rate
//! at least half its local-disk rate on loopback.
//!
//! ```text
//! cargo run --release -p kiln-bench --bin object_store_read -- [--gb 4] [--formats zarr,parquet]
//!     [--data DIR] [--server moto|s3rver|nginx] [--moto PATH | --s3rver PATH | --nginx PATH |
//!     --endpoint URL] [--runs 2]
//!     [--threads 2] [--no-dask] [--delete-data]
//! ```
//!
//! The data is generated under `--data` (default `$KILN_BENCH_DATA` or the temp dir, then
//! `/kiln-object-store-bench`) by bench/make_zarr_store.py and bench/make_parquet_dataset.py
//! when missing: a float64 Zarr array of n² values in 1000² chunks (zarr-python's defaults, zstd)
//! and 2 M-row files of four float64 columns. Each format gets a fresh S3 server on a loopback
//! port, with its objects in a directory under `--data` rather than in its memory, and is uploaded
//! to it untimed; the server is stopped and its objects deleted before the next format, so only
//! one copy is ever served. `--server moto` (the default) is `moto_server` (PyPI; `--moto`, else
//! bench/.venv's, else scripts/install-moto.sh's, else the PATH's), which reads a whole object
//! for every ranged GET; `--server s3rver` is `s3rver` (npm; `--s3rver`, else
//! scripts/install-s3rver.sh's, else the PATH's), whose ranged GETs read only their range, as a
//! real store's do. `--server nginx` is Debian's nginx serving `--data` itself over `http://`
//! (no upload; sendfile, one process), read through kiln-object-store's http store, which lists
//! a directory with WebDAV PROPFIND (Debian's `libnginx-mod-http-dav-ext`), and on the Dask side
//! through fsspec's HTTPFileSystem, which lists nginx's autoindex page: a server that costs far
//! less per byte than the S3 ones, to tell the client's limit from the server's. `--endpoint` uses
//! a server already running instead (bucket `bench`, the credentials of `--server`'s kind; for
//! nginx, a server whose root is `--data`). `--delete-data` removes the generated data at the end.
//!
//! Rates are the data's bytes in memory (n² × 8, rows × 32) over the median run; the `RESULT`
//! line also carries the bytes stored, each side's peak RSS (kiln's measured per source with the
//! counter reset in between; Dask's per process) and the server's, and the CPU seconds the server
//! and this process spent over each remote side's timed runs (from `/proc`, per run).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_array::zarr::from_zarr;
use kiln_bench::{Protocol, Side, arg, compute_scalar, get, peak_rss_bytes, peak_rss_of, reset_peak_rss, run_dask};
use kiln_dataframe::arrow::array::AsArray;
use kiln_dataframe::arrow::datatypes::Float64Type;
use kiln_dataframe::{Agg, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

const BUCKET: &str = "bench";
const ZARR_CHUNK: usize = 1000;
const PARQUET_ROWS: usize = 2_000_000;

/// The S3-compatible servers this benchmark can start on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    /// `moto_server` (PyPI): reads the whole object for every ranged GET.
    Moto,
    /// `s3rver` (npm): objects are files, a ranged GET reads only its range.
    S3rver,
    /// nginx (Debian) over plain HTTP, serving the data directory as it is.
    Nginx,
}

impl ServerKind {
    fn parse(name: &str) -> ServerKind {
        match name {
            "moto" => ServerKind::Moto,
            "s3rver" => ServerKind::S3rver,
            "nginx" => ServerKind::Nginx,
            other => panic!("unknown --server {other}: moto, s3rver or nginx"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ServerKind::Moto => "moto",
            ServerKind::S3rver => "s3rver",
            ServerKind::Nginx => "nginx",
        }
    }

    /// The credentials the server takes.
    fn credentials(self) -> (&'static str, &'static str) {
        match self {
            ServerKind::Moto => ("testing", "testing"),
            // s3rver's built-in account.
            ServerKind::S3rver => ("S3RVER", "S3RVER"),
            // Plain HTTP takes none; these only keep the S3 client's environment complete.
            ServerKind::Nginx => ("unused", "unused"),
        }
    }

    /// `--moto`/`--s3rver PATH`, else where the install scripts put it, else the PATH's.
    fn program(self) -> String {
        let flag = format!("--{}", self.name());
        if let Some(p) = std::env::args().skip_while(|a| *a != flag).nth(1) {
            return p;
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let candidates: Vec<PathBuf> = match self {
            ServerKind::Moto => [
                Some(kiln_bench::bench_dir().join(".venv/bin/moto_server")),
                home.map(|h| h.join(".cache/kiln-moto-venv/bin/moto_server")),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ServerKind::S3rver => {
                home.map(|h| h.join(".cache/kiln-s3rver/node_modules/.bin/s3rver")).into_iter().collect()
            }
            ServerKind::Nginx => vec![PathBuf::from("/usr/sbin/nginx")],
        };
        let fallback = match self {
            ServerKind::Moto => "moto_server",
            ServerKind::S3rver => "s3rver",
            ServerKind::Nginx => "nginx",
        };
        candidates.into_iter().find(|p| p.exists()).map_or_else(|| fallback.to_string(), |p| p.display().to_string())
    }
}

/// A server of this benchmark's, stopped (and its objects, or for nginx its configuration,
/// deleted) when dropped.
struct Server {
    kind: ServerKind,
    child: Child,
    endpoint: String,
    objects: PathBuf,
}

/// nginx's configuration: one process (`master_process off`, so the child's `/proc` CPU times
/// are the whole server's), `root` the data directory, sendfile, no access log; PROPFIND from the
/// dav-ext module for kiln's listing and autoindex pages for fsspec's.
fn nginx_config(dir: &Path, data: &Path, port: u16) -> String {
    let dir = dir.display();
    let modules = Path::new("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so");
    assert!(modules.exists(), "{} is missing: apt-get install libnginx-mod-http-dav-ext", modules.display());
    format!(
        "load_module {modules};
daemon off;
master_process off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {data};
        location / {{
            autoindex on;
            dav_ext_methods PROPFIND OPTIONS;
        }}
    }}
}}
",
        modules = modules.display(),
        data = data.display()
    )
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.iter().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    ticks as f64 / clock_ticks()
}

/// Clock ticks a second, the unit of `/proc`'s CPU times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .expect("getconf CLK_TCK")
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.objects);
    }
}

fn start_server(kind: ServerKind, data: &Path) -> Server {
    let program = kind.program();
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port();
    let objects = data.join(format!("{}-objects", kind.name()));
    std::fs::create_dir_all(&objects).expect("creating the server's object directory");
    let mut command = Command::new(&program);
    match kind {
        ServerKind::Nginx => {
            std::fs::create_dir_all(objects.join("tmp")).expect("creating nginx's temp directory");
            let config = objects.join("nginx.conf");
            std::fs::write(&config, nginx_config(&objects, data, port)).expect("writing nginx.conf");
            command.arg("-c").arg(&config).arg("-p").arg(&objects)
        }
        // moto keeps each object in a SpooledTemporaryFile that moves to TMPDIR past this size:
        // one byte puts every object on disk, so the server holds no copy of the data in memory.
        ServerKind::Moto => command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("TMPDIR", &objects)
            .env("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", "1"),
        ServerKind::S3rver => command.arg("-d").arg(&objects).args(["-a", "127.0.0.1", "-p", &port.to_string(), "-s"]),
    };
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {program} (install it with scripts/install-{}.sh or pass --{}): {e}",
            kind.name(),
            kind.name()
        )
    });
    let server = Server { kind, child, endpoint: format!("http://127.0.0.1:{port}"), objects };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{program} did not listen on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{}: {program} on {} (pid {})", kind.name(), server.endpoint, server.child.id());
    server
}

/// Creates the bucket with a plain HTTP request (moto and s3rver take unsigned ones; an
/// existing bucket answers 200 as well).
fn create_bucket(endpoint: &str) {
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).expect("connecting to the S3 server");
    write!(stream, "PUT /{BUCKET} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "creating bucket {BUCKET}: {answer}");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Copies the files under `local` to `url` (two at a time); returns the bytes stored.
fn upload(local: &Path, url: &str) -> u64 {
    let mut files = Vec::new();
    files_under(local, &mut files);
    let storage = kiln_storage::storage_for(url).expect("the s3 storage is registered");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let total = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let bytes = std::fs::read(file).unwrap();
                    let key = file.strip_prefix(local).unwrap().to_string_lossy().replace('\\', "/");
                    storage.write(&format!("{url}/{key}"), &bytes).unwrap_or_else(|e| panic!("uploading: {e}"));
                    total.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let total = total.into_inner();
    println!(
        "uploaded {} files, {:.2} GB, to {url} in {:.1} s",
        files.len(),
        total as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    total
}

fn python_script(script: &str, args: &[String]) {
    let python = kiln_bench::dask_python().expect("the benchmark's Python environment");
    let status = Command::new(python)
        .arg(kiln_bench::bench_dir().join(script))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(status.success(), "{script} failed: {status}");
}

/// One format's data: where it is locally, its bytes in memory, and how kiln reads it whole.
struct Dataset {
    format: &'static str,
    local: PathBuf,
    logical_bytes: u64,
}

impl Dataset {
    fn read(&self, source: &str, scheduler: &LocalScheduler) -> f64 {
        match self.format {
            "zarr" => {
                let x = from_zarr::<f64>(source, None).unwrap_or_else(|e| panic!("opening {source}: {e}"));
                compute_scalar(&x.sum(), scheduler).unwrap_or_else(|e| panic!("reading {source}: {e}"))
            }
            _ => {
                let frame = read_parquet(source).unwrap_or_else(|e| panic!("opening {source}: {e}"));
                let sums = frame.agg(["a", "b", "c", "d"].map(Agg::sum)).expect("the four columns");
                let sums = sums.compute_on(scheduler).unwrap_or_else(|e| panic!("reading {source}: {e}"));
                sums.columns().iter().map(|c| c.as_primitive::<Float64Type>().value(0)).sum()
            }
        }
    }
}

fn prepare(format: &'static str, data: &Path, gb: f64) -> Dataset {
    match format {
        "zarr" => {
            let n = ((gb * 1e9 / 8.0).sqrt().round() as usize).max(ZARR_CHUNK);
            let local = data.join(format!("array-{n}.zarr"));
            python_script(
                "make_zarr_store.py",
                &["--path".into(), local.display().to_string(), "--n".into(), n.to_string()],
            );
            Dataset { format, local, logical_bytes: (n * n * 8) as u64 }
        }
        "parquet" => {
            let files = ((gb * 1e9 / (PARQUET_ROWS as f64 * 32.0)).round() as usize).max(1);
            let local = data.join(format!("table-{files}"));
            python_script(
                "make_parquet_dataset.py",
                &[
                    "--path".into(),
                    local.display().to_string(),
                    "--files".into(),
                    files.to_string(),
                    "--rows".into(),
                    PARQUET_ROWS.to_string(),
                ],
            );
            Dataset { format, local, logical_bytes: (files * PARQUET_ROWS * 32) as u64 }
        }
        other => panic!("unknown format {other}: --formats takes zarr and parquet"),
    }
}

fn main() {
    let protocol = Protocol::from_args(2);
    let gb: f64 = arg("--gb", 4.0);
    let formats: String = arg("--formats", "zarr,parquet".to_string());
    let data: PathBuf = arg(
        "--data",
        std::env::var("KILN_BENCH_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir())
            .join("kiln-object-store-bench")
            .display()
            .to_string(),
    )
    .into();
    let endpoint: Option<String> = std::env::args().skip_while(|a| a != "--endpoint").nth(1);
    let kind = ServerKind::parse(&arg("--server", "moto".to_string()));
    let remote = if kind == ServerKind::Nginx { "http" } else { "s3" };
    let (key, secret) = kind.credentials();
    let delete_data = std::env::args().any(|a| a == "--delete-data");
    std::fs::create_dir_all(&data).expect("creating the data directory");
    // nginx serves its root by absolute path.
    let data = data.canonicalize().expect("the data directory");
    // SAFETY: set before any store is built or any other thread runs.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", key);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let scheduler = LocalScheduler::threads(protocol.threads);
    println!(
        "object_store_read: {gb} GB per format, {} threads, {} runs, data in {}",
        protocol.threads,
        protocol.runs,
        data.display()
    );
    let mut line = format!("RESULT gb={gb} server={} {}", kind.name(), protocol.fields(protocol.threads));
    for format in formats.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let format: &'static str = if format == "zarr" { "zarr" } else { "parquet" };
        let dataset = prepare(format, &data, gb);
        let started = endpoint.is_none().then(|| start_server(kind, &data));
        let server =
            endpoint.clone().unwrap_or_else(|| started.as_ref().map(|s| s.endpoint.clone()).unwrap_or_default());
        // SAFETY: no store of this server's is built yet; the stores are made per bucket on first
        // use and this process reads the variable only then.
        unsafe { std::env::set_var("AWS_ENDPOINT_URL", &server) };
        let object_store = std::sync::Arc::new(kiln_object_store::ObjectStorage::default());
        kiln_storage::register_storage(remote, object_store.clone());
        let name = dataset.local.file_name().unwrap().to_string_lossy().into_owned();
        let (url, stored) = if kind == ServerKind::Nginx {
            // Served where it lies; a Parquet data set is a directory, listed with PROPFIND.
            let mut files = Vec::new();
            files_under(&dataset.local, &mut files);
            let stored = files.iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
            let slash = if format == "parquet" { "/" } else { "" };
            (format!("{}/{name}{slash}", server.trim_end_matches('/')), stored)
        } else {
            create_bucket(&server);
            let url = format!("s3://{BUCKET}/{name}");
            let stored = upload(&dataset.local, &url);
            (url, stored)
        };
        let local = dataset.local.display().to_string();
        let mb = dataset.logical_bytes as f64 / 1e6;

        let mut rates = Vec::new();
        let mut values = Vec::new();
        let server_pid = started.as_ref().map(|s| s.child.id());
        for (side, source) in [("local", local.as_str()), (remote, url.as_str())] {
            reset_peak_rss();
            let before = object_store.read_stats();
            let cpu_before = (server_pid.map(cpu_seconds), cpu_seconds(std::process::id()));
            let (kiln, value) =
                Side::measure(&format!("kiln_{format}_{side}"), protocol.runs, || dataset.read(source, &scheduler));
            let rss = peak_rss_bytes().unwrap_or(0);
            let rate = mb / kiln.median();
            // Warm-up and timed runs alike: CPU seconds a run, beside the median's wall time.
            let runs = (protocol.runs + 1) as f64;
            let kiln_cpu = (cpu_seconds(std::process::id()) - cpu_before.1) / runs;
            line.push_str(&format!(" kiln_{format}_{side}_cpu_s_per_run={kiln_cpu:.2}"));
            if let (Some(pid), Some(before)) = (server_pid, cpu_before.0)
                && side != "local"
            {
                let server_cpu = (cpu_seconds(pid) - before) / runs;
                println!(
                    "{}: {server_cpu:.2} CPU s a run while kiln read {format} ({kiln_cpu:.2} CPU s a run in kiln)",
                    kind.name()
                );
                line.push_str(&format!(" {}_cpu_s_per_kiln_{format}_run={server_cpu:.2}", kind.name()));
            }
            if side != "local" {
                let after = object_store.read_stats();
                let requests = (after.requests - before.requests) as f64 / runs;
                let fetched = (after.bytes_fetched - before.bytes_fetched) as f64 / runs;
                let read = (after.bytes_read - before.bytes_read) as f64 / runs;
                println!(
                    "kiln {format} {side}: per run {requests:.0} ranged requests fetching {:.0} MB for {:.0} MB of ranged reads ({} read-ahead hits in all)",
                    fetched / 1e6,
                    read / 1e6,
                    after.hits - before.hits
                );
                line.push_str(&format!(
                    " kiln_{format}_{side}_ranged_requests={requests:.0} kiln_{format}_{side}_ranged_bytes={fetched:.0}"
                ));
            }
            println!(
                "kiln {format} {side}: {:.0} MB/s; {}; peak RSS {:.0} MB; sum {value:.6}",
                rate,
                kiln.summary(),
                rss as f64 / 1e6
            );
            line.push_str(&format!(
                " {} kiln_{format}_{side}_mb_s={rate:.1} kiln_{format}_{side}_peak_rss_bytes={rss}",
                kiln.fields()
            ));
            rates.push(rate);
            values.push(value);
        }
        // The same bytes read twice: the same sum, in the same order of blocks.
        assert!((values[0] - values[1]).abs() <= 1e-9 * values[0].abs(), "local and {remote} sums differ: {values:?}");
        let fraction = rates[1] / rates[0];
        println!("kiln {format}: {remote} reads at {:.0} % of the local-disk rate (bar: 50 %)", fraction * 100.0);
        line.push_str(&format!(
            " {format}_logical_bytes={} {format}_stored_bytes={stored} kiln_{format}_{remote}_fraction={fraction:.3}",
            dataset.logical_bytes
        ));
        if !protocol.no_dask {
            for (side, source) in [("local", local.as_str()), (remote, url.as_str())] {
                let cpu_before = server_pid.map(cpu_seconds);
                let args = vec![
                    "--format".to_string(),
                    format.to_string(),
                    "--source".into(),
                    source.to_string(),
                    "--endpoint".into(),
                    server.clone(),
                    "--key".into(),
                    key.into(),
                    "--secret".into(),
                    secret.into(),
                ];
                match run_dask("dask_object_store_read.py", &args, &protocol, protocol.threads) {
                    Ok(d) => {
                        let dask = Side::from_dask(&format!("dask_{format}_{side}"), &d, "").expect("the Dask runs");
                        let dsum = get(&d, "sum").unwrap_or(f64::NAN);
                        assert!(
                            (dsum - values[0]).abs() <= 1e-6 * values[0].abs(),
                            "dask's sum {dsum} differs from kiln's {}",
                            values[0]
                        );
                        let rate = mb / dask.median();
                        let rss = get(&d, "peak_rss_bytes").unwrap_or(f64::NAN);
                        println!(
                            "dask {format} {side}: {rate:.0} MB/s; {}; peak RSS {:.0} MB",
                            dask.summary(),
                            rss / 1e6
                        );
                        line.push_str(&format!(
                            " {} dask_{format}_{side}_mb_s={rate:.1} dask_{format}_{side}_peak_rss_bytes={rss:.0}",
                            dask.fields()
                        ));
                        if let (Some(pid), Some(before)) = (server_pid, cpu_before)
                            && side != "local"
                        {
                            let runs = (protocol.runs + 1) as f64;
                            let server_cpu = (cpu_seconds(pid) - before) / runs;
                            println!("{}: {server_cpu:.2} CPU s a run while Dask read {format}", kind.name());
                            line.push_str(&format!(" {}_cpu_s_per_dask_{format}_run={server_cpu:.2}", kind.name()));
                        }
                    }
                    Err(e) => println!("dask {format} {side} skipped: {e}"),
                }
            }
        }
        if let Some(started) = &started {
            let name = started.kind.name();
            line.push_str(&format!(" {name}_{format}_peak_rss_bytes={}", peak_rss_of(started.child.id())));
        }
        drop(started);
        if delete_data {
            let _ = std::fs::remove_dir_all(&dataset.local);
        }
    }
    println!("{line}");
}
