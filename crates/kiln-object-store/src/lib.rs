//! Object stores for kiln, at the edge: `s3://`, `gs://`, `az://` and `http(s)://` URLs served
//! through [`kiln_storage::Storage`], on the `object_store` crate.
//!
//! Collections own no async runtime: they call the synchronous [`Storage`] methods from their
//! task threads, and this crate drives `object_store`'s futures on one small runtime of its own
//! (two threads, started on first use). [`register`] installs the stores for every URL scheme
//! the enabled features cover; `kiln::register_builtins` (and so `kiln worker`) calls it.
//!
//! Credentials and endpoints come from where their clouds' own tools read them:
//! - S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//!   `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL` for S3-compatible stores (MinIO, Ceph, moto);
//!   without keys in the environment, the profile `AWS_PROFILE` (else `default`) of
//!   `~/.aws/credentials` and `~/.aws/config` (or `AWS_SHARED_CREDENTIALS_FILE` /
//!   `AWS_CONFIG_FILE`); then instance and container credentials. An `http://` endpoint allows
//!   plain HTTP (a loopback test server).
//! - Google Cloud Storage: `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT*`.
//! - Azure: `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY` or a SAS/bearer token.
//!
//! A transient failure (a dropped connection, a 5xx, a throttling answer) is retried with
//! exponential backoff, at most [`MAX_RETRIES`] times and within [`RETRY_TIMEOUT`]; what still
//! fails becomes a [`StorageError`] naming the URL.
//!
//! Ranged reads that walk forward through an object (Parquet pages, CSV blocks) are widened
//! into [`READ_AHEAD`]-byte requests whose bytes answer the next reads, and the window after
//! such a window is fetched in the background while the reader works on this one (see
//! [`read_ahead`]); scattered reads are sent as asked. Readers that know their ranges ask for
//! them at once (`Storage::read_ranges`, one concurrent request each) and announce the next
//! ones (`Storage::prefetch`, fetched on this crate's runtime within the read-ahead budget).

pub mod read_ahead;

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_storage::pattern::{KeyPattern, has_wildcards, literal_prefix};
use kiln_storage::{Storage, StorageError};
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
use object_store::RetryConfig;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
pub use read_ahead::{READ_AHEAD, ReadStats};

/// Attempts after the first for a request that failed transiently.
pub const MAX_RETRIES: usize = 5;
/// Bytes between two wanted ranges worth fetching to save a request (what `object_store` and
/// Parquet's async reader merge): a round trip costs about as much as this many bytes.
pub const COALESCE_GAP: u64 = 1 << 20;

/// No request is retried once this long has passed since it was first sent.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// The URL schemes of the stores built into this build (by cargo feature).
pub fn schemes() -> Vec<&'static str> {
    let mut schemes = Vec::new();
    if cfg!(feature = "s3") {
        schemes.extend(["s3", "s3a"]);
    }
    if cfg!(feature = "gcs") {
        schemes.extend(["gs", "gcs"]);
    }
    if cfg!(feature = "azure") {
        schemes.extend(["az", "azure", "abfs", "abfss"]);
    }
    if cfg!(feature = "http") {
        schemes.extend(["http", "https"]);
    }
    schemes
}

/// Serves every scheme of [`schemes`] in this process through [`ObjectStorage`]. Idempotent.
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let storage = Arc::new(ObjectStorage::default());
        for scheme in schemes() {
            kiln_storage::register_storage(scheme, storage.clone());
        }
    });
}

/// A [`Storage`] for object-store URLs, one client per bucket (container, host), made on first
/// use from the environment's credentials.
#[derive(Default)]
pub struct ObjectStorage {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Shared with the background fetches, which put their bytes there.
    read_ahead: Arc<read_ahead::ReadAhead>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let buckets: Vec<String> = self.stores.lock().map(|s| s.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("ObjectStorage").field("buckets", &buckets).finish()
    }
}

/// A URL taken apart: `s3://bucket/a/b.csv` is scheme `s3`, bucket `bucket`, key `a/b.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    scheme: String,
    /// The bucket, container or `host[:port]`.
    bucket: String,
    key: String,
}

