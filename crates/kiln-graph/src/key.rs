//! Keys: the names of tasks and their results as users see them.
//!
//! A key is a name plus an index tuple, like Dask's `("add-3f2a", 1, 2)`. Names are shared
//! (`Arc<str>`): the million chunks of one array share one name allocation. Names that depend
//! on inputs come from a [`Tokenizer`], so the same inputs always give the same key and graphs
//! built twice merge instead of duplicating work.

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;
use xxhash_rust::xxh3::Xxh3;

/// The inline capacity of a key's index; n-d chunk indices up to this rank never allocate.
const INLINE_INDEX: usize = 4;

/// The name of a task and of the value it produces: a name plus an index tuple.
///
/// ```
/// use kiln_graph::Key;
/// let k = Key::with_index("sum-8f3a", [2, 0]);
/// assert_eq!(k.to_string(), "('sum-8f3a', 2, 0)");
/// assert_eq!(Key::new("total").to_string(), "'total'");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    name: Arc<str>,
    index: SmallVec<[u32; INLINE_INDEX]>,
}

impl Key {
    /// A key with a name and no index.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Key { name: name.into(), index: SmallVec::new() }
    }

    /// A key with a name and an index tuple.
    pub fn with_index(name: impl Into<Arc<str>>, index: impl IntoIterator<Item = u32>) -> Self {
        Key { name: name.into(), index: index.into_iter().collect() }
    }

    /// A key that shares `name` (cheap: one reference-count increment).
    pub fn from_shared(name: &Arc<str>, index: &[u32]) -> Self {
        Key { name: Arc::clone(name), index: SmallVec::from_slice(index) }
    }

    /// The name part, e.g. `"sum-8f3a"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared name, for building sibling keys without copying the string.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The index tuple, empty for a plain name.
    pub fn index(&self) -> &[u32] {
        &self.index
    }

    /// The prefix of the name before its token (`"sum"` for `"sum-8f3a..."`), used for display
    /// and for grouping tasks of one kind.
    pub fn prefix(&self) -> &str {
        match self.name.rfind('-') {
            Some(pos) if pos > 0 && self.name[pos + 1..].chars().all(|c| c.is_ascii_hexdigit()) => &self.name[..pos],
            _ => &self.name,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index.is_empty() {
            write!(f, "'{}'", self.name)
        } else {
            write!(f, "('{}'", self.name)?;
            for i in &self.index {
                write!(f, ", {i}")?;
            }
            write!(f, ")")
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&str> for Key {
    fn from(name: &str) -> Self {
        Key::new(name)
    }
}

/// Something that can be fed into a [`Tokenizer`] with a stable, content-based encoding.
pub trait Tokenize {
    /// Feeds this value's content into the tokenizer.
    fn tokenize_into(&self, t: &mut Tokenizer);
}

/// Builds deterministic tokens from inputs: the same inputs give the same token in every
/// process and on every run (xxh3-128, a fixed seed, explicit little-endian encodings).
///
/// ```
/// use kiln_graph::Tokenizer;
/// let a = Tokenizer::new().add("ones").add(&15u64).finish();
/// let b = Tokenizer::new().add("ones").add(&15u64).finish();
/// assert_eq!(a, b);
/// assert_ne!(a, Tokenizer::new().add("ones").add(&16u64).finish());
/// ```
pub struct Tokenizer(TokenState);

/// Small inputs (the common case: a function id and a few argument keys) are buffered on the
/// stack and hashed in one shot; large ones stream.
#[allow(clippy::large_enum_variant)] // the large variant is the common one, kept inline on purpose
enum TokenState {
    Buffer(SmallVec<[u8; 256]>),
    Stream(Box<Xxh3>),
}

const BUFFER_LIMIT: usize = 4096;

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokenizer {
    /// An empty tokenizer.
    pub fn new() -> Self {
        Tokenizer(TokenState::Buffer(SmallVec::new()))
    }

    fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            TokenState::Buffer(buf) if buf.len() + bytes.len() <= BUFFER_LIMIT => buf.extend_from_slice(bytes),
            TokenState::Buffer(buf) => {
                let mut stream = Box::new(Xxh3::new());
                stream.update(buf);
                stream.update(bytes);
                self.0 = TokenState::Stream(stream);
            }
            TokenState::Stream(stream) => stream.update(bytes),
        }
    }

    /// Feeds raw bytes, length-prefixed so that `("ab","c")` and `("a","bc")` differ.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
        self
    }

    /// Feeds any [`Tokenize`] value (builder style).
    #[allow(clippy::should_implement_trait)]
    pub fn add<T: Tokenize + ?Sized>(mut self, value: &T) -> Self {
        value.tokenize_into(&mut self);
        self
    }

    /// Feeds any [`Tokenize`] value in place.
    pub fn feed<T: Tokenize + ?Sized>(&mut self, value: &T) -> &mut Self {
        value.tokenize_into(self);
        self
    }

    /// The 128-bit digest.
    pub fn digest(&self) -> u128 {
        match &self.0 {
            TokenState::Buffer(buf) => xxhash_rust::xxh3::xxh3_128(buf),
            TokenState::Stream(stream) => stream.digest128(),
        }
    }

    /// The token as 32 lowercase hex digits.
    pub fn finish(&self) -> String {
        let mut out = String::with_capacity(32);
        self.write_hex(&mut out);
        out
    }

    /// Appends the token's 32 hex digits to `out` (building a name without a second buffer).
    pub fn write_hex(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let d = self.digest();
        for shift in (0..32).rev() {
            out.push(HEX[((d >> (shift * 4)) & 0xf) as usize] as char);
        }
    }

    /// A key named `prefix-<token>`, built with a single allocation for the shared name.
    pub fn key(&self, prefix: &str) -> Key {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut name: SmallVec<[u8; 96]> = SmallVec::with_capacity(prefix.len() + 33);
        name.extend_from_slice(prefix.as_bytes());
        name.push(b'-');
        let d = self.digest();
        name.extend((0..32).rev().map(|shift| HEX[((d >> (shift * 4)) & 0xf) as usize]));
        let name = std::str::from_utf8(&name).expect("a str plus ASCII hex is UTF-8");
        Key::new(name)
    }
}

