//! String methods (`.str`), `round`, `.dt.date()`, `.dt.floor()` and `drop`, each on 1, 3 and
//! 7 partitions, against the answers pandas 3.1 gives (written below; checked with pandas on
//! `object` columns, whose string methods are Python's `str` methods). Missing values,
//! empty strings and non-ASCII text are in every column.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float32Array, Float64Array, Int8Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray, UInt8Array,
};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampNanosecondType, UInt8Type,
};
use kiln_dataframe::{DataFrame, DataFrameError};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

const PARTITIONS: [usize; 3] = [1, 3, 7];

/// The text column: missing values, an empty string, accents, a German sharp s, Greek with a
/// final sigma, CJK, and whitespace Python strips (U+001C, a no-break space).
const TEXTS: [Option<&str>; 12] = [
    Some("Apple"),
    None,
    Some(""),
    Some("héllo wörld"),
    Some("  straße\t"),
    Some("banana"),
    Some("ÉCOLE"),
    Some("ΟΔΟΣ"),
    Some("an an"),
    None,
    Some("日本語テキスト"),
    Some("\u{1c} mañana \u{a0}"),
];

fn compute(df: &DataFrame) -> RecordBatch {
    df.compute_on(&LocalScheduler::new()).unwrap()
}

/// `s` (the texts in the given string layout) and `id` (the row number).
fn text_batch(layout: &DataType) -> RecordBatch {
    let s: ArrayRef = match layout {
        DataType::Utf8 => Arc::new(StringArray::from(TEXTS.to_vec())),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(TEXTS.to_vec())),
        DataType::Utf8View => Arc::new(StringViewArray::from(TEXTS.to_vec())),
        _ => Arc::new(TEXTS.iter().copied().collect::<DictionaryArray<Int32Type>>()),
    };
    let id: ArrayRef = Arc::new(Int64Array::from_iter_values(0..TEXTS.len() as i64));
    RecordBatch::try_from_iter([("s", s), ("id", id)]).unwrap()
}

fn texts(array: &ArrayRef) -> Vec<Option<String>> {
    array.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
}

fn owned(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

fn bools(array: &ArrayRef) -> Vec<Option<bool>> {
    array.as_boolean().iter().collect()
}

fn ints(array: &ArrayRef) -> Vec<Option<i64>> {
    array.as_primitive::<Int64Type>().iter().collect()
}

/// Every string method of the column `s` as a column of one frame.
fn string_methods(df: &DataFrame) -> DataFrame {
    let s = df.col("s");
    let methods = [
        ("contains", s.str().contains("an")),
        ("contains_empty", s.str().contains("")),
        ("contains_n_tilde", s.str().contains("ñ")),
        ("startswith", s.str().startswith("A")),
        ("endswith", s.str().endswith("e")),
        ("lower", s.str().lower()),
        ("upper", s.str().upper()),
        ("len", s.str().len()),
        ("replace", s.str().replace("an", "AN")),
        ("replace_empty", s.str().replace("", "-")),
        ("strip", s.str().strip()),
    ];
    let mut out = df.clone();
    for (name, series) in methods {
        out = out.assign(name, &series).unwrap();
    }
    out
}

const N: Option<bool> = None;
const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);

/// pandas (`object` dtype, `regex=False`); a missing value gives a missing answer.
fn check_string_methods(label: &str, out: &RecordBatch) {
    let col = |name: &str| out.column_by_name(name).unwrap_or_else(|| panic!("{label}: no column {name}")).clone();
    assert_eq!(bools(&col("contains")), [F, N, F, F, F, T, F, F, T, N, F, T], "{label}");
    assert_eq!(bools(&col("contains_empty")), [T, N, T, T, T, T, T, T, T, N, T, T], "{label}");
    assert_eq!(bools(&col("contains_n_tilde")), [F, N, F, F, F, F, F, F, F, N, F, T], "{label}");
    assert_eq!(bools(&col("startswith")), [T, N, F, F, F, F, F, F, F, N, F, F], "{label}");
    assert_eq!(bools(&col("endswith")), [T, N, F, F, F, F, F, F, F, N, F, F], "{label}");
    let lower = [
        Some("apple"),
        None,
        Some(""),
        Some("héllo wörld"),
        Some("  straße\t"),
        Some("banana"),
        Some("école"),
        // Python writes a word-final sigma as ς (U+03C2).
        Some("οδο\u{3c2}"),
        Some("an an"),
        None,
        Some("日本語テキスト"),
        Some("\u{1c} mañana \u{a0}"),
    ];
    assert_eq!(texts(&col("lower")), owned(&lower), "{label}");
    let upper = [
        Some("APPLE"),
        None,
        Some(""),
        Some("HÉLLO WÖRLD"),
        Some("  STRASSE\t"),
        Some("BANANA"),
        Some("ÉCOLE"),
        Some("ΟΔΟΣ"),
        Some("AN AN"),
        None,
        Some("日本語テキスト"),
        Some("\u{1c} MAÑANA \u{a0}"),
    ];
    assert_eq!(texts(&col("upper")), owned(&upper), "{label}");
    // Characters, not bytes ("héllo wörld" is 13 bytes); pandas' nullable Int64 for
    // `string[pyarrow]`, float64 with NaN for `object`: the same numbers.
    assert_eq!(col("len").data_type(), &DataType::Int64, "{label}");
    assert_eq!(
        ints(&col("len")),
        [Some(5), None, Some(0), Some(11), Some(9), Some(6), Some(5), Some(4), Some(5), None, Some(7), Some(10)],
        "{label}"
    );
    let replaced = [
        Some("Apple"),
        None,
        Some(""),
        Some("héllo wörld"),
        Some("  straße\t"),
        Some("bANANa"),
        Some("ÉCOLE"),
        Some("ΟΔΟΣ"),
        Some("AN AN"),
        None,
        Some("日本語テキスト"),
        Some("\u{1c} mañANa \u{a0}"),
    ];
    assert_eq!(texts(&col("replace")), owned(&replaced), "{label}");
    let replaced_empty = [
        Some("-A-p-p-l-e-"),
        None,
        Some("-"),
        Some("-h-é-l-l-o- -w-ö-r-l-d-"),
        Some("- - -s-t-r-a-ß-e-\t-"),
        Some("-b-a-n-a-n-a-"),
        Some("-É-C-O-L-E-"),
        Some("-Ο-Δ-Ο-Σ-"),
        Some("-a-n- -a-n-"),
        None,
        Some("-日-本-語-テ-キ-ス-ト-"),
        Some("-\u{1c}- -m-a-ñ-a-n-a- -\u{a0}-"),
    ];
    assert_eq!(texts(&col("replace_empty")), owned(&replaced_empty), "{label}");
    let stripped = [
        Some("Apple"),
        None,
        Some(""),
        Some("héllo wörld"),
        Some("straße"),
        Some("banana"),
        Some("ÉCOLE"),
        Some("ΟΔΟΣ"),
        Some("an an"),
        None,
        Some("日本語テキスト"),
        Some("mañana"),
    ];
    assert_eq!(texts(&col("strip")), owned(&stripped), "{label}");
}

