//! A worker's data: results in memory, spilled to local disk when memory runs short.
//!
//! Values are kept in memory while the managed bytes stay under the target fraction of the
//! memory limit; past it, the least recently used values are encoded with their codec,
//! compressed with LZ4 and written to the worker's spill directory. A spilled value comes back
//! transparently the next time a task or a peer needs it.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use kiln_graph::{CodecRegistry, Encoded, Key, Value};

/// Memory thresholds as fractions of the memory limit (Dask's defaults).
#[derive(Debug, Clone, Copy)]
pub struct MemoryPolicy {
    /// The worker's memory limit in bytes (0: no limit, nothing is spilled or paused).
    pub limit: u64,
    /// Spill least recently used values while managed memory is above this fraction.
    pub target: f64,
    /// Spill while the process's memory is above this fraction.
    pub spill: f64,
    /// Stop starting tasks while the process's memory is above this fraction.
    pub pause: f64,
}

impl MemoryPolicy {
    /// Dask's fractions: target 0.6, spill 0.7, pause 0.8.
    pub fn with_limit(limit: u64) -> Self {
        MemoryPolicy { limit, target: 0.6, spill: 0.7, pause: 0.8 }
    }

    fn bytes(&self, fraction: f64) -> u64 {
        (self.limit as f64 * fraction) as u64
    }
}

struct InMemory {
    value: Value,
    nbytes: u64,
    tick: u64,
}

struct OnDisk {
    path: PathBuf,
    nbytes: u64,
}

#[derive(Default)]
struct Inner {
    memory: FxHashMap<Key, InMemory>,
    /// Last use → key, oldest first.
    lru: BTreeMap<u64, Key>,
    disk: HashMap<Key, OnDisk>,
    managed: u64,
    spilled: u64,
    spilled_total: u64,
    tick: u64,
    next_file: u64,
}

/// Figures a worker reports to the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes of values in memory.
    pub managed: u64,
    /// Bytes (uncompressed) of values on disk.
    pub spilled: u64,
    /// Bytes written to disk since the worker started.
    pub spilled_total: u64,
    /// Values in memory.
    pub in_memory: usize,
    /// Values on disk.
    pub on_disk: usize,
}

/// A worker's values.
pub struct Store {
    inner: Mutex<Inner>,
    policy: MemoryPolicy,
    dir: PathBuf,
}

