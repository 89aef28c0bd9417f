//! Arrays to frames and back (Dask's `dd.from_dask_array` and `to_dask_array`). The oracle is
//! NumPy/pandas' `pd.DataFrame(a, columns=...)` and `df.to_numpy()`: the frame's column `j` is
//! the array's column `j`, element for element, typed as the elements; a frame's array is its
//! rows in order, missing floats as NaN. Every law is checked over several chunkings, which
//! must not change the answer.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
use kiln_array::Array;
use kiln_dataframe::{DataFrame, DataFrameError, Divisions, Scalar};
use kiln_distributed::{LocalCluster, WorkerMode};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

fn matrix(rows: usize, cols: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| (i[0] * 10 + i[1]) as f64 + 0.25)
}

fn floats(batch: &RecordBatch, j: usize) -> Vec<f64> {
    batch.column(j).as_primitive::<Float64Type>().values().to_vec()
}

#[test]
fn a_2d_array_becomes_one_column_per_array_column_and_one_partition_per_row_block() {
    let local = LocalScheduler::new();
    let data = matrix(11, 3);
    for (row_chunk, col_chunk) in [(11, 3), (4, 3), (2, 1), (1, 2)] {
        let x = kiln_array::from_array(data.clone(), vec![row_chunk, col_chunk]);
        let df = DataFrame::from_array(&x, &["a", "b", "c"]).unwrap();
        assert_eq!(df.npartitions(), 11usize.div_ceil(row_chunk));
        assert_eq!(df.columns(), ["a", "b", "c"]);
        assert_eq!(df.divisions(), &Divisions::Unknown);
        let out = df.compute_on(&local).unwrap();
        assert_eq!(out.num_rows(), 11);
        for j in 0..3 {
            assert_eq!(out.schema().field(j).data_type(), &DataType::Float64);
            let want: Vec<f64> = data.index_axis(ndarray::Axis(1), j).iter().copied().collect();
            assert_eq!(floats(&out, j), want, "column {j} with chunks ({row_chunk}, {col_chunk})");
        }
        // A frame operation over it: pandas' df[df.a > 50].c.sum().
        let big = df.filter(&df.col("a").gt(50.0)).unwrap();
        let want: f64 = (0..11).filter(|&i| data[[i, 0]] > 50.0).map(|i| data[[i, 2]]).sum();
        assert_eq!(big.col("c").sum().compute_on(&local).unwrap(), Scalar::Float(want));
    }
}

#[test]
fn every_element_type_keeps_its_type_and_nan_stays_nan() {
    let local = LocalScheduler::new();
    let ints = kiln_array::arange::<i64>(0.0, 7.0, 1.0, 3);
    let out = DataFrame::from_array(&ints, &["i"]).unwrap().compute_on(&local).unwrap();
    assert_eq!(out.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![0, 1, 2, 3, 4, 5, 6]);

    let small = kiln_array::from_array(ArrayD::from_shape_vec(IxDyn(&[4]), vec![3i32, -1, 7, 0]).unwrap(), 3);
    let out = DataFrame::from_array(&small, &["s"]).unwrap().compute_on(&local).unwrap();
    assert_eq!(out.column(0).as_primitive::<Int32Type>().values().to_vec(), vec![3, -1, 7, 0]);

    let single = kiln_array::from_array(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![1.5f32, -2.0]).unwrap(), 1);
    let out = DataFrame::from_array(&single, &["f"]).unwrap().compute_on(&local).unwrap();
    assert_eq!(out.column(0).as_primitive::<Float32Type>().values().to_vec(), vec![1.5, -2.0]);

    let flags = kiln_array::from_array(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap(), 2);
    let out = DataFrame::from_array(&flags, &["b"]).unwrap().compute_on(&local).unwrap();
    assert_eq!(out.column(0).as_boolean(), &BooleanArray::from(vec![true, false, true]));

    // pandas: pd.DataFrame(np.array([1.0, np.nan, 3.0]), columns=["x"]).x.mean() == 2.0 and
    // .isna().sum() == 1: NaN counts as missing.
    let with_nan = kiln_array::from_array(ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, f64::NAN, 3.0]).unwrap(), 2);
    let df = DataFrame::from_array(&with_nan, &["x"]).unwrap();
    assert_eq!(df.col("x").mean().compute_on(&local).unwrap(), Scalar::Float(2.0));
    assert_eq!(df.col("x").count().compute_on(&local).unwrap(), Scalar::Int(2));
    assert!(df.compute_on(&local).unwrap().column(0).as_primitive::<Float64Type>().value(1).is_nan());
}