impl Location {
    fn parse(url: &str) -> Result<Location, StorageError> {
        let invalid = |message: &str| StorageError::InvalidUrl { url: url.to_string(), message: message.to_string() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("not a URL (no scheme://)"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket (or host) after the scheme"));
        }
        Ok(Location { scheme: scheme.to_ascii_lowercase(), bucket: bucket.to_string(), key: key.to_string() })
    }

    /// The URL of another key in the same bucket, spelled as the user spelled the bucket.
    fn url_of(&self, key: &str) -> String {
        format!("{}://{}/{key}", self.scheme, self.bucket)
    }

    fn path(&self, url: &str) -> Result<ObjectPath, StorageError> {
        ObjectPath::parse(&self.key)
            .map_err(|e| StorageError::InvalidUrl { url: url.to_string(), message: format!("bad object key: {e}") })
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
fn retry_config() -> RetryConfig {
    RetryConfig { max_retries: MAX_RETRIES, retry_timeout: RETRY_TIMEOUT, ..RetryConfig::default() }
}

impl ObjectStorage {
    /// How many ranged requests this storage sent and how many bytes they brought, beside the
    /// bytes its readers asked for (to see what read-ahead saves or costs).
    pub fn read_stats(&self) -> ReadStats {
        self.read_ahead.stats()
    }

    fn store(&self, location: &Location, url: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let id = format!("{}://{}", location.scheme, location.bucket);
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&id) {
            return Ok(store.clone());
        }
        let store = build_store(location).map_err(|e| match e {
            BuildError::Unsupported => {
                StorageError::NoStorage { url: url.to_string(), scheme: location.scheme.clone() }
            }
            BuildError::Store(e) => to_storage_error(url, e),
        })?;
        stores.insert(id, store.clone());
        Ok(store)
    }

    fn resolve(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Location, ObjectPath), StorageError> {
        let location = Location::parse(url)?;
        let store = self.store(&location, url)?;
        let path = location.path(url)?;
        Ok((store, location, path))
    }

    /// Starts fetching `range` of `url` in the background, unless read-ahead says it is held,
    /// in flight or over budget; the bytes become a read-ahead window that reads take.
    fn spawn_prefetch(&self, store: Arc<dyn ObjectStore>, object: ObjectPath, url: &str, range: Range<u64>) {
        let Some(done) = self.read_ahead.start_prefetch(url, range.clone()) else { return };
        let mut guard = PrefetchGuard { ahead: self.read_ahead.clone(), done: Some(done) };
        runtime().spawn(async move {
            let result = store.get_range(&object, range).await;
            if let Some(done) = guard.done.take() {
                guard.ahead.prefetched(&done, result.as_ref().ok());
            }
        });
    }

    /// Objects directly inside `prefix` (a "directory"), as URLs.
    fn list_directory(
        &self,
        store: &dyn ObjectStore,
        location: &Location,
        url: &str,
    ) -> Result<Vec<String>, StorageError> {
        let prefix = location.key.trim_end_matches('/');
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let listing = block_on(store.list_with_delimiter(prefix.as_ref())).map_err(|e| to_storage_error(url, e))?;
        let mut urls: Vec<String> = listing.objects.iter().map(|o| location.url_of(o.location.as_ref())).collect();
        urls.sort();
        Ok(urls)
    }
}

impl Storage for ObjectStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        let location = Location::parse(pattern)?;
        let store = self.store(&location, pattern)?;
        if location.key.is_empty() || location.key.ends_with('/') {
            return self.list_directory(store.as_ref(), &location, pattern);
        }
        if !has_wildcards(&location.key) {
            // One object, or a prefix meant as a directory, like a local directory path.
            let path = location.path(pattern)?;
            return match block_on(store.head(&path)) {
                Ok(_) => Ok(vec![pattern.to_string()]),
                Err(object_store::Error::NotFound { .. }) => self.list_directory(store.as_ref(), &location, pattern),
                // A web server may refuse a directory's HEAD (nginx answers 403 once it has
                // redirected to the slash): the name is a directory when listing it finds
                // files; otherwise the HEAD's own error is the answer.
                Err(e) => match self.list_directory(store.as_ref(), &location, pattern) {
                    Ok(urls) if !urls.is_empty() => Ok(urls),
                    _ => Err(to_storage_error(pattern, e)),
                },
            };
        }
        let matcher = KeyPattern::new(&location.key)
            .map_err(|message| StorageError::InvalidUrl { url: pattern.to_string(), message })?;
        let prefix = literal_prefix(&location.key).trim_end_matches('/');
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let objects: Vec<_> = block_on(store.list(prefix.as_ref()).collect::<Vec<_>>());
        let mut urls = Vec::new();
        for object in objects {
            let object = object.map_err(|e| to_storage_error(pattern, e))?;
            if matcher.matches(object.location.as_ref()) {
                urls.push(location.url_of(object.location.as_ref()));
            }
        }
        urls.sort();
        Ok(urls)
    }