#[test]
fn string_methods_follow_pandas_on_every_partitioning() {
    for n in PARTITIONS {
        let df = DataFrame::from_batch(text_batch(&DataType::Utf8), n).unwrap();
        assert_eq!(df.npartitions(), n);
        check_string_methods(&format!("utf8/{n}"), &compute(&string_methods(&df)));
    }
}

#[test]
fn string_methods_read_large_view_and_dictionary_strings() {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    for layout in [DataType::LargeUtf8, DataType::Utf8View, dictionary] {
        for n in [1, 3] {
            let df = DataFrame::from_batch(text_batch(&layout), n).unwrap();
            check_string_methods(&format!("{layout}/{n}"), &compute(&string_methods(&df)));
        }
    }
}

#[test]
fn a_string_mask_filters_and_missing_text_is_dropped() {
    for n in PARTITIONS {
        let df = DataFrame::from_batch(text_batch(&DataType::Utf8), n).unwrap();
        let ids = |mask| {
            let out = compute(&df.filter(&mask).unwrap());
            ints(out.column_by_name("id").unwrap()).into_iter().map(Option::unwrap).collect::<Vec<_>>()
        };
        // pandas: df[df.s.str.contains("an", regex=False).fillna(False)].id
        assert_eq!(ids(df.col("s").str().contains("an")), [5, 8, 11], "{n}");
        // The negation of a missing answer is missing: those rows are dropped both ways.
        assert_eq!(ids(!df.col("s").str().contains("an")), [0, 2, 3, 4, 6, 7, 10], "{n}");
        // Chained: pandas' df[df.s.str.strip().str.len() > 5].id
        assert_eq!(ids(df.col("s").str().strip().str().len().gt(5)), [3, 4, 5, 10, 11], "{n}");
        assert_eq!(ids(df.col("s").str().lower().str().startswith("é")), [6], "{n}");
        // Missing stays missing, so `isna` finds the two missing rows.
        assert_eq!(ids(df.col("s").str().upper().isna()), [1, 9], "{n}");
    }
}

