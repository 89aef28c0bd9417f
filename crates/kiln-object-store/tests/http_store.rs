#![cfg(feature = "http")]
//! The http store against a real HTTP server on loopback: Debian's nginx serving a temp
//! directory, with the dav-ext module answering PROPFIND (how `object_store`'s http client
//! lists). A directory lists its files, sizes and ranged reads give the files' bytes, a forward
//! walk of small reads costs few requests, and a missing file is `NotFound`. Skipped, saying so,
//! when nginx or its dav-ext module is not installed (`apt-get install nginx-light
//! libnginx-mod-http-dav-ext`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_object_store::ObjectStorage;
use kiln_storage::{Storage, StorageError};

const NGINX: &str = "/usr/sbin/nginx";
const DAV_EXT: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

struct Nginx {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts nginx in one process on a free loopback port, serving `dir/root`.
fn start_nginx(dir: &Path) -> Result<Nginx, String> {
    for needed in [NGINX, DAV_EXT] {
        if !Path::new(needed).exists() {
            return Err(format!("{needed} is not installed"));
        }
    }
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    let d = dir.display();
    let config = format!(
        "load_module {DAV_EXT};
daemon off;
master_process off;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {d}/root;
        location / {{ dav_ext_methods PROPFIND OPTIONS; }}
    }}
}}
"
    );
    std::fs::write(dir.join("nginx.conf"), config).map_err(|e| e.to_string())?;
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {NGINX}: {e}"))?;
    let nginx = Nginx { child, dir: dir.to_path_buf(), endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nginx did not listen on port {port} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(nginx)
}

fn object(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 253) as u8).collect()
}

#[test]
fn the_http_store_reads_and_lists_a_real_server() {
    let dir = std::env::temp_dir().join(format!("kiln-http-store-{}", std::process::id()));
    let root = dir.join("root/data");
    std::fs::create_dir_all(&root).unwrap();
    let files = [("b.bin", object(3_000_000, 1)), ("a.bin", object(1000, 2)), ("c.txt", b"hello".to_vec())];
    for (name, bytes) in &files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    let nginx = match start_nginx(&dir) {
        Ok(nginx) => nginx,
        Err(why) => {
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("SKIPPED: no nginx with PROPFIND: {why}");
            return;
        }
    };
    let storage = ObjectStorage::default();
    let base = format!("{}/data", nginx.endpoint);

    // A directory, named with its slash, lists its files in order.
    let expected: Vec<String> = ["a.bin", "b.bin", "c.txt"].iter().map(|n| format!("{base}/{n}")).collect();
    assert_eq!(storage.list(&format!("{base}/")).unwrap(), expected);
    // Without its slash too, as a local directory's path is named.
    assert_eq!(storage.list(&base).unwrap(), expected);
    // One file lists as itself.
    assert_eq!(storage.list(&expected[2]).unwrap(), vec![expected[2].clone()]);

    let url = &expected[1];
    let data = &files[0].1;
    assert_eq!(storage.size(url).unwrap(), data.len() as u64);
    assert_eq!(storage.read(&expected[2]).unwrap(), b"hello");

    // Header, page, header, page...: the bytes are the file's, in a few widened requests.
    let before = storage.read_stats();
    let mut offset = 0u64;
    while offset < data.len() as u64 {
        let end = (offset + 100_016).min(data.len() as u64);
        let header = offset..(offset + 16).min(end);
        assert_eq!(storage.read_range(url, header.clone()).unwrap(), &data[header.start as usize..header.end as usize]);
        let page = header.end..end;
        if !page.is_empty() {
            assert_eq!(storage.read_range(url, page.clone()).unwrap(), &data[page.start as usize..page.end as usize]);
        }
        offset = end;
    }
    let walk = storage.read_stats();
    assert!(walk.requests - before.requests <= 3, "{walk:?}");

    // Several ranges at once, as a Parquet row group's column chunks are asked for.
    let ranges = [10..20u64, 2_000_000..2_000_100, 500..501];
    let got = storage.read_ranges(&expected[1], &ranges).unwrap();
    for (range, bytes) in ranges.iter().zip(&got) {
        assert_eq!(bytes, &data[range.start as usize..range.end as usize]);
    }

    // A missing file is NotFound; a read past the end is an error naming the file.
    assert!(matches!(storage.read_range(&format!("{base}/missing.bin"), 0..10), Err(StorageError::NotFound { .. })));
    let error = storage.read_range(&expected[0], 990..1010).unwrap_err();
    assert!(error.to_string().contains("a.bin"), "{error}");
}