    fn size(&self, path: &str) -> Result<u64, StorageError> {
        let (store, _, object) = self.resolve(path)?;
        block_on(store.head(&object)).map(|meta| meta.size).map_err(|e| to_storage_error(path, e))
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        if range.end <= range.start {
            return Ok(Vec::new());
        }
        let (prefix, fetch, keep) = loop {
            match self.read_ahead.plan(path, range.clone()) {
                read_ahead::Plan::Hit(bytes) => return Ok(bytes),
                read_ahead::Plan::Wait(done) => done.wait(),
                read_ahead::Plan::Fetch { prefix, fetch, keep } => break (prefix, fetch, keep),
            }
        };
        let (store, _, object) = self.resolve(path)?;
        // A widened request may run past the object's end: the store answers what there is.
        let bytes = block_on(store.get_range(&object, fetch.clone())).map_err(|e| to_storage_error(path, e))?;
        self.read_ahead.fetched(path, fetch.start, &bytes, keep);
        let asked = fetch.end - fetch.start;
        if keep && asked >= self.read_ahead.window() && bytes.len() as u64 == asked {
            // A forward walk through an object that goes on: its next window comes while the
            // reader works on this one.
            let window = self.read_ahead.window();
            self.spawn_prefetch(store.clone(), object.clone(), path, fetch.end..fetch.end + window);
        }
        let wanted = (range.end - fetch.start) as usize;
        if bytes.len() < wanted {
            return Err(StorageError::Io {
                url: path.to_string(),
                message: format!(
                    "object ends before byte {} (read {} of {})",
                    range.end,
                    prefix.len() + bytes.len(),
                    range.end - range.start
                ),
            });
        }
        if prefix.is_empty() && bytes.len() == wanted {
            return Ok(bytes.into());
        }
        let mut out = prefix;
        out.extend_from_slice(&bytes[..wanted]);
        Ok(out)
    }