#[test]
fn a_computed_array_expression_becomes_a_frame() {
    let local = LocalScheduler::new();
    let x = kiln_array::random::RandomState::new(7).random(&[40, 4], vec![9, 2]);
    let centered = &x - &x.mean_axis(0);
    let want = centered.compute_on(&local).unwrap();
    let df = DataFrame::from_array(&centered, &["p", "q", "r", "s"]).unwrap();
    assert_eq!(df.npartitions(), 5);
    let out = df.compute_on(&local).unwrap();
    for j in 0..4 {
        let column: Vec<f64> = want.index_axis(ndarray::Axis(1), j).iter().copied().collect();
        assert_eq!(floats(&out, j), column);
    }
}

#[test]
fn the_row_index_has_known_divisions_and_loc_reads_positions() {
    let local = LocalScheduler::new();
    let x = kiln_array::from_array(matrix(10, 2), vec![4, 2]);
    let df = DataFrame::from_array_with_index(&x, &["a", "b"], "row").unwrap();
    assert_eq!(df.columns(), ["row", "a", "b"]);
    assert_eq!(df.divisions(), &Divisions::Known(vec![Scalar::Int(0), Scalar::Int(4), Scalar::Int(8), Scalar::Int(9)]));
    let out = df.compute_on(&local).unwrap();
    assert_eq!(out.column(0).as_primitive::<Int64Type>().values().to_vec(), (0..10).collect::<Vec<i64>>());
    // pandas: df.loc[5:8] is rows 5..=8.
    let slice = df.loc(Some(Scalar::Int(5)), Some(Scalar::Int(8))).unwrap();
    assert_eq!(slice.npartitions(), 2, "only the partitions holding rows 5 to 8");
    let rows = slice.compute_on(&local).unwrap();
    assert_eq!(floats(&rows, 1), vec![50.25, 60.25, 70.25, 80.25]);
}

#[test]
fn wrong_shapes_and_names_are_clear_errors() {
    let cube = kiln_array::ones::<f64>(&[2, 2, 2], 1);
    let err = DataFrame::from_array(&cube, &["a", "b"]).unwrap_err();
    assert!(err.to_string().contains("1-d or 2-d"), "{err}");
    let x = kiln_array::ones::<f64>(&[4, 3], 2);
    let err = DataFrame::from_array(&x, &["a", "b"]).unwrap_err();
    assert!(err.to_string().contains("3 columns but 2 names"), "{err}");
    let err = DataFrame::from_array(&x, &["a", "b", "a"]).unwrap_err();
    assert!(err.to_string().contains("\"a\" is given twice"), "{err}");
    let err = DataFrame::from_array_with_index(&x, &["a", "b", "c"], "b").unwrap_err();
    assert!(err.to_string().contains("\"b\" is given twice"), "{err}");
    let invalid = &kiln_array::ones::<f64>(&[4], 2) + &kiln_array::ones::<f64>(&[5], 2);
    let err = DataFrame::from_array(&invalid, &["a"]).unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
}

/// A scheduler that refuses to run anything: what must not compute, does not.
struct Refuses;

impl kiln_graph::Scheduler for Refuses {
    fn compute(
        &self,
        _graph: &kiln_graph::Graph,
        _outputs: &[kiln_graph::TaskId],
    ) -> Result<Vec<kiln_graph::Value>, kiln_graph::ComputeError> {
        Err(kiln_graph::ComputeError::Internal("this computation should not have run".into()))
    }
    fn name(&self) -> String {
        "refuses".into()
    }
}

