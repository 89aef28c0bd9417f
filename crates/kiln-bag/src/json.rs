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

/// The index after the string literal that starts (with its quote) at `at`.
fn skip_string(bytes: &[u8], mut at: usize) -> usize {
    at += 1;
    while let Some(i) = memchr::memchr2(b'"', b'\\', &bytes[at..]) {
        at += i;
        if bytes[at] == b'"' {
            return at + 1;
        }
        at += 2;
    }
    bytes.len()
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
}

impl Json {
    /// Parses one JSON value (surrounding whitespace allowed).
    ///
    /// # Errors
    /// serde_json's error for text that `serde_json::from_str::<Value>` refuses (not one valid
    /// JSON value, a number out of range, nesting deeper than its limit of 128).
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        Self::validate(text)?;
        let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
        Ok(Json { text: Arc::from(trimmed), start: 0, end: trimmed.len() })
    }

    /// [`Json::parse`] without copying when `text` is already trimmed and owned.
    ///
    /// # Errors
    /// As [`Json::parse`].
    pub fn from_string(text: String) -> Result<Json, serde_json::Error> {
        Self::validate(&text)?;
        let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
        if trimmed.len() != text.len() {
            return Ok(Json { text: Arc::from(trimmed), start: 0, end: trimmed.len() });
        }
        let end = text.len();
        Ok(Json { text: Arc::from(text), start: 0, end })
    }

    fn validate(text: &str) -> Result<(), serde_json::Error> {
        // Through serde_json's `deserialize_any`, as `Value` parsing goes, so the same texts are
        // accepted (numbers in range, nesting within its limit, escapes), but nothing is built.
        serde_json::from_str::<Valid>(text).map(|_| ())
    }

    /// The record for a `serde_json::Value`.
    pub fn from_value(value: &serde_json::Value) -> Json {
        let text = value.to_string();
        let end = text.len();
        Json { text: Arc::from(text), start: 0, end }
    }

    /// A [`Json`] for `part`, a value inside this one, sharing the text.
    fn share(&self, part: &JsonText) -> Json {
        let base = self.text.as_ptr() as usize;
        let start = part.0.as_ptr() as usize - base;
        Json { text: Arc::clone(&self.text), start, end: start + part.0.len() }
    }

    /// The value at `path` inside this one as its own [`Json`] (sharing the text), or the
    /// index in `path` of the step that is missing, with the kind of value found there.
    pub(crate) fn pluck(&self, path: &[crate::PathSegment]) -> Result<Json, (usize, JsonKind)> {
        let mut at: &JsonText = self;
        for (i, segment) in path.iter().enumerate() {
            let next = match segment {
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
        &(**self)[key]
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
    fn strings_with_escapes_compare_decoded() {
        let a = Json::parse(r#""A\u00e9\n""#).unwrap();
        let b = Json::parse("\"Aé\\n\"").unwrap();
        assert_eq!(a, b);
        assert!(a == "Aé\n");
        assert!(a != "Aé");
    }
}
