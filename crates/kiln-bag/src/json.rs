//! [`Json`]: a schemaless JSON record kept as its validated text, fields found on demand.
//!
//! Building a `serde_json::Value` tree allocates a map and a `String` per key of every object
//! (an `IndexMap`, since the workspace turns on serde_json's `preserve_order`), which made the
//! seeds' schemaless pipelines several times slower than typed ones. A `Json` is the record's
//! text, validated once by serde_json (without building anything) and shared behind an `Arc`;
//! `record["name"]`, [`JsonText::get`] and `pluck` scan that text for the field and hand out a
//! view of it, so a pipeline that reads two fields of a record never materialises the rest.
//!
//! The values mean what serde_json says they mean: equality and hashing follow
//! `serde_json::Value` (objects compare as maps, the last of duplicate keys wins, strings
//! compare decoded, numbers as serde_json parses them), and [`JsonText::to_value`] gives the
//! same `Value` that `serde_json::from_str` would.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Index};
use std::sync::Arc;

use serde::de::{MapAccess, SeqAccess, Visitor};

/// One JSON value as text that is known to be valid, without surrounding whitespace: what a
/// [`Json`] holds and what looking inside one gives (`&JsonText`, borrowed from the record).
#[repr(transparent)]
pub struct JsonText(str);

/// The JSON `null` that indexing gives for a missing key or index (as `serde_json::Value`'s
/// `Index` does).
static NULL: &str = "null";

/// What kind of JSON value a [`JsonText`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JsonKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonKind {
    /// The kind's name as error messages spell it (`"object"`, `"string"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "bool",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        }
    }
}

impl JsonText {
    /// Wraps text already known to be one valid JSON value without surrounding whitespace.
    fn new_unchecked(text: &str) -> &JsonText {
        // SAFETY: `JsonText` is `repr(transparent)` over `str`, so the pointer cast keeps the
        // layout and the lifetime.
        unsafe { &*(text as *const str as *const JsonText) }
    }

    /// The value's JSON text, as it was written (minus surrounding whitespace).
    pub fn as_raw(&self) -> &str {
        &self.0
    }

    /// What kind of value this is.
    pub fn kind(&self) -> JsonKind {
        match self.0.as_bytes()[0] {
            b'n' => JsonKind::Null,
            b't' | b'f' => JsonKind::Bool,
            b'"' => JsonKind::String,
            b'[' => JsonKind::Array,
            b'{' => JsonKind::Object,
            _ => JsonKind::Number,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        self.kind() == JsonKind::Null
    }

    /// The string, decoded (borrowed when it has no escapes), if this is a string.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        (self.kind() == JsonKind::String).then(|| decode_string(&self.0))
    }

    /// The boolean, if this is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.0 {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// The number as serde_json parses it, if this is a number.
    pub fn as_number(&self) -> Option<serde_json::Number> {
        if self.kind() != JsonKind::Number {
            return None;
        }
        serde_json::from_str(&self.0).ok()
    }