#[test]
fn lengths_the_plan_knows_are_not_computed() {
    let local = LocalScheduler::new();
    let x = kiln_array::from_array(matrix(10, 3), vec![4, 2]);
    let df = DataFrame::from_array(&x, &["a", "b", "c"]).unwrap();
    // Columns computed and dropped keep every row: the array's chunks are the lengths.
    let derived = df.assign("d", &(&df.col("a") * 2.0)).unwrap().select(&["d", "c"]).unwrap();
    let y = derived.to_array::<f64>(&Refuses).unwrap();
    assert_eq!(y.chunks()[0], vec![4, 4, 2]);
    let got = y.compute_on(&local).unwrap();
    assert_eq!(got[[9, 0]], 2.0 * 90.25);
    assert_eq!(got[[9, 1]], 92.25);
    let batches = mixed_frame(3);
    assert_eq!(batches.col("i").to_array::<i64>(&Refuses).unwrap().chunks()[0], vec![2, 2, 3]);
    // A filter changes them: they are computed, on the scheduler given.
    let filtered = df.filter(&df.col("a").gt(35.0)).unwrap();
    let err = filtered.to_array::<f64>(&Refuses).unwrap_err().to_string();
    assert!(err.contains("should not have run"), "{err}");
    assert_eq!(filtered.to_array::<f64>(&local).unwrap().chunks()[0], vec![4, 2], "the first partition is left empty");
}

fn mixed_frame(npartitions: usize) -> DataFrame {
    let batch = RecordBatch::try_from_iter([
        ("i", Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6, 7])) as _),
        (
            "f",
            Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.5), Some(f64::NAN), None, Some(-1.0), Some(9.0)]))
                as _,
        ),
        ("n", Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4), Some(5), Some(6), Some(7)])) as _),
        ("b", Arc::new(BooleanArray::from(vec![true, false, true, true, false, false, true])) as _),
    ])
    .unwrap();
    DataFrame::from_batch(batch, npartitions).unwrap()
}

#[test]
fn a_frame_becomes_a_2d_array_with_missing_values_as_nan() {
    let local = LocalScheduler::new();
    // pandas: df.to_numpy(dtype="float64", na_value=np.nan) row by row.
    let want = [
        [1.0, 0.5, 1.0, 1.0],
        [2.0, f64::NAN, 2.0, 0.0],
        [3.0, 2.5, f64::NAN, 1.0],
        [4.0, f64::NAN, 4.0, 1.0],
        [5.0, f64::NAN, 5.0, 0.0],
        [6.0, -1.0, 6.0, 0.0],
        [7.0, 9.0, 7.0, 1.0],
    ];
    for npartitions in [1, 3, 7] {
        let df = mixed_frame(npartitions);
        let x = df.to_array::<f64>(&local).unwrap();
        assert_eq!(x.shape(), &[7, 4]);
        assert_eq!(x.chunks()[0].len(), npartitions);
        let got = x.compute_on(&local).unwrap();
        for (i, row) in want.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let g = got[[i, j]];
                assert!(g == w || (g.is_nan() && w.is_nan()), "[{i}, {j}] {g} vs {w} on {npartitions} partitions");
            }
        }
        // Array operations go on from there: the column sums, NaN propagating as in NumPy.
        let sums = x.sum_axis(0).compute_on(&local).unwrap();
        assert_eq!(sums[[0]], 28.0);
        assert!(sums[[1]].is_nan());
        assert_eq!(sums[[3]], 4.0);
    }
}

#[test]
fn a_filtered_series_becomes_a_1d_array_of_the_rows_left() {
    let local = LocalScheduler::new();
    for npartitions in [1, 3, 7] {
        let df = mixed_frame(npartitions);
        let odd = df.filter(&(&df.col("i") % 2i64).eq(1i64)).unwrap();
        let x = odd.col("i").to_array::<i64>(&local).unwrap();
        assert_eq!(x.shape(), &[4]);
        assert_eq!(x.compute_on(&local).unwrap().iter().copied().collect::<Vec<i64>>(), vec![1, 3, 5, 7]);
        // Integers to float32, as astype does.
        let y = df.col("i").to_array::<f32>(&local).unwrap();
        assert_eq!(y.sum().scalar().compute_on(&local).unwrap(), 28.0);
        let flags = df.col("b").to_array::<bool>(&local).unwrap();
        assert_eq!(flags.compute_on(&local).unwrap().iter().filter(|&&b| b).count(), 4);
    }
}

