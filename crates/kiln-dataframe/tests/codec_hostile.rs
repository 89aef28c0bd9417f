//! A partition arriving from a peer is an Arrow IPC stream that kiln decodes before any kernel
//! sees it. A hostile or broken peer can send any bytes: every corruption of a valid stream
//! (bytes flipped, cut short, spliced) must decode to a clear `Malformed` error or to a batch
//! that passes Arrow's full validation, never a panic or a batch whose buffers lie.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::Int32Type;
use kiln_graph::{CodecError, CodecRegistry, Encoded, Value};
use proptest::prelude::*;

fn sample_batch(rows: usize, seed: u64) -> RecordBatch {
    let pick = |i: usize, m: u64| (i as u64).wrapping_mul(6364136223846793005).wrapping_add(seed) % m;
    let ints: Int64Array = (0..rows).map(|i| (pick(i, 7) != 0).then(|| pick(i, 1000) as i64 - 500)).collect();
    let floats: Float64Array = (0..rows)
        .map(|i| (pick(i, 5) != 0).then(|| if pick(i, 11) == 0 { f64::NAN } else { i as f64 * 0.25 }))
        .collect();
    let strings: StringArray =
        (0..rows).map(|i| (pick(i, 9) != 0).then(|| "ab€".repeat(pick(i, 4) as usize))).collect();
    let keys: DictionaryArray<Int32Type> = (0..rows).map(|i| ["x", "yy", "zzz"][pick(i, 3) as usize]).collect();
    let flags: BooleanArray = (0..rows).map(|i| (pick(i, 6) != 0).then(|| pick(i, 2) == 0)).collect();
    let dates: Date32Array = (0..rows).map(|i| Some(16_000 + pick(i, 400) as i32)).collect();
    RecordBatch::try_from_iter([
        ("ints", Arc::new(ints) as ArrayRef),
        ("floats", Arc::new(floats) as ArrayRef),
        ("strings", Arc::new(strings) as ArrayRef),
        ("keys", Arc::new(keys) as ArrayRef),
        ("flags", Arc::new(flags) as ArrayRef),
        ("dates", Arc::new(dates) as ArrayRef),
    ])
    .unwrap()
}

/// One way of damaging a frame.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR these positions (taken modulo the length) with these bytes.
    Flip(Vec<(usize, u8)>),
    /// Keep only this many bytes (modulo the length).
    Cut(usize),
    /// Repeat a stretch of the stream at another place.
    Splice { from: usize, len: usize, at: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..8).prop_map(Damage::Flip),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(from, len, at)| Damage::Splice { from, len, at }),
    ]
}

fn apply(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let n = out.len();
    match damage {
        Damage::Flip(flips) => {
            for &(at, mask) in flips {
                out[at % n] ^= mask;
            }
        }
        Damage::Cut(keep) => out.truncate(keep % n),
        Damage::Splice { from, len, at } => {
            let from = from % n;
            let piece: Vec<u8> = out[from..(from + len).min(n)].to_vec();
            let at = at % n;
            out.splice(at..at, piece);
        }
    }
    out
}

fn decode(codecs: &CodecRegistry, encoded: &Encoded) -> Result<Value, CodecError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codecs.decode(encoded))) {
        Ok(result) => result,
        Err(_) => panic!("decoding a damaged partition panicked"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_partition_is_an_error_or_a_valid_batch(rows in 0usize..200, seed in any::<u64>(), hit in damage()) {
        kiln_dataframe::ensure_registered();
        let codecs = CodecRegistry::global();
        let encoded = codecs.encode(&Value::new(sample_batch(rows, seed))).unwrap();
        prop_assert_eq!(encoded.frames.len(), 1);
        let mut broken = encoded.clone();
        broken.frames[0] = apply(&encoded.frames[0], &hit).into();
        match decode(codecs, &broken) {
            Err(CodecError::Malformed { tag, message }) => {
                prop_assert_eq!(tag, kiln_dataframe::lower::BATCH_CODEC_TAG);
                prop_assert!(!message.is_empty());
            }
            Err(other) => prop_assert!(false, "unexpected error kind: {other:?}"),
            Ok(value) => {
                // The damage may have hit padding or a value: what comes back must hold up.
                let batch = value.downcast_ref::<RecordBatch>().unwrap();
                for column in batch.columns() {
                    prop_assert!(column.to_data().validate_full().is_ok(), "an invalid column decoded: {column:?}");
                }
            }
        }
    }
}

#[test]
fn a_partition_of_any_stream_of_random_bytes_is_an_error() {
    kiln_dataframe::ensure_registered();
    let codecs = CodecRegistry::global();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in [0usize, 1, 4, 8, 9, 64, 1000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let encoded = Encoded {
            tag: kiln_dataframe::lower::BATCH_CODEC_TAG.to_string(),
            header: Vec::new(),
            frames: vec![bytes.into()],
        };
        assert!(matches!(decode(codecs, &encoded), Err(CodecError::Malformed { .. })), "{len} random bytes decoded");
    }
    // No frame at all is malformed too, not an index out of bounds.
    let empty = Encoded { tag: kiln_dataframe::lower::BATCH_CODEC_TAG.to_string(), header: Vec::new(), frames: vec![] };
    assert!(matches!(decode(codecs, &empty), Err(CodecError::Malformed { .. })));
}