    /// The number as a `u64`, if it is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_number()?.as_u64()
    }

    /// The number as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_number()?.as_i64()
    }

    /// The number as an `f64`, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        self.as_number()?.as_f64()
    }

    /// The value under `key`, if this is an object that has it (the last one when the key is
    /// repeated, as serde_json keeps).
    pub fn get(&self, key: &str) -> Option<&JsonText> {
        if self.kind() != JsonKind::Object {
            return None;
        }
        let mut found = None;
        for (raw_key, value) in self.entries() {
            if key_matches(raw_key, key) {
                found = Some(value);
            }
        }
        found
    }

    /// The value under `key` in an object known to have no repeated keys: the first match is
    /// the only one, so the rest of the object is not scanned.
    fn get_distinct(&self, key: &str) -> Option<&JsonText> {
        self.entries().find(|(raw_key, _)| key_matches(raw_key, key)).map(|(_, value)| value)
    }

    /// Item `index`, if this is an array that long.
    pub fn get_index(&self, index: usize) -> Option<&JsonText> {
        if self.kind() != JsonKind::Array {
            return None;
        }
        self.items().nth(index)
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<impl Iterator<Item = &JsonText>> {
        (self.kind() == JsonKind::Array).then(|| self.items())
    }

    /// The keys (decoded) and values in written order, if this is an object; a repeated key
    /// appears each time it was written.
    pub fn as_object(&self) -> Option<impl Iterator<Item = (Cow<'_, str>, &JsonText)>> {
        (self.kind() == JsonKind::Object).then(|| self.entries().map(|(k, v)| (decode_string(k), v)))
    }

    /// The same value as a `serde_json::Value`.
    ///
    /// # Errors
    /// None for text a [`Json`] accepted; the error is serde_json's, should it disagree.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    fn items(&self) -> Items<'_> {
        Items { text: &self.0, at: 1 }
    }

    fn entries(&self) -> Entries<'_> {
        Entries { text: &self.0, at: 1 }
    }

    /// Structural equality at `depth` (see the module docs).
    fn equals(&self, other: &JsonText) -> bool {
        if self.0 == other.0 {
            return true;
        }
        match (self.kind(), other.kind()) {
            (JsonKind::String, JsonKind::String) => decode_string(&self.0) == decode_string(&other.0),
            (JsonKind::Number, JsonKind::Number) => self.as_number() == other.as_number(),
            (JsonKind::Array, JsonKind::Array) => {
                let (mut a, mut b) = (self.items(), other.items());
                loop {
                    match (a.next(), b.next()) {
                        (None, None) => return true,
                        (Some(x), Some(y)) if x.equals(y) => {}
                        _ => return false,
                    }
                }
            }
            (JsonKind::Object, JsonKind::Object) => {
                let (a, b) = (self.object_map(), other.object_map());
                a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| ka == kb && va.equals(vb))
            }
            // null, true and false have one spelling each: different text, different value.
            _ => false,
        }
    }

    /// The object's entries by decoded key, the last of repeated keys winning.
    fn object_map(&self) -> BTreeMap<Cow<'_, str>, &JsonText> {
        self.entries().map(|(k, v)| (decode_string(k), v)).collect()
    }

    fn hash_into<H: Hasher>(&self, state: &mut H) {
        let kind = self.kind();
        kind.hash(state);
        match kind {
            JsonKind::Null => {}
            JsonKind::Bool => self.0.len().hash(state),
            JsonKind::String => decode_string(&self.0).hash(state),
            JsonKind::Number => match self.as_number() {
                Some(n) => hash_number(&n, state),
                None => self.0.hash(state),
            },
            JsonKind::Array => {
                let mut n = 0usize;
                for item in self.items() {
                    item.hash_into(state);
                    n += 1;
                }
                n.hash(state);
            }
            JsonKind::Object => {
                let map = self.object_map();
                map.len().hash(state);
                for (k, v) in map {
                    k.hash(state);
                    v.hash_into(state);
                }
            }
        }
    }
}

/// Hashes a number consistently with serde_json's `Number` equality (integers by value and
/// sign class, floats by value with `0.0 == -0.0`).
fn hash_number<H: Hasher>(n: &serde_json::Number, state: &mut H) {
    if let Some(u) = n.as_u64().filter(|_| !n.is_f64()) {
        (0u8, u).hash(state);
    } else if let Some(i) = n.as_i64().filter(|_| !n.is_f64()) {
        (1u8, i).hash(state);
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        let f = if f == 0.0 { 0.0f64 } else { f };
        (2u8, f.to_bits()).hash(state);
    }
}

/// Whether the raw (quoted, possibly escaped) key `raw` spells `key`.
fn key_matches(raw: &str, key: &str) -> bool {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains('\\') {
        return inner == key;
    }
    decode_string(raw) == key
}

