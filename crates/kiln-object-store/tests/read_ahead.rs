#![cfg(feature = "s3")]
//! Read-ahead against a real S3-compatible server on loopback (the `moto` server from PyPI,
//! installed by scripts/install-moto.sh): a forward walk of small reads costs a few requests and
//! returns the object's bytes, a widened request running past the object's end is answered with
//! what there is, scattered reads are sent as asked, and a rewritten object is read anew.
//! Skipped, saying so, when no `moto_server` can be started.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_object_store::ObjectStorage;
use kiln_storage::{Storage, StorageError};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Result<Moto, String> {
    let installed = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".cache/kiln-moto-venv/bin/moto_server"))
        .filter(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned());
    let program = std::env::var("KILN_MOTO_SERVER").ok().or(installed).unwrap_or_else(|| "moto_server".to_string());
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program} (scripts/install-moto.sh installs it): {e}"))?;
    let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{program} did not listen on port {port} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let address = moto.endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    write!(stream, "PUT /ahead HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("creating the bucket: {answer}"));
    }
    Ok(moto)
}

fn object(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 253) as u8).collect()
}

#[test]
fn read_ahead_on_a_real_s3_server() {
    let moto = match start_moto() {
        Ok(moto) => moto,
        Err(why) => {
            eprintln!("SKIPPED: no S3-compatible server: {why}");
            return;
        }
    };
    // SAFETY: the only test of this binary, before any store is built.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let storage = ObjectStorage::default();
    let url = "s3://ahead/pages.bin";
    let data = object(3_000_000, 1);
    storage.write(url, &data).unwrap();

    // Header, page, header, page...: like Parquet's page reader, through the whole object.
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
    // The first header exactly, then one window reaching past the end, answered with the rest.
    assert_eq!(walk.requests, 2, "{walk:?}");
    assert_eq!(walk.bytes_fetched, data.len() as u64);
    assert_eq!(walk.bytes_read, data.len() as u64);

    // Scattered reads of another object are sent as asked.
    let other = "s3://ahead/index.bin";
    let index = object(5_000_000, 2);
    storage.write(other, &index).unwrap();
    for start in [4_000_000u64, 10, 2_500_000] {
        let got = storage.read_range(other, start..start + 64).unwrap();
        assert_eq!(got, &index[start as usize..start as usize + 64]);
    }
    let scattered = storage.read_stats();
    assert_eq!(scattered.requests - walk.requests, 3);
    assert_eq!(scattered.bytes_fetched - walk.bytes_fetched, 3 * 64);

    // A rewritten object is read anew, not from the old window.
    let rewritten = object(3_000_000, 7);
    storage.write(url, &rewritten).unwrap();
    assert_eq!(storage.read_range(url, 1000..2000).unwrap(), &rewritten[1000..2000]);

    // A read past the end is an error naming the object, window or not.
    let error = storage.read_range(url, 2_999_990..3_000_010).unwrap_err();
    assert!(error.to_string().contains("pages.bin"), "{error}");
    assert!(matches!(storage.read_range("s3://ahead/missing.bin", 0..10), Err(StorageError::NotFound { .. })));
}