/// 128 bits that no other call, in this process or any other, returns: for names that must be
/// unique (a `delayed` value, a scattered value, an array from memory), where the scheduler would
/// otherwise take two different values for the same computation.
///
/// Each process draws a 128-bit secret from the operating system once and hashes it with a
/// counter, so tokens do not depend on the process id or the clock, which two containers share
/// (both are pid 1 and start at the same second).
///
/// ```
/// let (a, b) = (kiln_graph::unique_token(), kiln_graph::unique_token());
/// assert_ne!(a, b);
/// ```
pub fn unique_token() -> u128 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SECRET: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let secret = SECRET.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness (extremely rare): fall back to the std hasher's per-process
            // random keys, still independent of the pid.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x6b696c6e);
            bytes[..8].copy_from_slice(&h.finish().to_le_bytes());
        }
        bytes
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut input = [0u8; 24];
    input[..16].copy_from_slice(secret);
    input[16..].copy_from_slice(&n.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&input)
}

/// A token for one value: `tokenize(&x)` is `Tokenizer::new().add(&x).finish()`.
pub fn tokenize<T: Tokenize + ?Sized>(value: &T) -> String {
    Tokenizer::new().add(value).finish()
}

impl Tokenize for str {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        t.bytes(self.as_bytes());
    }
}
impl Tokenize for String {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        t.bytes(self.as_bytes());
    }
}
impl Tokenize for bool {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        t.bytes(&[*self as u8]);
    }
}
macro_rules! tokenize_numbers {
    ($($ty:ty),*) => {$(
        impl Tokenize for $ty {
            fn tokenize_into(&self, t: &mut Tokenizer) {
                t.bytes(&self.to_le_bytes());
            }
        }
    )*};
}
tokenize_numbers!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