/// A valid JSON string literal's content, decoded.
fn decode_string(raw: &str) -> Cow<'_, str> {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    // Escapes are rare: serde_json decodes them exactly as it does everywhere else. The literal
    // was validated, so this succeeds; the fallback keeps the raw content rather than panic.
    match serde_json::from_str::<String>(raw) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(inner),
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// The index of the first byte at or after `at` that can end a run of plain string content
/// (`"`, `\\` or a control character below 0x20), or `bytes.len()`. Eight bytes at a time:
/// record strings are mostly a few to a few dozen bytes, too short for `memchr`'s set-up to pay.
fn next_special(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = bytes.get(at..at + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // Each term flags the bytes that are zero (or below 0x20) exactly up to its first hit;
        // the lowest flag of all is the first special byte.
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < bytes.len() && !matches!(bytes[at], b'"' | b'\\' | 0..0x20) {
        at += 1;
    }
    at
}

/// The index after the string literal that starts (with its quote) at `at`.
fn skip_string(bytes: &[u8], mut at: usize) -> usize {
    at += 1;
    loop {
        at = next_special(bytes, at);
        match bytes.get(at) {
            Some(b'"') => return at + 1,
            Some(b'\\') => at += 2,
            Some(_) => at += 1,
            None => return bytes.len(),
        }
    }
}

/// The index after the value that starts at `at` (valid JSON, so brackets balance).
fn skip_value(bytes: &[u8], mut at: usize) -> usize {
    match bytes[at] {
        b'"' => skip_string(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            while at < bytes.len() {
                match bytes[at] {
                    b'"' => {
                        at = skip_string(bytes, at);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return at + 1;
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
            at
        }
        _ => {
            while at < bytes.len() && !matches!(bytes[at], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                at += 1;
            }
            at
        }
    }
}

/// An array's items.
struct Items<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a JsonText;

    fn next(&mut self) -> Option<&'a JsonText> {
        let bytes = self.text.as_bytes();
        let start = skip_ws(bytes, self.at);
        if start >= bytes.len() || bytes[start] == b']' {
            self.at = bytes.len();
            return None;
        }
        let end = skip_value(bytes, start);
        let after = skip_ws(bytes, end);
        // Past the `,` (or onto the `]`, which ends the next call).
        self.at = if after < bytes.len() && bytes[after] == b',' { after + 1 } else { after };
        Some(JsonText::new_unchecked(&self.text[start..end]))
    }
}

/// An object's entries: raw keys (with their quotes) and values.
struct Entries<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, &'a JsonText);

    fn next(&mut self) -> Option<(&'a str, &'a JsonText)> {
        let bytes = self.text.as_bytes();
        let key_start = skip_ws(bytes, self.at);
        if key_start >= bytes.len() || bytes[key_start] != b'"' {
            self.at = bytes.len();
            return None;
        }
        let key_end = skip_string(bytes, key_start);
        // Past the `:`.
        let start = skip_ws(bytes, skip_ws(bytes, key_end) + 1);
        let end = skip_value(bytes, start);
        let after = skip_ws(bytes, end);
        self.at = if after < bytes.len() && bytes[after] == b',' { after + 1 } else { after };
        Some((&self.text[key_start..key_end], JsonText::new_unchecked(&self.text[start..end])))
    }
}

/// Deepest nesting [`plainly_valid`] follows; serde_json's own limit is 128.
const PLAIN_DEPTH: u32 = 100;

/// Longest number [`plainly_valid`] accepts: far below the 309 digits where a number without
/// an exponent leaves `f64`'s range.
const PLAIN_NUMBER: usize = 64;

/// How many keys of a record's top-level object [`plainly_valid`] compares for repeats; a
/// record with more is simply not known to have distinct keys. Records have a handful; the
/// table is set up for every record, so it stays small.
const PLAIN_KEYS: usize = 16;

/// The top-level keys [`plainly_valid`] has seen, to tell whether any repeats. A key is kept
/// with its first eight bytes in one word, so most comparisons are two integer compares; only
/// keys longer than eight bytes that agree on both compare the rest.
struct TopKeys {
    /// Per key: the first eight bytes of its content (zero-padded), and where the raw key
    /// starts and ends in the text.
    seen: [(u64, u32, u32); PLAIN_KEYS],
    len: usize,
    distinct: bool,
}

impl TopKeys {
    fn new() -> TopKeys {
        TopKeys { seen: [(0, 0, 0); PLAIN_KEYS], len: 0, distinct: true }
    }

    /// Notes the raw key `bytes[start..end]` (with its quotes); `escaped` when it holds a
    /// backslash (such a key can spell another one two ways: not compared, so not known
    /// distinct).
    fn note(&mut self, bytes: &[u8], start: usize, end: usize, escaped: bool) {
        if !self.distinct {
            return;
        }
        if self.len == PLAIN_KEYS || escaped || end > u32::MAX as usize {
            self.distinct = false;
            return;
        }
        let content = &bytes[start + 1..end - 1];
        // The eight bytes after the opening quote in one load (the text nearly always goes on
        // that far), masked to the key's length.
        let head = match bytes.get(start + 1..start + 9) {
            Some(eight) => {
                let word = u64::from_le_bytes(eight.try_into().unwrap_or_default());
                if content.len() >= 8 { word } else { word & ((1u64 << (8 * content.len())) - 1) }
            }
            None => {
                let mut head = [0u8; 8];
                let n = content.len().min(8);
                head[..n].copy_from_slice(&content[..n]);
                u64::from_le_bytes(head)
            }
        };
        let raw_len = (end - start) as u32;
        let repeated = self.seen[..self.len].iter().any(|&(h, s, e)| {
            h == head && e - s == raw_len && (content.len() <= 8 || bytes[s as usize + 1..e as usize - 1] == *content)
        });
        if repeated {
            self.distinct = false;
        } else {
            self.seen[self.len] = (head, start as u32, end as u32);
            self.len += 1;
        }
    }
}

/// Whether `bytes` is certainly one JSON value that serde_json accepts as a `Value`, in one
/// pass and without building anything: the common shape of records (strings without `\u`
/// escapes or control characters, numbers without exponents, nesting up to [`PLAIN_DEPTH`]).
/// `None` means "not sure", never "invalid": such text goes through serde_json, which decides
/// (and words the error), so what is accepted stays exactly what serde_json accepts.
/// `Some(distinct)` tells whether the value is an object whose keys are known to be distinct
/// (so a lookup may stop at the first match instead of looking for a later repeat).
fn plainly_valid(bytes: &[u8]) -> Option<bool> {
    // Per open bracket, whether it is an object (bit set) or an array.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    let mut keys = TopKeys::new();
    let mut at = skip_ws(bytes, 0);
    let top_is_object = bytes.get(at) == Some(&b'{');
    loop {
        // A value starts at `at`.
        let open = match *bytes.get(at)? {
            b'"' => {
                at = plain_string(bytes, at)?;
                None
            }
            byte @ (b'{' | b'[') => {
                depth += 1;
                if depth > PLAIN_DEPTH {
                    return None;
                }
                let object = byte == b'{';
                objects = (objects << 1) | u128::from(object);
                at = skip_ws(bytes, at + 1);
                let close = if object { b'}' } else { b']' };
                if bytes.get(at) == Some(&close) {
                    at += 1;
                    depth -= 1;
                    objects >>= 1;
                    None
                } else {
                    Some(object)
                }
            }
            byte @ (b't' | b'f' | b'n') => {
                let word: &[u8] = match byte {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if !bytes[at..].starts_with(word) {
                    return None;
                }
                at += word.len();
                None
            }
            _ => {
                at = plain_number(bytes, at)?;
                None
            }
        };
        match open {
            // An object's first key.
            Some(true) => at = plain_key(bytes, at, (depth == 1).then_some(&mut keys))?,
            // An array's first item.
            Some(false) => {}
            // A value ended: close brackets until the next item or key, or the end.
            None => loop {
                at = skip_ws(bytes, at);
                if depth == 0 {
                    return (at == bytes.len()).then_some(top_is_object && keys.distinct);
                }
                let object = objects & 1 == 1;
                match bytes.get(at) {
                    Some(b',') => {
                        at = skip_ws(bytes, at + 1);
                        if object {
                            at = plain_key(bytes, at, (depth == 1).then_some(&mut keys))?;
                        }
                        break;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return None,
                }
                at += 1;
                depth -= 1;
                objects >>= 1;
            },
        }
        at = skip_ws(bytes, at);
    }
}

/// Past an object key at `at` and its `:` (at the value's first byte or whitespace before it),
/// noting the key in `keys` when given.
fn plain_key(bytes: &[u8], at: usize, keys: Option<&mut TopKeys>) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    // Most keys have no escape: their first special byte is the closing quote.
    let first = next_special(bytes, at + 1);
    let (end, escaped) =
        if bytes.get(first) == Some(&b'"') { (first + 1, false) } else { (plain_string(bytes, at)?, true) };
    if let Some(keys) = keys {
        keys.note(bytes, at, end, escaped);
    }
    let colon = skip_ws(bytes, end);
    (bytes.get(colon) == Some(&b':')).then_some(colon + 1)
}

/// The end of the string literal starting (with its quote) at `at`, if it has no control
/// characters and only the short escapes (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`).
/// The text is a `str`, so its bytes are valid UTF-8 already.
fn plain_string(bytes: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    loop {
        at = next_special(bytes, at);
        match bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                if !matches!(bytes.get(at + 1)?, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') {
                    return None;
                }
                at += 2;
            }
            _ => return None,
        }
    }
}