#[test]
fn what_an_array_cannot_hold_is_a_clear_error() {
    let local = LocalScheduler::new();
    let df = mixed_frame(3);
    // A missing value in an integer array: pandas' to_numpy(dtype="int64") raises too.
    let ints = df.col("n").to_array::<i64>(&local).unwrap();
    let err = ints.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("column \"n\" has missing values in partition 1"), "{err}");
    // Filled first, as pandas needs too, it converts.
    let filled = df.col("n").fillna(0i64).to_array::<i64>(&local).unwrap().compute_on(&local).unwrap();
    assert_eq!(filled.iter().copied().collect::<Vec<i64>>(), vec![1, 2, 0, 4, 5, 6, 7]);
    // Floats to integers truncate, as astype does: [0.5, 2.5, -1.0, 9.0] -> [0, 2, -1, 9].
    let present = df.filter(&df.col("f").notna()).unwrap();
    let truncated = present.col("f").to_array::<i64>(&local).unwrap().compute_on(&local).unwrap();
    assert_eq!(truncated.iter().copied().collect::<Vec<i64>>(), vec![0, 2, -1, 9]);
    // NaN as an integer is refused, never a silent garbage value.
    let nan = RecordBatch::try_from_iter([("g", Arc::new(Float64Array::from(vec![1.0, f64::NAN])) as _)]).unwrap();
    let nan = DataFrame::from_batch(nan, 1).unwrap();
    let err = nan.to_array::<i64>(&local).unwrap().compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("column \"g\" in partition 0"), "{err}");

    let text = RecordBatch::try_from_iter([
        ("x", Arc::new(Int64Array::from(vec![1, 2])) as _),
        ("name", Arc::new(StringArray::from(vec!["a", "b"])) as _),
    ])
    .unwrap();
    let err = DataFrame::from_batch(text, 1).unwrap().to_array::<f64>(&local).unwrap_err();
    assert!(matches!(&err, DataFrameError::TypeMismatch { expression, .. } if expression == "name"), "{err}");

    let err = df.to_array_with_lengths::<f64>(&[7]).unwrap_err().to_string();
    assert!(err.contains("1 lengths given for a frame of 3 partitions"), "{err}");
    // Lengths that are wrong fail the partition's task, naming it.
    let wrong = df.to_array_with_lengths::<f64>(&[3, 2, 2]).unwrap();
    let err = wrong.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("partition 0 has 2 rows, but the array was built for 3"), "{err}");
    // A partition wrongly said to be empty has no block, but its rows are not lost silently.
    let wrong = df.to_array_with_lengths::<f64>(&[2, 0, 3]).unwrap();
    assert_eq!(wrong.shape(), &[5, 4]);
    let err = wrong.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("partition 1 has 2 rows, but the array was built for 0"), "{err}");
    // Every partition empty: an array of no rows.
    let none = df.filter(&df.col("i").gt(100i64)).unwrap().to_array::<f64>(&local).unwrap();
    assert_eq!(none.shape(), &[0, 4]);
    assert_eq!(none.compute_on(&local).unwrap().len(), 0);
}

#[test]
fn frames_and_arrays_convert_on_a_local_cluster() {
    kiln_dataframe::ensure_registered();
    kiln_array::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let local = LocalScheduler::new();
    let x = kiln_array::from_array(matrix(9, 2), vec![2, 2]);
    let df = DataFrame::from_array_with_index(&x, &["a", "b"], "row").unwrap();
    assert_eq!(df.compute_on(&client).unwrap(), df.compute_on(&local).unwrap());
    let back = df.select(&["a", "b"]).unwrap().to_array::<f64>(&client).unwrap();
    assert_eq!(back.compute_on(&client).unwrap(), matrix(9, 2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Any chunking of the array, any partitioning back: the round trip is the identity.
    #[test]
    fn from_array_then_to_array_is_the_identity(
        rows in 0usize..40,
        cols in 1usize..4,
        row_chunk in 1usize..9,
        col_chunk in 1usize..4,
        seed in any::<u64>(),
    ) {
        let local = LocalScheduler::new();
        let data = ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| {
            let h = (seed ^ (i[0] as u64 * 31 + i[1] as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            if h.is_multiple_of(11) { f64::NAN } else { (h >> 40) as f64 / 7.0 }
        });
        let x: Array<f64> = kiln_array::from_array(data.clone(), vec![row_chunk, col_chunk]);
        let names: Vec<String> = (0..cols).map(|j| format!("c{j}")).collect();
        let df = DataFrame::from_array(&x, &names).unwrap();
        let back = df.to_array::<f64>(&local).unwrap();
        prop_assert_eq!(back.shape(), data.shape());
        let got = back.compute_on(&local).unwrap();
        for (g, w) in got.iter().zip(data.iter()) {
            prop_assert!(g == w || (g.is_nan() && w.is_nan()));
        }
    }
}