    fn read_ranges(&self, path: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); ranges.len()];
        let mut missing = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            if range.is_empty() {
                continue;
            }
            loop {
                match self.read_ahead.plan_exact(path, range) {
                    Err(done) => done.wait(),
                    Ok(Some(bytes)) => {
                        out[i] = bytes;
                        break;
                    }
                    Ok(None) => {
                        missing.push(i);
                        break;
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let (store, _, object) = self.resolve(path)?;
        let requests = missing.iter().map(|&i| store.get_range(&object, ranges[i].clone()));
        let answers = block_on(futures_util::future::try_join_all(requests)).map_err(|e| to_storage_error(path, e))?;
        for (&i, bytes) in missing.iter().zip(answers) {
            let range = &ranges[i];
            self.read_ahead.fetched(path, range.start, &bytes, false);
            self.read_ahead.read_directly(bytes.len() as u64);
            if (bytes.len() as u64) < range.end - range.start {
                return Err(StorageError::Io {
                    url: path.to_string(),
                    message: format!(
                        "object ends before byte {} (read {} of {})",
                        range.end,
                        bytes.len(),
                        range.end - range.start
                    ),
                });
            }
            out[i] = bytes.into();
        }
        Ok(out)
    }

    fn coalesce_gap(&self) -> u64 {
        COALESCE_GAP
    }

    fn prefetch(&self, path: &str, ranges: &[Range<u64>]) {
        // A URL that cannot be resolved fails again, with its error, when it is read.
        let Ok((store, _, object)) = self.resolve(path) else { return };
        for range in ranges {
            self.spawn_prefetch(store.clone(), object.clone(), path, range.clone());
        }
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        let (store, _, object) = self.resolve(path)?;
        let bytes =
            block_on(async { store.get(&object).await?.bytes().await }).map_err(|e| to_storage_error(path, e))?;
        Ok(bytes.into())
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let (store, _, object) = self.resolve(path)?;
        let result = block_on(store.get(&object)).map_err(|e| to_storage_error(path, e))?;
        Ok(Box::new(ObjectReader { stream: result.into_stream(), current: Bytes::new(), url: path.to_string() }))
    }

    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let (store, _, object) = self.resolve(path)?;
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let result = block_on(store.put(&object, payload)).map(drop).map_err(|e| to_storage_error(path, e));
        self.read_ahead.forget(path);
        result
    }

    fn delete(&self, path: &str) -> Result<(), StorageError> {
        let (store, _, object) = self.resolve(path)?;
        let result = block_on(store.delete(&object));
        self.read_ahead.forget(path);
        match result {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_storage_error(path, e)),
        }
    }
}

/// Ends a background fetch even when its task is dropped before finishing (the runtime
/// shutting down, a panic in the client), so readers waiting on it never wait forever.
struct PrefetchGuard {
    ahead: Arc<read_ahead::ReadAhead>,
    /// Taken when the fetch ends normally.
    done: Option<Arc<read_ahead::Done>>,
}

impl Drop for PrefetchGuard {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            self.ahead.prefetched(&done, None);
        }
    }
}

/// An object read as a stream: each `read` takes from the body's next piece as it arrives, so
/// a large object is never held whole.
struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
    url: String,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(std::io::Error::other(format!("{}: {e}", self.url))),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn to_storage_error(url: &str, error: object_store::Error) -> StorageError {
    let url = url.to_string();
    match error {
        object_store::Error::NotFound { .. } => StorageError::NotFound { url },
        object_store::Error::PermissionDenied { source, .. } | object_store::Error::Unauthenticated { source, .. } => {
            StorageError::PermissionDenied { url, message: source.to_string() }
        }
        object_store::Error::InvalidPath { source } => StorageError::InvalidUrl { url, message: source.to_string() },
        e => StorageError::Io { url, message: e.to_string() },
    }
}

enum BuildError {
    /// The scheme's cloud is not compiled in.
    Unsupported,
    #[cfg_attr(not(any(feature = "s3", feature = "gcs", feature = "azure", feature = "http")), allow(dead_code))]
    Store(object_store::Error),
}

impl From<object_store::Error> for BuildError {
    fn from(e: object_store::Error) -> Self {
        BuildError::Store(e)
    }
}

fn build_store(location: &Location) -> Result<Arc<dyn ObjectStore>, BuildError> {
    match location.scheme.as_str() {
        #[cfg(feature = "s3")]
        "s3" | "s3a" => s3::build(&location.bucket),
        #[cfg(feature = "gcs")]
        "gs" | "gcs" => Ok(Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&location.bucket)
                .with_retry(retry_config())
                .build()?,
        )),
        #[cfg(feature = "azure")]
        "az" | "azure" => Ok(Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&location.bucket)
                .with_retry(retry_config())
                .build()?,
        )),
        #[cfg(feature = "azure")]
        "abfs" | "abfss" => Ok(Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(location.url_of(""))
                .with_retry(retry_config())
                .build()?,
        )),
        #[cfg(feature = "http")]
        // object_store's client refuses plain HTTP unless told: an http:// URL asks for it.
        "http" | "https" => Ok(Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(format!("{}://{}", location.scheme, location.bucket))
                .with_client_options(object_store::ClientOptions::new().with_allow_http(location.scheme == "http"))
                .with_retry(retry_config())
                .build()?,
        )),
        _ => Err(BuildError::Unsupported),
    }
}