/// The end of the number starting at `at`, if it is `-?(0|[1-9][0-9]*)(\.[0-9]+)?` and at
/// most [`PLAIN_NUMBER`] bytes long (so certainly within `f64`'s range).
fn plain_number(bytes: &[u8], start: usize) -> Option<usize> {
    let digits = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        at
    };
    let mut at = start;
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(at + 1),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) || at - start > PLAIN_NUMBER {
        return None;
    }
    Some(at)
}

/// A JSON value that parsed, of which nothing is kept.
struct Valid;

impl<'de> serde::Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Valid, D::Error> {
        deserializer.deserialize_any(ValidVisitor)
    }
}

struct ValidVisitor;

impl<'de> Visitor<'de> for ValidVisitor {
    type Value = Valid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_key::<Valid>()?.is_some() {
            map.next_value::<Valid>()?;
        }
        Ok(Valid)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.equals(other)
    }
}

impl Eq for JsonText {}

impl Hash for JsonText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash_into(state);
    }
}

/// A JSON string equals a `str` with the same decoded content; other kinds never do.
impl PartialEq<str> for JsonText {
    fn eq(&self, other: &str) -> bool {
        self.kind() == JsonKind::String && key_matches(&self.0, other)
    }
}

impl PartialEq<&str> for JsonText {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<serde_json::Value> for JsonText {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.to_value().is_ok_and(|v| v == *other)
    }
}

