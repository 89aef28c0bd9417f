//! String methods (`.str`), `round`, `.dt.date()`, `.dt.floor()` and `drop`, each on 1, 3 and
//! 7 partitions, against the answers pandas 3.1 gives (written below; checked with pandas on
//! `object` columns, whose string methods are Python's `str` methods). Missing values,
//! empty strings and non-ASCII text are in every column.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
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