#[cfg(feature = "s3")]
mod s3 {
    use super::*;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

    pub(super) fn build(bucket: &str) -> Result<Arc<dyn ObjectStore>, BuildError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry_config());
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some(profile) = shared_profile()
        {
            for (key, value) in profile {
                builder = builder.with_config(key, value);
            }
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::S3Endpoint));
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        if builder.get_config_value(&AmazonS3ConfigKey::Region).is_none()
            && let Ok(region) = std::env::var("AWS_REGION")
        {
            builder = builder.with_region(region);
        }
        Ok(Arc::new(builder.build()?))
    }

    /// The keys and region of the profile `AWS_PROFILE` (else `default`) in the AWS CLI's
    /// shared files, as object_store configuration.
    fn shared_profile() -> Option<Vec<(AmazonS3ConfigKey, String)>> {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")))?;
        let config = std::env::var_os("AWS_CONFIG_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
        let text = std::fs::read_to_string(&credentials).ok()?;
        let section = ini_section(&text, &profile)?;
        let mut out = Vec::new();
        for (name, key) in [
            ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
            ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
            ("aws_session_token", AmazonS3ConfigKey::Token),
        ] {
            if let Some(value) = section.get(name) {
                out.push((key, value.clone()));
            }
        }
        // ~/.aws/config names its sections "profile NAME", except "default".
        let config_section = if profile == "default" { profile.clone() } else { format!("profile {profile}") };
        if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            let region = config
                .and_then(|c| std::fs::read_to_string(c).ok())
                .and_then(|t| ini_section(&t, &config_section))
                .and_then(|s| s.get("region").cloned());
            if let Some(region) = region {
                out.push((AmazonS3ConfigKey::Region, region));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The `key = value` pairs of section `[name]` of an INI text.
    pub(super) fn ini_section(text: &str, name: &str) -> Option<HashMap<String, String>> {
        let mut current: Option<&str> = None;
        let mut found = None::<HashMap<String, String>>;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(header.trim());
                if current == Some(name) {
                    found.get_or_insert_with(HashMap::new);
                }
                continue;
            }
            if current == Some(name)
                && let Some((key, value)) = line.split_once('=')
            {
                found
                    .get_or_insert_with(HashMap::new)
                    .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        found
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-object-store")
            .enable_all()
            .build()
            .expect("the object-store runtime cannot start: the process is out of threads or file descriptors")
    })
}

/// Runs `future` to completion on this crate's runtime from synchronous code. A caller that is
/// itself on some tokio runtime's thread (which must not block it) gets a helper thread.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope.spawn(|| runtime().block_on(future)).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        runtime().block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_bucket_and_key() {
        let l = Location::parse("S3://bucket/a/b.csv").unwrap();
        assert_eq!((l.scheme.as_str(), l.bucket.as_str(), l.key.as_str()), ("s3", "bucket", "a/b.csv"));
        assert_eq!(l.url_of("c/d.csv"), "s3://bucket/c/d.csv");
        assert_eq!(Location::parse("gs://bucket").unwrap().key, "");
        assert!(matches!(Location::parse("s3:///key"), Err(StorageError::InvalidUrl { .. })));
    }

    #[cfg(feature = "s3")]
    #[test]
    fn shared_credentials_sections_are_read_by_profile() {
        let text = "[default]\naws_access_key_id = AK\n# comment\naws_secret_access_key=SK\n\n[other]\naws_access_key_id = O\n";
        let default = s3::ini_section(text, "default").unwrap();
        assert_eq!(default["aws_access_key_id"], "AK");
        assert_eq!(default["aws_secret_access_key"], "SK");
        assert_eq!(s3::ini_section(text, "other").unwrap()["aws_access_key_id"], "O");
        assert!(s3::ini_section(text, "missing").is_none());
    }

    #[test]
    fn every_enabled_scheme_is_registered() {
        register();
        for scheme in schemes() {
            assert!(kiln_storage::storage_for(&format!("{scheme}://bucket/key")).is_ok(), "{scheme}");
        }
    }
}