impl Index<&str> for JsonText {
    type Output = JsonText;

    /// The value under `key`, or `null` when there is none or this is not an object (as
    /// `serde_json::Value` indexes).
    fn index(&self, key: &str) -> &JsonText {
        self.get(key).unwrap_or(JsonText::new_unchecked(NULL))
    }
}

impl Index<usize> for JsonText {
    type Output = JsonText;

    /// Item `index`, or `null` when there is none or this is not an array.
    fn index(&self, index: usize) -> &JsonText {
        self.get_index(index).unwrap_or(JsonText::new_unchecked(NULL))
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schemaless JSON record (or a value plucked from one) for bags: its text, validated once
/// and shared, with fields found on demand. Cloning is a reference count; a value plucked from
/// a record shares the record's text.
///
/// ```
/// use kiln_bag::Json;
/// let event = Json::parse(r#"{"type": "PushEvent", "actor": {"login": "al\u0069ce"}}"#).unwrap();
/// assert!(event["type"] == "PushEvent");
/// assert_eq!(event["actor"]["login"].as_str().unwrap(), "alice");
/// assert!(event["missing"].is_null());
/// assert!(Json::parse("{\"a\": }").is_err());
/// ```
#[derive(Clone)]
pub struct Json {
    text: Arc<str>,
    start: usize,
    end: usize,
    /// The value is an object whose keys were found distinct when it was parsed.
    distinct_keys: bool,
}

impl Json {
    /// Parses one JSON value (surrounding whitespace allowed).
    ///
    /// # Errors
    /// serde_json's error for text that `serde_json::from_str::<Value>` refuses (not one valid
    /// JSON value, a number out of range, nesting deeper than its limit of 128).
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        let distinct_keys = Self::validate(text)?;
        let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
        Ok(Json { text: Arc::from(trimmed), start: 0, end: trimmed.len(), distinct_keys })
    }

    /// [`Json::parse`] without copying when `text` is already trimmed and owned.
    ///
    /// # Errors
    /// As [`Json::parse`].
    pub fn from_string(text: String) -> Result<Json, serde_json::Error> {
        let distinct_keys = Self::validate(&text)?;
        let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
        if trimmed.len() != text.len() {
            return Ok(Json { text: Arc::from(trimmed), start: 0, end: trimmed.len(), distinct_keys });
        }
        let end = text.len();
        Ok(Json { text: Arc::from(text), start: 0, end, distinct_keys })
    }

    /// Checks `text` is one JSON value serde_json accepts; says whether it is an object known
    /// to have distinct keys.
    fn validate(text: &str) -> Result<bool, serde_json::Error> {
        if let Some(distinct_keys) = plainly_valid(text.as_bytes()) {
            return Ok(distinct_keys);
        }
        // Through serde_json's `deserialize_any`, as `Value` parsing goes, so the same texts are
        // accepted (numbers in range, nesting within its limit, escapes), but nothing is built.
        serde_json::from_str::<Valid>(text).map(|_| false)
    }

    /// The record for a `serde_json::Value`.
    pub fn from_value(value: &serde_json::Value) -> Json {
        let text = value.to_string();
        let end = text.len();
        Json { text: Arc::from(text), start: 0, end, distinct_keys: false }
    }

    /// The value under `key`, if this is an object that has it (the last one when the key is
    /// repeated, as serde_json keeps); as [`JsonText::get`], but a record whose keys were
    /// found distinct when it was parsed is scanned only up to the key.
    pub fn get(&self, key: &str) -> Option<&JsonText> {
        if self.distinct_keys { (**self).get_distinct(key) } else { (**self).get(key) }
    }

    /// A [`Json`] for `part`, a value inside this one, sharing the text.
    fn share(&self, part: &JsonText) -> Json {
        let base = self.text.as_ptr() as usize;
        let start = part.0.as_ptr() as usize - base;
        Json { text: Arc::clone(&self.text), start, end: start + part.0.len(), distinct_keys: false }
    }

    /// The value at `path` inside this one as its own [`Json`] (sharing the text), or the
    /// index in `path` of the step that is missing, with the kind of value found there.
    pub(crate) fn pluck(&self, path: &[crate::PathSegment]) -> Result<Json, (usize, JsonKind)> {
        let mut at: &JsonText = self;
        for (i, segment) in path.iter().enumerate() {
            let next = match segment {
                crate::PathSegment::Key(key) if i == 0 => self.get(key),
                crate::PathSegment::Key(key) => at.get(key),
                crate::PathSegment::Index(index) => at.get_index(*index),
            };
            at = next.ok_or((i, at.kind()))?;
        }
        Ok(self.share(at))
    }
}

impl Deref for Json {
    type Target = JsonText;