#[test]
fn string_methods_on_other_types_name_the_column() {
    let df = DataFrame::from_batch(text_batch(&DataType::Utf8), 3).unwrap();
    let error = df.col("id").str().lower().check().unwrap_err();
    match &error {
        DataFrameError::TypeMismatch { operation, expression, found, .. } => {
            assert_eq!((operation.as_str(), expression.as_str(), found), (".str.lower", "id", &DataType::Int64));
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    assert!(error.to_string().contains("id"), "{error}");
    assert!(df.assign("n", &df.col("id").str().len()).is_err());
    assert!(df.filter(&df.col("id").str().contains("1")).is_err());
    // `len` gives numbers: string methods on it fail too.
    assert!(df.col("s").str().len().str().upper().check().is_err());
    assert!(matches!(
        df.col("gone").str().strip().check().unwrap_err(),
        DataFrameError::ColumnNotFound { column, .. } if column == "gone"
    ));
}

#[test]
fn string_expressions_survive_serialization() {
    // Plans reach cluster workers as serialized task specs.
    let df = DataFrame::from_batch(text_batch(&DataType::Utf8), 1).unwrap();
    let series =
        [df.col("s").str().contains("an"), df.col("s").str().replace("a", "b"), df.col("s").str().strip().str().len()];
    for s in series {
        let json = serde_json::to_string(s.expr()).unwrap();
        let back: kiln_dataframe::Expr = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, s.expr());
        assert_eq!(back.to_string(), s.expr().to_string());
    }
    assert_eq!(df.col("s").str().replace("a", "b").expr().to_string(), r#"s.str.replace("a", "b")"#);
}

// ---------------------------------------------------------------------------------------------
// Regular expressions (pandas' default `regex=True`)

/// The texts of the regular-expression tests: anchors, digits, accents, CJK, spaces.
const REGEX_TEXTS: [Option<&str>; 12] = [
    Some("Apple pie"),
    None,
    Some("banana split"),
    Some("Cherry"),
    Some(""),
    Some("naïve café"),
    Some("ÉCOLE 42"),
    Some("abc123def"),
    Some("x-y_z"),
    Some("  spaced  "),
    Some("日本語テキスト"),
    Some("aaa"),
];

fn regex_frame(n: usize) -> DataFrame {
    let s: ArrayRef = Arc::new(StringArray::from(REGEX_TEXTS.to_vec()));
    let id: ArrayRef = Arc::new(Int64Array::from_iter_values(0..12));
    DataFrame::from_batch(RecordBatch::try_from_iter([("s", s), ("id", id)]).unwrap(), n).unwrap()
}

/// The regular-expression texts with the rows `changed` replaced.
fn unchanged_except(changed: &[(usize, &str)]) -> Vec<Option<String>> {
    let mut texts = owned(&REGEX_TEXTS);
    for &(i, text) in changed {
        texts[i] = Some(text.to_string());
    }
    texts
}

/// pandas 3.1 (checked with it, on an `object` column so a missing value stays missing):
/// `s.str.contains(pat)` and `s.str.replace(pat, repl)` with the default `regex=True`.
#[test]
fn regex_contains_and_replace_follow_pandas_on_every_partitioning() {
    let contains: [(&str, [Option<bool>; 12]); 7] = [
        ("^[A-Z]", [T, N, F, T, F, F, F, F, F, F, F, F]),
        ("an|rr", [F, N, T, T, F, F, F, F, F, F, F, F]),
        (r"\d+$", [F, N, F, F, F, F, T, F, F, F, F, F]),
        ("é|ï", [F, N, F, F, F, T, F, F, F, F, F, F]),
        // `\w` is Unicode-aware in both: CJK is a word, a space is not.
        (r"^\w+$", [F, N, F, T, F, F, F, T, F, F, T, T]),
        ("", [T, N, T, T, T, T, T, T, T, T, T, T]),
        (r"\bs\w*", [F, N, T, F, F, F, F, F, F, T, F, F]),
    ];
    let replace: Vec<(&str, &str, Vec<Option<String>>)> = vec![
        // Empty matches between all characters, and one in the empty string.
        (
            "",
            "-",
            owned(&[
                Some("-A-p-p-l-e- -p-i-e-"),
                None,
                Some("-b-a-n-a-n-a- -s-p-l-i-t-"),
                Some("-C-h-e-r-r-y-"),
                Some("-"),
                Some("-n-a-ï-v-e- -c-a-f-é-"),
                Some("-É-C-O-L-E- -4-2-"),
                Some("-a-b-c-1-2-3-d-e-f-"),
                Some("-x---y-_-z-"),
                Some("- - -s-p-a-c-e-d- - -"),
                Some("-日-本-語-テ-キ-ス-ト-"),
                Some("-a-a-a-"),
            ]),
        ),
        (
            r"(\w+) (\w+)",
            r"\2 \1",
            unchanged_except(&[(0, "pie Apple"), (2, "split banana"), (5, "café naïve"), (6, "42 ÉCOLE")]),
        ),
        (r"(?P<word>[a-z]+)(\d+)", r"<\g<word>|\2>", unchanged_except(&[(7, "<abc|123>def")])),
        // Python 3.7+ replaces an empty match right after a non-empty one ("aaa" gives "--").
        (
            "a*",
            "-",
            owned(&[
                Some("-A-p-p-l-e- -p-i-e-"),
                None,
                Some("-b--n--n-- -s-p-l-i-t-"),
                Some("-C-h-e-r-r-y-"),
                Some("-"),
                Some("-n--ï-v-e- -c--f-é-"),
                Some("-É-C-O-L-E- -4-2-"),
                Some("--b-c-1-2-3-d-e-f-"),
                Some("-x---y-_-z-"),
                Some("- - -s-p--c-e-d- - -"),
                Some("-日-本-語-テ-キ-ス-ト-"),
                Some("--"),
            ]),
        ),
        // `\\` is one backslash.
        (
            "[aeiou]",
            r"\\",
            owned(&[
                Some(r"Appl\ p\\"),
                None,
                Some(r"b\n\n\ spl\t"),
                Some(r"Ch\rry"),
                Some(""),
                Some(r"n\ïv\ c\fé"),
                Some("ÉCOLE 42"),
                Some(r"\bc123d\f"),
                Some("x-y_z"),
                Some(r"  sp\c\d  "),
                Some("日本語テキスト"),
                Some(r"\\\"),
            ]),
        ),
        // `$` is plain text in Python's templates.
        (
            "a",
            "$1",
            unchanged_except(&[
                (2, "b$1n$1n$1 split"),
                (5, "n$1ïve c$1fé"),
                (7, "$1bc123def"),
                (9, "  sp$1ced  "),
                (11, "$1$1$1"),
            ]),
        ),
        (r"\s+", " ", unchanged_except(&[(9, " spaced ")])),
        // A group that did not take part in the match is empty text.
        ("(é)|(ï)", r"[\1\2]", unchanged_except(&[(5, "na[ï]ve caf[é]")])),
        // Anchors match empty at both ends, once each.
        (
            "^|$",
            "|",
            owned(&[
                Some("|Apple pie|"),
                None,
                Some("|banana split|"),
                Some("|Cherry|"),
                Some("|"),
                Some("|naïve café|"),
                Some("|ÉCOLE 42|"),
                Some("|abc123def|"),
                Some("|x-y_z|"),
                Some("|  spaced  |"),
                Some("|日本語テキスト|"),
                Some("|aaa|"),
            ]),
        ),
        // A flag, the whole match as `\g<0>`, and `\n` as a line break.
        (
            "(?i)e",
            r"\g<0>\n",
            unchanged_except(&[
                (0, "Apple\n pie\n"),
                (3, "Che\nrry"),
                (5, "naïve\n café"),
                (6, "ÉCOLE\n 42"),
                (7, "abc123de\nf"),
                (9, "  space\nd  "),
            ]),
        ),
    ];
    for n in PARTITIONS {
        let df = regex_frame(n);
        let mut out = df.clone();
        for (i, (pat, _)) in contains.iter().enumerate() {
            out = out.assign(&format!("c{i}"), &df.col("s").str().contains_regex(pat)).unwrap();
        }
        for (i, (pat, repl, _)) in replace.iter().enumerate() {
            out = out.assign(&format!("r{i}"), &df.col("s").str().replace_regex(pat, repl)).unwrap();
        }
        let out = compute(&out);
        for (i, (pat, want)) in contains.iter().enumerate() {
            assert_eq!(bools(out.column_by_name(&format!("c{i}")).unwrap()), want, "contains {pat:?} on {n}");
        }
        for (i, (pat, repl, want)) in replace.iter().enumerate() {
            let got = texts(out.column_by_name(&format!("r{i}")).unwrap());
            assert_eq!(&got, want, "replace {pat:?} {repl:?} on {n}");
        }
        // A regex mask filters: pandas' df[df.s.str.contains(r"^\w+$").fillna(False)].id
        let words = compute(&df.filter(&df.col("s").str().contains_regex(r"^\w+$")).unwrap());
        assert_eq!(ints(words.column_by_name("id").unwrap()), [Some(3), Some(7), Some(10), Some(11)], "{n}");
    }
}

#[test]
fn an_invalid_pattern_or_template_is_an_error_naming_column_and_pattern() {
    let df = regex_frame(3);
    for (series, pattern) in [
        (df.col("s").str().contains_regex("(unclosed"), "(unclosed"),
        (df.col("s").str().replace_regex("[z-a]", "x"), "[z-a]"),
        // No backreferences inside a pattern (Python has them; refused, not misread).
        (df.col("s").str().contains_regex(r"(a)\1"), r"(a)\1"),
        // Templates: a group the pattern lacks, an unknown name, a bad escape.
        (df.col("s").str().replace_regex("(a)", r"\2"), r"\2"),
        (df.col("s").str().replace_regex("(a)", r"\g<nope>"), r"\g<nope>"),
        (df.col("s").str().replace_regex("a", r"\q"), r"\q"),
    ] {
        let error = series.check().unwrap_err();
        match &error {
            DataFrameError::InvalidPattern { expression, pattern: p, .. } => {
                assert_eq!((expression.as_str(), p.as_str()), ("s", pattern), "{error}");
            }
            other => panic!("expected an invalid pattern, got {other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains('s') && text.contains(pattern), "{text}");
        // Building the frame fails too, before anything runs.
        assert!(df.assign("x", &series).is_err());
    }
    // The operand's own error comes first.
    assert!(matches!(
        df.col("gone").str().contains_regex("(").check().unwrap_err(),
        DataFrameError::ColumnNotFound { .. }
    ));
    assert!(matches!(
        df.col("id").str().replace_regex("a", "b").check().unwrap_err(),
        DataFrameError::TypeMismatch { .. }
    ));
}

#[test]
fn regex_expressions_survive_serialization() {
    // Task specs carry expressions; running rebuilt specs is `tests/plan.rs`'
    // `every_task_is_portable_and_runs_rebuilt_from_its_spec`.
    let df = regex_frame(1);
    for s in [df.col("s").str().contains_regex("a|b"), df.col("s").str().replace_regex("(a)", r"\1\1")] {
        let back: kiln_dataframe::Expr = serde_json::from_str(&serde_json::to_string(s.expr()).unwrap()).unwrap();
        assert_eq!(&back, s.expr());
    }
    assert_eq!(df.col("s").str().contains_regex("a|b").expr().to_string(), r#"s.str.contains_regex("a|b")"#);
    // A hostile spec with an invalid pattern fails to decode instead of failing later.
    let bad = r#"{"Str":{"expr":{"Column":"s"},"op":{"ContainsRegex":"("}}}"#;
    assert!(serde_json::from_str::<kiln_dataframe::Expr>(bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// round

fn number_batch() -> RecordBatch {
    let f: ArrayRef = Arc::new(Float64Array::from(vec![
        Some(0.5),
        Some(1.5),
        Some(2.5),
        Some(-0.5),
        Some(-2.5),
        Some(0.125),
        Some(1.005),
        Some(2.675),
        Some(f64::NAN),
        None,
        Some(1234.5678),
        Some(-1234.5678),
    ]));
    let i: ArrayRef = Arc::new(Int64Array::from(vec![
        Some(15),
        Some(25),
        Some(35),
        Some(-25),
        Some(-15),
        Some(7),
        None,
        Some(0),
        Some(1),
        Some(5),
        Some(1234),
        Some(-1250),
    ]));
    let f32s: ArrayRef = Arc::new(Float32Array::from(vec![
        Some(0.125),
        Some(1.25),
        Some(2.5),
        Some(-0.05),
        Some(f32::NAN),
        Some(3.16),
        Some(0.5),
        Some(1.5),
        Some(-1.25),
        Some(100.45),
        Some(7.0),
        None,
    ]));
    let u8s: ArrayRef = Arc::new(UInt8Array::from(vec![125, 250, 15, 4, 0, 5, 6, 14, 16, 25, 35, 245]));
    RecordBatch::try_from_iter([("f", f), ("i", i), ("f32", f32s), ("u8", u8s)]).unwrap()
}

/// Float values as bits (so `-0.0` and `0.0` differ, as in pandas' answers), `None` for NaN
/// and for missing, which the separate NaN checks tell apart.
fn float_bits(array: &ArrayRef) -> Vec<Option<u64>> {
    array.as_primitive::<Float64Type>().iter().map(|v| v.filter(|x| !x.is_nan()).map(f64::to_bits)).collect()
}

fn bits(values: &[Option<f64>]) -> Vec<Option<u64>> {
    values.iter().map(|v| v.filter(|x| !x.is_nan()).map(f64::to_bits)).collect()
}

#[test]
fn round_follows_numpy_halves_to_even() {
    for n in PARTITIONS {
        let df = DataFrame::from_batch(number_batch(), n).unwrap();
        let mut out = df.clone();
        for (name, series) in [
            ("f0", df.col("f").round(0)),
            ("f2", df.col("f").round(2)),
            ("f_2", df.col("f").round(-2)),
            ("f400", df.col("f").round(400)),
            ("i1", df.col("i").round(1)),
            ("i_1", df.col("i").round(-1)),
            ("i_2", df.col("i").round(-2)),
            ("i_25", df.col("i").round(-25)),
            ("f32_1", df.col("f32").round(1)),
            ("u8_1", df.col("u8").round(-1)),
        ] {
            out = out.assign(name, &series).unwrap();
        }
        let out = compute(&out);
        let col = |name: &str| out.column_by_name(name).unwrap().clone();
        // pandas: pd.Series([...]).round(d)
        let f0 = [0.0, 2.0, 2.0, -0.0, -2.0, 0.0, 1.0, 3.0, f64::NAN, f64::NAN, 1235.0, -1235.0];
        assert_eq!(float_bits(&col("f0")), bits(&f0.map(Some)), "{n}");
        let f2 = [0.5, 1.5, 2.5, -0.5, -2.5, 0.12, 1.0, 2.68, f64::NAN, f64::NAN, 1234.57, -1234.57];
        assert_eq!(float_bits(&col("f2")), bits(&f2.map(Some)), "{n}");
        let f_2 = [0.0, 0.0, 0.0, -0.0, -0.0, 0.0, 0.0, 0.0, f64::NAN, f64::NAN, 1200.0, -1200.0];
        assert_eq!(float_bits(&col("f_2")), bits(&f_2.map(Some)), "{n}");
        // NaN stays NaN and missing stays missing (pandas shows both as NaN).
        for name in ["f0", "f2", "f_2"] {
            let c = col(name);
            let c = c.as_primitive::<Float64Type>();
            assert!(c.is_valid(8) && c.value(8).is_nan() && c.is_null(9), "{name}/{n}");
        }
        // 10^400 overflows: pandas answers NaN everywhere.
        let f400 = col("f400");
        let f400 = f400.as_primitive::<Float64Type>();
        assert!((0..12).filter(|&r| r != 9).all(|r| f400.value(r).is_nan()) && f400.is_null(9), "{n}");
        let i = |name: &str| ints(&col(name));
        assert_eq!(col("i1").data_type(), &DataType::Int64);
        let original = [Some(15), Some(25), Some(35), Some(-25), Some(-15), Some(7), None, Some(0), Some(1), Some(5)];
        assert_eq!(i("i1")[..10], original, "{n}");
        assert_eq!(
            i("i_1"),
            [
                Some(20),
                Some(20),
                Some(40),
                Some(-20),
                Some(-20),
                Some(10),
                None,
                Some(0),
                Some(0),
                Some(0),
                Some(1230),
                Some(-1250)
            ],
            "{n}"
        );
        assert_eq!(
            i("i_2"),
            [
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                None,
                Some(0),
                Some(0),
                Some(0),
                Some(1200),
                Some(-1200)
            ],
            "{n}"
        );
        assert_eq!(
            i("i_25"),
            [Some(0), Some(0), Some(0), Some(0), Some(0), Some(0), None, Some(0), Some(0), Some(0), Some(0), Some(0)]
        );
        // float32 is rounded in float32: pandas gives 0.10000000149011612 for 0.125.
        let f32s = col("f32_1");
        assert_eq!(f32s.data_type(), &DataType::Float32);
        let got: Vec<Option<u32>> =
            f32s.as_primitive::<Float32Type>().iter().map(|v| v.filter(|x| !x.is_nan()).map(f32::to_bits)).collect();
        let want: Vec<Option<u32>> = [
            Some(0.1f32),
            Some(1.2),
            Some(2.5),
            Some(-0.0),
            None,
            Some(3.2),
            Some(0.5),
            Some(1.5),
            Some(-1.2),
            Some(100.4),
            Some(7.0),
            None,
        ]
        .iter()
        .map(|v| v.map(f32::to_bits))
        .collect();
        assert_eq!(got, want, "{n}");
        let u8s: Vec<u8> = col("u8_1").as_primitive::<UInt8Type>().values().to_vec();
        assert_eq!(u8s, [120, 250, 20, 0, 0, 0, 10, 10, 20, 20, 40, 240], "{n}");
    }
}

#[test]
fn round_rejects_text_and_overflow_fails_the_computation() {
    let df = DataFrame::from_batch(text_batch(&DataType::Utf8), 3).unwrap();
    match df.col("s").round(1).check().unwrap_err() {
        DataFrameError::TypeMismatch { operation, expression, .. } => {
            assert_eq!((operation.as_str(), expression.as_str()), ("round", "s"));
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    // NumPy wraps 127 rounded to tens around to -126; kiln refuses.
    let i8s: ArrayRef = Arc::new(Int8Array::from(vec![120, 127]));
    let df = DataFrame::from_batch(RecordBatch::try_from_iter([("b", i8s)]).unwrap(), 1).unwrap();
    let rounded = df.assign("r", &df.col("b").round(-1)).unwrap();
    let error = rounded.compute_on(&LocalScheduler::new()).unwrap_err();
    assert!(error.to_string().contains("does not fit"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// .dt.date and .dt.floor

/// Nanoseconds: 2024-03-10 13:47:59.5, missing, 1969-12-31 23:59:59, 2024-02-29,
/// 1900-01-01 05:05:05, 2024-03-10, one nanosecond after the epoch, 2262-04-11 23:47:16.
const TIMES_NS: [Option<i64>; 8] = [
    Some(1_710_078_479_500_000_000),
    None,
    Some(-1_000_000_000),
    Some(1_709_164_800_000_000_000),
    Some(-2_208_970_495_000_000_000),
    Some(1_710_028_800_000_000_000),
    Some(1),
    Some(9_223_372_036_000_000_000),
];

/// pandas' `ts.dt.floor(freq).astype("int64")`, `NaT` as `None`.
fn expected_floors() -> Vec<(&'static str, [Option<i64>; 8])> {
    vec![
        (
            "s",
            [
                Some(1710078479000000000),
                None,
                Some(-1000000000),
                Some(1709164800000000000),
                Some(-2208970495000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223372036000000000),
            ],
        ),
        (
            "min",
            [
                Some(1710078420000000000),
                None,
                Some(-60000000000),
                Some(1709164800000000000),
                Some(-2208970500000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223372020000000000),
            ],
        ),
        (
            "h",
            [
                Some(1710075600000000000),
                None,
                Some(-3600000000000),
                Some(1709164800000000000),
                Some(-2208970800000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223369200000000000),
            ],
        ),
        (
            "D",
            [
                Some(1710028800000000000),
                None,
                Some(-86400000000000),
                Some(1709164800000000000),
                Some(-2208988800000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223286400000000000),
            ],
        ),
        (
            "2D",
            [
                Some(1710028800000000000),
                None,
                Some(-172800000000000),
                Some(1709164800000000000),
                Some(-2209075200000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223200000000000000),
            ],
        ),
        (
            "15min",
            [
                Some(1710078300000000000),
                None,
                Some(-900000000000),
                Some(1709164800000000000),
                Some(-2208970800000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223371900000000000),
            ],
        ),
        (
            "90s",
            [
                Some(1710078390000000000),
                None,
                Some(-90000000000),
                Some(1709164800000000000),
                Some(-2208970530000000000),
                Some(1710028800000000000),
                Some(0),
                Some(9223371990000000000),
            ],
        ),
    ]
}

/// pandas' `ts.dt.date`, as days since the epoch.
const DATES: [Option<i32>; 8] =
    [Some(19792), None, Some(-1), Some(19782), Some(-25567), Some(19792), Some(0), Some(106751)];

fn time_batch() -> RecordBatch {
    let ns: ArrayRef = Arc::new(TimestampNanosecondArray::from(TIMES_NS.to_vec()));
    // The same instants in microseconds (the nanosecond after the epoch becomes the epoch).
    let us: ArrayRef = Arc::new(TimestampMicrosecondArray::from(
        TIMES_NS.iter().map(|t| t.map(|t| t.div_euclid(1000))).collect::<Vec<_>>(),
    ));
    RecordBatch::try_from_iter([("ts", ns), ("ts_us", us)]).unwrap()
}

#[test]
fn dt_floor_and_date_follow_pandas() {
    for n in PARTITIONS {
        let df = DataFrame::from_batch(time_batch(), n).unwrap();
        let mut out = df.assign("date", &df.col("ts").dt().date()).unwrap();
        out = out.assign("date_us", &df.col("ts_us").dt().date()).unwrap();
        for (freq, _) in expected_floors() {
            out = out.assign(&format!("ns/{freq}"), &df.col("ts").dt().floor(freq)).unwrap();
            out = out.assign(&format!("us/{freq}"), &df.col("ts_us").dt().floor(freq)).unwrap();
        }
        let out = compute(&out);
        let col = |name: &str| out.column_by_name(name).unwrap().clone();
        for name in ["date", "date_us"] {
            assert_eq!(col(name).data_type(), &DataType::Date32);
            let days: Vec<Option<i32>> = col(name).as_primitive::<Date32Type>().iter().collect();
            assert_eq!(days, DATES, "{name}/{n}");
        }
        for (freq, want) in expected_floors() {
            let ns = col(&format!("ns/{freq}"));
            assert_eq!(ns.data_type(), &DataType::Timestamp(TimeUnit::Nanosecond, None));
            let got: Vec<Option<i64>> = ns.as_primitive::<TimestampNanosecondType>().iter().collect();
            assert_eq!(got, want, "{freq}/{n}");
            // Every frequency is whole seconds: the microsecond floor is the same instant.
            let us = col(&format!("us/{freq}"));
            assert_eq!(us.data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
            let got: Vec<Option<i64>> = us.as_primitive::<TimestampMicrosecondType>().iter().collect();
            let want: Vec<Option<i64>> = want.iter().map(|t| t.map(|t| t / 1000)).collect();
            assert_eq!(got, want, "us {freq}/{n}");
        }
        // A floored timestamp filters like any other: pandas' df[df.ts.dt.floor("D") == "2024-03-10"].
        let same_day = df.filter(&df.col("ts").dt().floor("D").eq("2024-03-10")).unwrap();
        assert_eq!(compute(&same_day).num_rows(), 2, "{n}");
    }
}

#[test]
fn dt_date_of_zoned_timestamps_is_the_local_date() {
    // pandas: pd.Timestamp("2024-03-10T20:00:00Z").tz_convert("+05:00").date() is 2024-03-11.
    let zoned = TimestampNanosecondArray::from(vec![Some(1_710_100_800_000_000_000), None]).with_timezone("+05:00");
    let batch = RecordBatch::try_from_iter([("ts", Arc::new(zoned) as ArrayRef)]).unwrap();
    let df = DataFrame::from_batch(batch, 1).unwrap();
    let out = compute(&df.assign("d", &df.col("ts").dt().date()).unwrap());
    let days: Vec<Option<i32>> = out.column(1).as_primitive::<Date32Type>().iter().collect();
    assert_eq!(days, [Some(19793), None]);
    // Its floor is of local wall time: pandas' floor("D") is 2024-03-11 00:00+05:00.
    let out = compute(&df.assign("f", &df.col("ts").dt().floor("D")).unwrap());
    let floors: Vec<Option<i64>> = out.column(1).as_primitive::<TimestampNanosecondType>().iter().collect();
    assert_eq!(floors, [Some(1_710_097_200_000_000_000), None]);
}

/// UTC instants of the zoned floor tests (2024-03-10 13:47:59.123456789, missing, 1 ns before
/// the epoch, 2024-02-29 23:59:59, the epoch, 2024-12-31 23:59:59.999999999, 2024-03-31
/// 01:00).
const ZONED: [Option<i64>; 7] = [
    Some(1_710_078_479_123_456_789),
    None,
    Some(-1),
    Some(1_709_251_199_000_000_000),
    Some(0),
    Some(1_735_689_599_999_999_999),
    Some(1_711_846_800_000_000_000),
];

/// pandas 3.1 (checked with it):
/// `pd.Series(pd.to_datetime(ZONED, unit="ns", utc=True)).dt.tz_convert(tz).dt.floor(freq)`,
/// as UTC nanoseconds. Zones with 30- and 45-minute offsets floor to other instants than UTC.
#[rustfmt::skip]
fn expected_zoned_floors() -> Vec<(&'static str, &'static str, [Option<i64>; 7])> {
    vec![
        ("+05:30", "h", [Some(1710077400000000000), None, Some(-1800000000000), Some(1709249400000000000), Some(-1800000000000), Some(1735687800000000000), Some(1711845000000000000)]),
        ("+05:30", "15min", [Some(1710078300000000000), None, Some(-900000000000), Some(1709250300000000000), Some(0), Some(1735688700000000000), Some(1711846800000000000)]),
        ("+05:30", "D", [Some(1710009000000000000), None, Some(-19800000000000), Some(1709231400000000000), Some(-19800000000000), Some(1735669800000000000), Some(1711823400000000000)]),
        ("+05:30", "s", [Some(1710078479000000000), None, Some(-1000000000), Some(1709251199000000000), Some(0), Some(1735689599000000000), Some(1711846800000000000)]),
        ("+05:30", "2h", [Some(1710073800000000000), None, Some(-5400000000000), Some(1709245800000000000), Some(-5400000000000), Some(1735684200000000000), Some(1711845000000000000)]),
        ("-03:00", "h", [Some(1710075600000000000), None, Some(-3600000000000), Some(1709247600000000000), Some(0), Some(1735686000000000000), Some(1711846800000000000)]),
        ("-03:00", "15min", [Some(1710078300000000000), None, Some(-900000000000), Some(1709250300000000000), Some(0), Some(1735688700000000000), Some(1711846800000000000)]),
        ("-03:00", "D", [Some(1710039600000000000), None, Some(-75600000000000), Some(1709175600000000000), Some(-75600000000000), Some(1735614000000000000), Some(1711767600000000000)]),
        ("-03:00", "s", [Some(1710078479000000000), None, Some(-1000000000), Some(1709251199000000000), Some(0), Some(1735689599000000000), Some(1711846800000000000)]),
        ("-03:00", "2h", [Some(1710075600000000000), None, Some(-3600000000000), Some(1709247600000000000), Some(-3600000000000), Some(1735686000000000000), Some(1711846800000000000)]),
        ("UTC", "h", [Some(1710075600000000000), None, Some(-3600000000000), Some(1709247600000000000), Some(0), Some(1735686000000000000), Some(1711846800000000000)]),
        ("UTC", "15min", [Some(1710078300000000000), None, Some(-900000000000), Some(1709250300000000000), Some(0), Some(1735688700000000000), Some(1711846800000000000)]),
        ("UTC", "D", [Some(1710028800000000000), None, Some(-86400000000000), Some(1709164800000000000), Some(0), Some(1735603200000000000), Some(1711843200000000000)]),
        ("UTC", "s", [Some(1710078479000000000), None, Some(-1000000000), Some(1709251199000000000), Some(0), Some(1735689599000000000), Some(1711846800000000000)]),
        ("UTC", "2h", [Some(1710072000000000000), None, Some(-7200000000000), Some(1709244000000000000), Some(0), Some(1735682400000000000), Some(1711843200000000000)]),
        ("+05:45", "h", [Some(1710076500000000000), None, Some(-2700000000000), Some(1709248500000000000), Some(-2700000000000), Some(1735686900000000000), Some(1711844100000000000)]),
        ("+05:45", "15min", [Some(1710078300000000000), None, Some(-900000000000), Some(1709250300000000000), Some(0), Some(1735688700000000000), Some(1711846800000000000)]),
        ("+05:45", "D", [Some(1710008100000000000), None, Some(-20700000000000), Some(1709230500000000000), Some(-20700000000000), Some(1735668900000000000), Some(1711822500000000000)]),
        ("+05:45", "s", [Some(1710078479000000000), None, Some(-1000000000), Some(1709251199000000000), Some(0), Some(1735689599000000000), Some(1711846800000000000)]),
        ("+05:45", "2h", [Some(1710072900000000000), None, Some(-6300000000000), Some(1709244900000000000), Some(-6300000000000), Some(1735683300000000000), Some(1711844100000000000)]),
    ]
}

#[test]
fn dt_floor_of_fixed_offset_zones_is_in_local_time_as_pandas() {
    for n in PARTITIONS {
        for (tz, freq, want) in expected_zoned_floors() {
            // Arrow writes "-03:00" also as "-0300": both spellings give the same floor.
            for spelling in [tz.to_string(), tz.replace(':', "")] {
                let ns = TimestampNanosecondArray::from(ZONED.to_vec()).with_timezone(spelling.as_str());
                let us = TimestampMicrosecondArray::from(
                    ZONED.iter().map(|t| t.map(|t| t.div_euclid(1000))).collect::<Vec<_>>(),
                )
                .with_timezone(spelling.as_str());
                let batch =
                    RecordBatch::try_from_iter([("ts", Arc::new(ns) as ArrayRef), ("ts_us", Arc::new(us) as ArrayRef)])
                        .unwrap();
                let df = DataFrame::from_batch(batch, n).unwrap();
                let out = df.assign("f", &df.col("ts").dt().floor(freq)).unwrap();
                let out = compute(&out.assign("f_us", &df.col("ts_us").dt().floor(freq)).unwrap());
                let f = out.column_by_name("f").unwrap();
                // The zone is kept, as pandas keeps it.
                assert_eq!(f.data_type(), &DataType::Timestamp(TimeUnit::Nanosecond, Some(spelling.as_str().into())));
                let got: Vec<Option<i64>> = f.as_primitive::<TimestampNanosecondType>().iter().collect();
                assert_eq!(got, want, "{spelling} {freq} on {n}");
                // Every frequency and offset is whole seconds: the microsecond floor agrees.
                let got: Vec<Option<i64>> =
                    out.column_by_name("f_us").unwrap().as_primitive::<TimestampMicrosecondType>().iter().collect();
                let want: Vec<Option<i64>> = want.iter().map(|t| t.map(|t| t / 1000)).collect();
                assert_eq!(got, want, "us {spelling} {freq} on {n}");
            }
        }
    }
}

#[test]
fn dt_floor_of_a_named_zone_is_an_error_naming_column_and_zone() {
    for zone in ["Europe/Berlin", "Asia/Kolkata", "+25:00", "+05:3"] {
        let ts = TimestampNanosecondArray::from(vec![Some(0)]).with_timezone(zone);
        let batch = RecordBatch::try_from_iter([("when", Arc::new(ts) as ArrayRef)]).unwrap();
        let df = DataFrame::from_batch(batch, 1).unwrap();
        let error = df.col("when").dt().floor("h").check().unwrap_err();
        assert!(matches!(&error, DataFrameError::TypeMismatch { expression, .. } if expression == "when"), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("when") && text.contains(zone), "{text}");
        assert!(df.assign("h", &df.col("when").dt().floor("h")).is_err());
    }
}

#[test]
fn dt_floor_rejects_unknown_frequencies_and_other_types() {
    let df = DataFrame::from_batch(time_batch(), 3).unwrap();
    // pandas: "W" is a non-fixed frequency, "M" is no longer supported, "x" is invalid.
    for freq in ["W", "M", "x", "0h", "", "h2"] {
        match df.col("ts").dt().floor(freq).check().unwrap_err() {
            DataFrameError::UnknownFrequency { operation, rule, .. } => {
                assert_eq!(rule, freq);
                assert!(operation.contains("ts"), "{operation}");
            }
            other => panic!("{freq}: expected an unknown frequency, got {other:?}"),
        }
    }
    let text = DataFrame::from_batch(text_batch(&DataType::Utf8), 1).unwrap();
    for series in [text.col("s").dt().floor("h"), text.col("id").dt().date()] {
        assert!(matches!(series.check(), Err(DataFrameError::TypeMismatch { .. })), "{series:?}");
    }
    assert!(text.col("s").dt().date().check().unwrap_err().to_string().contains(".dt.date"));
}

// ---------------------------------------------------------------------------------------------
// Portability

#[test]
fn the_new_expressions_run_on_a_local_cluster() {
    use kiln_distributed::{LocalCluster, WorkerMode};
    kiln_dataframe::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let local = LocalScheduler::new();

    let text = text_batch(&DataType::Utf8);
    let numbers = number_batch();
    let mut columns: Vec<(&str, ArrayRef)> = vec![("s", text.column(0).clone()), ("id", text.column(1).clone())];
    columns.push(("f", numbers.column_by_name("f").unwrap().clone()));
    let df = DataFrame::from_batch(RecordBatch::try_from_iter(columns).unwrap(), 7).unwrap();
    let s = df.col("s");
    let mut words = df.clone();
    for (name, series) in [
        ("lower", s.str().lower()),
        ("upper", s.str().upper()),
        ("n", s.str().len()),
        ("has_an", s.str().contains("an")),
        ("starts", s.str().startswith("b")),
        ("ends", s.str().endswith("d")),
        ("swapped", s.str().replace("an", "AN")),
        ("trimmed", s.str().strip()),
        ("word", s.str().contains_regex(r"^\w+$")),
        ("vowels", s.str().replace_regex("(?i)([aeiou])", r"<\1>")),
        ("f2", df.col("f").round(2)),
        ("i_1", df.col("id").round(-1)),
    ] {
        words = words.assign(name, &series).unwrap();
    }
    let words = words.filter(&words.col("s").str().strip().str().len().gt(4)).unwrap();
    let remote = words.compute_on(&client).unwrap();
    assert_eq!(remote, words.compute_on(&local).unwrap());
    // pandas: df[df.s.str.strip().str.len() > 4] keeps rows 0, 3, 4, 5, 6, 8, 10, 11.
    assert_eq!(ints(remote.column_by_name("id").unwrap()), [0, 3, 4, 5, 6, 8, 10, 11].map(Some));
    assert_eq!(
        texts(remote.column_by_name("trimmed").unwrap()),
        owned(&["Apple", "héllo wörld", "straße", "banana", "ÉCOLE", "an an", "日本語テキスト", "mañana"].map(Some))
    );
    // pandas: those rows of s.str.contains(r"^\w+$") and s.str.replace("(?i)([aeiou])", r"<\1>").
    assert_eq!(bools(remote.column_by_name("word").unwrap()), [T, F, F, T, T, F, T, F]);
    let vowels =
        ["<A>ppl<e>", "héll<o> wörld", "  str<a>ß<e>\t", "b<a>n<a>n<a>", "ÉC<O>L<E>", "<a>n <a>n", "日本語テキスト"];
    let mut vowels = owned(&vowels.map(Some));
    vowels.push(Some("\u{1c} m<a>ñ<a>n<a> \u{a0}".to_string()));
    assert_eq!(texts(remote.column_by_name("vowels").unwrap()), vowels);
    assert_eq!(
        float_bits(remote.column_by_name("f2").unwrap()),
        bits(&[0.5, -0.5, -2.5, 0.12, 1.0, f64::NAN, 1234.57, -1234.57].map(Some))
    );
    assert_eq!(ints(remote.column_by_name("i_1").unwrap()), [0, 0, 0, 0, 10, 10, 10, 10].map(Some));

    let times = DataFrame::from_batch(time_batch(), 3).unwrap();
    let days = times.filter(&times.col("ts").dt().floor("D").eq("2024-03-10")).unwrap();
    let days = days.assign("hour", &days.col("ts").dt().floor("h")).unwrap();
    let days = days.assign("date", &days.col("ts").dt().date()).unwrap();
    let remote = days.compute_on(&client).unwrap();
    assert_eq!(remote, days.compute_on(&local).unwrap());
    let hours: Vec<Option<i64>> =
        remote.column_by_name("hour").unwrap().as_primitive::<TimestampNanosecondType>().iter().collect();
    assert_eq!(hours, [Some(1_710_075_600_000_000_000), Some(1_710_028_800_000_000_000)]);
    let dates: Vec<Option<i32>> = remote.column_by_name("date").unwrap().as_primitive::<Date32Type>().iter().collect();
    assert_eq!(dates, [Some(19792), Some(19792)]);
}

// ---------------------------------------------------------------------------------------------
// drop

#[test]
fn drop_removes_columns_and_names_a_missing_one() {
    for n in PARTITIONS {
        let df = DataFrame::from_batch(text_batch(&DataType::Utf8), n).unwrap();
        let with_len = df.assign("n", &df.col("s").str().len()).unwrap();
        // pandas: df.assign(n=df.s.str.len()).drop(columns=["s"])
        let dropped = with_len.drop(&["s"]).unwrap();
        assert_eq!(dropped.columns(), ["id", "n"], "{n}");
        let out = compute(&dropped);
        assert_eq!(out.num_columns(), 2);
        assert_eq!(ints(out.column(0)), (0..12).map(Some).collect::<Vec<_>>(), "{n}");
        assert_eq!(
            ints(out.column(1)),
            [Some(5), None, Some(0), Some(11), Some(9), Some(6), Some(5), Some(4), Some(5), None, Some(7), Some(10)],
            "{n}"
        );
        // A series of the frame before the drop still works where its columns survive.
        let kept = dropped.filter(&with_len.col("n").gt(5)).unwrap();
        assert_eq!(ints(compute(&kept).column(0)), [3, 4, 5, 10, 11].map(Some), "{n}");
    }
    let df = DataFrame::from_batch(text_batch(&DataType::Utf8), 3).unwrap();
    // pandas: KeyError "['gone'] not found in axis"; the present column before it is no excuse.
    for names in [&["gone"][..], &["s", "gone"][..]] {
        match df.drop(names).unwrap_err() {
            DataFrameError::ColumnNotFound { column, available } => {
                assert_eq!(column, "gone");
                assert_eq!(available, ["s", "id"]);
            }
            other => panic!("expected a missing column, got {other:?}"),
        }
    }
    assert!(matches!(df.drop(&["s", "id"]), Err(DataFrameError::InvalidArgument(_))));
}