impl Store {
    /// A store spilling into `dir` (created on first spill, removed with the store).
    pub fn new(policy: MemoryPolicy, dir: PathBuf) -> Self {
        Store { inner: Mutex::default(), policy, dir }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the store holds `key` (in memory or on disk).
    pub fn contains(&self, key: &Key) -> bool {
        let inner = self.lock();
        inner.memory.contains_key(key) || inner.disk.contains_key(key)
    }

    /// The value of `key`, read back from disk if it was spilled.
    ///
    /// # Errors
    /// A spill file that cannot be read or decoded (the value is then lost).
    pub fn get(&self, key: &Key) -> Result<Option<Value>, String> {
        let mut inner = self.lock();
        if self.policy.limit == 0 {
            // Nothing is ever spilled: no recency to keep.
            return Ok(inner.memory.get(key).map(|e| e.value.clone()));
        }
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(entry) = inner.memory.get_mut(key) {
            let old = std::mem::replace(&mut entry.tick, tick);
            let value = entry.value.clone();
            inner.lru.remove(&old);
            inner.lru.insert(tick, key.clone());
            return Ok(Some(value));
        }
        let Some(spilled) = inner.disk.remove(key) else { return Ok(None) };
        inner.spilled -= spilled.nbytes;
        let value = unspill(&spilled.path);
        let _ = std::fs::remove_file(&spilled.path);
        let value = value
            .map_err(|e| format!("{key} was spilled to {} but cannot be read back: {e}", spilled.path.display()))?;
        inner.managed += spilled.nbytes;
        inner.memory.insert(key.clone(), InMemory { value: value.clone(), nbytes: spilled.nbytes, tick });
        inner.lru.insert(tick, key.clone());
        self.spill_over(&mut inner, self.policy.bytes(self.policy.target), Some(key));
        Ok(Some(value))
    }

    /// Stores a value, spilling older ones if memory is past the target.
    pub fn insert(&self, key: Key, value: Value, nbytes: u64) {
        let mut inner = self.lock();
        Self::remove_locked(&mut inner, &key);
        inner.tick += 1;
        let tick = inner.tick;
        inner.managed += nbytes;
        if self.policy.limit == 0 {
            inner.memory.insert(key, InMemory { value, nbytes, tick });
            return;
        }
        inner.memory.insert(key.clone(), InMemory { value, nbytes, tick });
        inner.lru.insert(tick, key.clone());
        self.spill_over(&mut inner, self.policy.bytes(self.policy.target), Some(&key));
    }

    /// Forgets every value (and its spill file).
    pub fn clear(&self) {
        let mut inner = self.lock();
        for (_, spilled) in inner.disk.drain() {
            let _ = std::fs::remove_file(&spilled.path);
        }
        inner.memory.clear();
        inner.lru.clear();
        inner.managed = 0;
        inner.spilled = 0;
    }

    /// Forgets a value; `true` if it was held.
    pub fn remove(&self, key: &Key) -> bool {
        Self::remove_locked(&mut self.lock(), key)
    }

    fn remove_locked(inner: &mut Inner, key: &Key) -> bool {
        if let Some(entry) = inner.memory.remove(key) {
            inner.lru.remove(&entry.tick);
            inner.managed -= entry.nbytes;
            return true;
        }
        if let Some(spilled) = inner.disk.remove(key) {
            inner.spilled -= spilled.nbytes;
            let _ = std::fs::remove_file(&spilled.path);
            return true;
        }
        false
    }

    /// Spills least recently used values until managed memory is at most `bytes`, or nothing
    /// more can be spilled. Returns the bytes spilled.
    pub fn spill_to(&self, bytes: u64) -> u64 {
        let mut inner = self.lock();
        self.spill_over(&mut inner, bytes, None)
    }

    /// Spills the least recently used value (for process memory above the spill fraction);
    /// `false` when nothing can be spilled.
    pub fn spill_one(&self) -> bool {
        let mut inner = self.lock();
        let target = inner.managed.saturating_sub(1);
        self.spill_over(&mut inner, target, None) > 0
    }

    fn spill_over(&self, inner: &mut Inner, bytes: u64, keep: Option<&Key>) -> u64 {
        if self.policy.limit == 0 {
            return 0;
        }
        let mut done = 0;
        let mut skipped = Vec::new();
        while inner.managed > bytes {
            let Some((tick, key)) = inner.lru.pop_first() else { break };
            if Some(&key) == keep {
                skipped.push((tick, key));
                continue;
            }
            let entry = inner.memory.remove(&key).expect("lru and memory agree");
            inner.next_file += 1;
            let path = self.dir.join(format!("{}.lz4", inner.next_file));
            match spill(&entry.value, &path, &self.dir) {
                Ok(()) => {
                    inner.managed -= entry.nbytes;
                    inner.spilled += entry.nbytes;
                    inner.spilled_total += entry.nbytes;
                    done += entry.nbytes;
                    inner.disk.insert(key, OnDisk { path, nbytes: entry.nbytes });
                }
                Err(e) => {
                    // No codec, or the disk is full: it stays in memory.
                    tracing::debug!("cannot spill {key}: {e}");
                    skipped.push((tick, key.clone()));
                    inner.memory.insert(key, entry);
                }
            }
        }
        for (tick, key) in skipped {
            inner.lru.insert(tick, key);
        }
        done
    }

    /// Current figures.
    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            managed: inner.managed,
            spilled: inner.spilled,
            spilled_total: inner.spilled_total,
            in_memory: inner.memory.len(),
            on_disk: inner.disk.len(),
        }
    }

    /// The memory policy.
    pub fn policy(&self) -> MemoryPolicy {
        self.policy
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spill(value: &Value, path: &std::path::Path, dir: &std::path::Path) -> Result<(), String> {
    let encoded = CodecRegistry::global().encode(value).map_err(|e| e.to_string())?;
    let bytes = postcard::to_allocvec(&encoded).map_err(|e| e.to_string())?;
    let compressed = lz4_flex::compress_prepend_size(&bytes);
    drop(bytes);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(path, compressed).map_err(|e| format!("{}: {e}", path.display()))
}

fn unspill(path: &std::path::Path) -> Result<Value, String> {
    let compressed = std::fs::read(path).map_err(|e| e.to_string())?;
    let bytes = lz4_flex::decompress_size_prepended(&compressed).map_err(|e| e.to_string())?;
    drop(compressed);
    let encoded: Encoded = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
    drop(bytes);
    CodecRegistry::global().decode(&encoded).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limit: u64) -> Store {
        let dir = std::env::temp_dir().join(format!("kiln-store-test-{}-{limit}", std::process::id()));
        Store::new(MemoryPolicy::with_limit(limit), dir)
    }

    #[test]
    fn least_recently_used_values_spill_and_come_back() {
        let s = store(10_000); // target 6,000 bytes
        for i in 0..10u32 {
            s.insert(Key::with_index("v", [i]), Value::new(vec![i as f64; 125]), 1000);
        }
        let stats = s.stats();
        assert!(stats.managed <= 6000, "{stats:?}");
        assert_eq!(stats.in_memory + stats.on_disk, 10);
        assert_eq!(stats.spilled, 1000 * stats.on_disk as u64);
        // The oldest went first and come back intact.
        let v = s.get(&Key::with_index("v", [0])).unwrap().unwrap();
        assert_eq!(v.downcast_ref::<Vec<f64>>().unwrap(), &vec![0.0; 125]);
        assert!(s.stats().managed <= 6000);
        for i in 0..10u32 {
            let v = s.get(&Key::with_index("v", [i])).unwrap().unwrap();
            assert_eq!(v.downcast_ref::<Vec<f64>>().unwrap()[0], i as f64);
        }
        assert!(s.remove(&Key::with_index("v", [3])));
        assert!(!s.contains(&Key::with_index("v", [3])));
        let total: u64 = s.stats().managed + s.stats().spilled;
        assert_eq!(total, 9000);
    }

    #[test]
    fn values_without_a_codec_stay_in_memory() {
        struct Opaque;
        let s = store(1000);
        s.insert(Key::new("opaque"), Value::new(Opaque), 5000);
        assert_eq!(s.stats().in_memory, 1);
        assert!(s.get(&Key::new("opaque")).unwrap().is_some());
    }

    #[test]
    fn no_limit_never_spills() {
        let s = store(0);
        s.insert(Key::new("big"), Value::new(vec![0u8; 10]), 1 << 40);
        assert_eq!(s.stats().on_disk, 0);
    }
}