    fn deref(&self) -> &JsonText {
        JsonText::new_unchecked(&self.text[self.start..self.end])
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        **self == **other
    }
}

impl Eq for Json {}

impl Hash for Json {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl PartialEq<str> for Json {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for Json {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl PartialEq<serde_json::Value> for Json {
    fn eq(&self, other: &serde_json::Value) -> bool {
        **self == *other
    }
}

impl Index<&str> for Json {
    type Output = JsonText;

    fn index(&self, key: &str) -> &JsonText {
        self.get(key).unwrap_or(JsonText::new_unchecked(NULL))
    }
}

impl Index<usize> for Json {
    type Output = JsonText;

    fn index(&self, index: usize) -> &JsonText {
        &(**self)[index]
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl std::str::FromStr for Json {
    type Err = serde_json::Error;

    fn from_str(text: &str) -> Result<Json, serde_json::Error> {
        Json::parse(text)
    }
}

impl From<&serde_json::Value> for Json {
    fn from(value: &serde_json::Value) -> Json {
        Json::from_value(value)
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Json {
        Json::from_value(&value)
    }
}

/// Serialized as the JSON value it holds (a map, a list, ...), so it travels through any serde
/// format, not just JSON.
impl serde::Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().map_err(serde::ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|v| Json::from_value(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_limit_matches_serde_json() {
        for depth in [127, 128, 129, 130, 1000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let value = serde_json::from_str::<serde_json::Value>(&text);
            let json = Json::parse(&text);
            assert_eq!(value.is_ok(), json.is_ok(), "depth {depth}");
        }
    }

    #[test]
    fn plain_records_take_the_quick_check_and_unusual_ones_go_to_serde_json() {
        for text in [
            r#"{"id":"1","type":"PushEvent","actor":{"id":5,"login":"u\"1"},"ok":[true,false,null],"x":-0.25}"#,
            " [ 1 , { } , [ ] , \"\" , -0 ]\r\n",
            "0",
            "\"é\\n\"",
        ] {
            assert!(plainly_valid(text.as_bytes()).is_some(), "{text}");
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "{text}");
        }
        // Not necessarily invalid, but decided by serde_json.
        for text in ["1e5", "\"\\u0041\"", &"1".repeat(70), &format!("{}{}", "[".repeat(101), "]".repeat(101))] {
            assert!(plainly_valid(text.as_bytes()).is_none(), "{text}");
        }
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            ".5",
            "tru",
            "nul",
            "[1]]",
            "\"\u{1}\"",
            "{1:2}",
        ] {
            assert!(plainly_valid(text.as_bytes()).is_none(), "{text:?}");
            assert!(Json::parse(text).is_err(), "{text:?}");
        }
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            "[a\"\\/\u{1}é ]{0,4}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                proptest::collection::vec(("[ab\"]{0,2}", inner), 0..5)
                    .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]

        /// The quick check never accepts what serde_json refuses (the other direction is
        /// allowed: it may hand a valid text on), on valid and damaged texts alike.
        #[test]
        fn the_quick_check_accepts_only_what_serde_json_accepts(
            value in any_value(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            insert in proptest::sample::select(vec!["", "{", "}", "[", "]", ",", ":", "\"", "\\", "x", "1", "-", ".", "e", " ", "0", "tru", "\u{1}"]),
            truncate in proptest::prelude::any::<bool>(),
        ) {
            let text = value.to_string();
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            for candidate in [text.clone(), if truncate { text[..cut].to_string() } else { format!("{}{insert}{}", &text[..cut], &text[cut..]) }] {
                if let Some(distinct) = plainly_valid(candidate.as_bytes()) {
                    let value = serde_json::from_str::<serde_json::Value>(&candidate);
                    proptest::prop_assert!(value.is_ok(), "{:?}", candidate);
                    if distinct {
                        let written = Json::parse(&candidate).unwrap().as_object().map(|keys| keys.count());
                        proptest::prop_assert_eq!(written, value.unwrap().as_object().map(|map| map.len()), "{:?}", candidate);
                    }
                }
            }
        }
    }

    #[test]
    fn lookups_stop_early_only_in_records_with_distinct_keys() {
        for (text, distinct, a) in [
            (r#"{"a": 1, "b": {"a": 2, "a": 3}}"#, Some(true), "1"),
            (r#"{"a": 1, "b": 2, "a": 3}"#, Some(false), "3"),
            (r#"{"a\n": 0, "a": 1, "a": 4}"#, Some(false), "4"),
            (r#"{"a": 1, "\u0061": 5}"#, None, "5"),
            (r#"[{"a": 1}]"#, Some(false), "null"),
            // Keys alike in their first bytes, and a long key repeated.
            (r#"{"created_a": 0, "created_at": 1, "created_by": 2}"#, Some(true), "null"),
            (r#"{"created_at": 1, "a": 6, "created_by": 2, "created_at": 3}"#, Some(false), "6"),
            (r#"{"a": 7, "ab": 8, "b": 9}"#, Some(true), "7"),
            (r#"{"a\"": 1, "a": 8}"#, Some(false), "8"),
            // Keys around the eight bytes kept in one word: equal heads, other lengths or tails.
            (r#"{"abcdefgh": 1, "abcdefghi": 2, "abcdefghj": 3, "a": 10}"#, Some(true), "10"),
            (r#"{"abcdefgh": 1, "a": 11, "abcdefgh": 2}"#, Some(false), "11"),
            (r#"{"abcdefghij": 1, "a": 12, "abcdefghij": 2}"#, Some(false), "12"),
            (r#"{"abcdefg": 1, "abcdefg\n": 2, "a": 13}"#, Some(false), "13"),
        ] {
            assert_eq!(plainly_valid(text.as_bytes()), distinct, "{text}");
            let json = Json::parse(text).unwrap();
            assert_eq!(json["a"].as_raw(), a, "{text}");
            assert_eq!(json.get("a").map(JsonText::as_raw), json.deref().get("a").map(JsonText::as_raw), "{text}");
        }
        let many: Vec<String> = (0..PLAIN_KEYS + 1).map(|i| format!("\"k{i}\": {i}")).collect();
        let text = format!("{{{}, \"k0\": -1}}", many.join(", "));
        assert_eq!(plainly_valid(text.as_bytes()), Some(false));
        assert_eq!(Json::parse(&text).unwrap()["k0"].as_raw(), "-1");
        let repeated = Json::parse(r#"{"created_at": 1, "created_by": 2, "created_at": 3}"#).unwrap();
        assert_eq!(repeated["created_at"].as_raw(), "3");
        assert_eq!(repeated["created_by"].as_raw(), "2");
    }

    #[test]
    fn strings_with_escapes_compare_decoded() {
        let a = Json::parse(r#""A\u00e9\n""#).unwrap();
        let b = Json::parse("\"Aé\\n\"").unwrap();
        assert_eq!(a, b);
        assert!(a == "Aé\n");
        assert!(a != "Aé");
    }
}