impl<T: Tokenize> Tokenize for [T] {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        t.bytes(&(self.len() as u64).to_le_bytes());
        for item in self {
            item.tokenize_into(t);
        }
    }
}
impl<T: Tokenize> Tokenize for Vec<T> {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        self.as_slice().tokenize_into(t);
    }
}
impl<T: Tokenize + ?Sized> Tokenize for &T {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        (**self).tokenize_into(t);
    }
}
impl Tokenize for Key {
    fn tokenize_into(&self, t: &mut Tokenizer) {
        t.bytes(self.name.as_bytes());
        self.index.as_slice().tokenize_into(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_dask() {
        assert_eq!(Key::with_index("x", [0u32]).to_string(), "('x', 0)");
        assert_eq!(Key::new("x").to_string(), "'x'");
    }

    #[test]
    fn prefix_strips_token() {
        let k = Key::new(format!("sum-{}", tokenize("a")));
        assert_eq!(k.prefix(), "sum");
        assert_eq!(Key::new("my-name").prefix(), "my-name");
    }

    #[test]
    fn tokens_are_length_prefixed() {
        let a = Tokenizer::new().add("ab").add("c").finish();
        let b = Tokenizer::new().add("a").add("bc").finish();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn unique_tokens_differ_within_and_across_processes() {
        const CHILD: &str = "KILN_UNIQUE_TOKEN_CHILD";
        if std::env::var_os(CHILD).is_some() {
            println!("TOKEN {:032x}", unique_token());
            return;
        }
        let many: std::collections::HashSet<u128> = (0..10_000).map(|_| unique_token()).collect();
        assert_eq!(many.len(), 10_000);
        // The first token of two fresh processes, each pid 1 in its own pid namespace (as two
        // containers are) where `unshare` is allowed: equal if tokens came from a counter and
        // the pid.
        let exe = std::env::current_exe().unwrap();
        let args = ["--exact", "key::tests::unique_tokens_differ_within_and_across_processes", "--nocapture"];
        let first = || {
            let in_namespace = std::process::Command::new("unshare")
                .args(["--pid", "--fork"])
                .arg(&exe)
                .args(args)
                .env(CHILD, "1")
                .output()
                .ok()
                .filter(|o| o.status.success());
            let out = in_namespace
                .unwrap_or_else(|| std::process::Command::new(&exe).args(args).env(CHILD, "1").output().unwrap());
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().find_map(|l| l.strip_prefix("TOKEN ").map(str::to_string)).unwrap_or_else(|| panic!("{text}"))
        };
        let (a, b) = (first(), first());
        assert_ne!(a, b);
    }

    #[test]
    fn token_is_stable_across_runs() {
        // Literal digests: any change of hash function, seed or encoding fails here, because
        // keys travel between processes and builds (a client and a worker built apart must agree).
        // The values were cross-checked with Python's `xxhash.xxh3_128_hexdigest` on the bytes
        // the encoding promises (u64 LE length prefix, then the bytes).
        assert_eq!(tokenize("kiln"), "d7554ff2c94048926eb5bc6c868856ce");
        assert_eq!(tokenize(&String::from("kiln")), tokenize("kiln"));
        assert_eq!(tokenize(&[1u32, 2, 3][..]), "65900c8d6879e19cb9be63d11fede2ae");
        assert_eq!(tokenize(&vec![1u32, 2, 3]), tokenize(&[1u32, 2, 3][..]));
        assert_eq!(Tokenizer::new().add("ones").add(&15u64).add(&1.5f64).finish(), "5bc9e4b5b9d8fa2f9852eb80d02163ba");
        let key = Key::with_index("x", [0u32, 7]);
        assert_eq!(tokenize(&key), "1328d6e777566bb8836a12a5b9198a06");
        // Large inputs stream instead of buffering; the digest must not depend on that.
        let big = vec![7u8; 3 * BUFFER_LIMIT];
        let mut streamed = Tokenizer::new();
        streamed.bytes(&big);
        assert_eq!(
            streamed.digest(),
            xxhash_rust::xxh3::xxh3_128(&[&(big.len() as u64).to_le_bytes()[..], &big].concat())
        );
    }
}

macro_rules! tokenize_tuples {
    ($(($($t:ident : $i:tt),+)),*) => {$(
        impl<$($t: Tokenize),+> Tokenize for ($($t,)+) {
            fn tokenize_into(&self, t: &mut Tokenizer) {
                $(self.$i.tokenize_into(t);)+
            }
        }
    )*};
}
tokenize_tuples!((A: 0), (A: 0, B: 1), (A: 0, B: 1, C: 2), (A: 0, B: 1, C: 2, D: 3));

/// Keys travel as `(name, index)`; names are not shared after decoding (receivers that hold
/// many keys of one name intern them).
impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&*self.name, self.index.as_slice()).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, index): (String, SmallVec<[u32; INLINE_INDEX]>) = serde::Deserialize::deserialize(deserializer)?;
        Ok(Key { name: name.into(), index })
    }
}
