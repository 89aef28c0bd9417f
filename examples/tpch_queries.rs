//! TPC-H Q1, Q6 and Q3 written with kiln's dataframe API, over the normalized Parquet copy that
//! `bench/tpch.py gen` writes (one directory per table). Shared by the `tpch` example and the
//! benchmark binary `bench/src/bin/tpch.rs`, so what is timed is what the example shows.

use kiln_dataframe::arrow::array::RecordBatch;
use kiln_dataframe::arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use kiln_dataframe::{Agg, AggFunc, DataFrame, MergeOptions, read_parquet};
use kiln_graph::{Collection, Scheduler};

/// Any error, reported with its message.
pub type Error = Box<dyn std::error::Error>;

/// A query: the data directory and the scheduler to run on, to its answer.
pub type Query = fn(&str, &dyn Scheduler) -> Result<RecordBatch, Error>;

/// The TPC-H table `name` (a directory of Parquet files) under `data`.
pub fn table(data: &str, name: &str) -> Result<DataFrame, Error> {
    Ok(read_parquet(&format!("{data}/{name}"))?)
}

/// `price * (1 - discount)` as kiln builds it (no scalar-on-the-left operators).
fn disc_price(df: &DataFrame) -> kiln_dataframe::Series {
    df.col("l_extendedprice") * (-&df.col("l_discount") + 1.0)
}

/// Q1, the pricing summary report: a scan, a date filter and a group-by of two keys with eight
/// aggregations.
pub fn q1(data: &str, scheduler: &dyn Scheduler) -> Result<RecordBatch, Error> {
    let li = table(data, "lineitem")?;
    let li = li.filter(&li.col("l_shipdate").le("1998-09-02"))?;
    let price = disc_price(&li);
    let charge = &price * (li.col("l_tax") + 1.0);
    let out = li.groupby(["l_returnflag", "l_linestatus"])?.split_out(1).agg([
        Agg::sum("l_quantity").alias("sum_qty"),
        Agg::sum("l_extendedprice").alias("sum_base_price"),
        Agg::of(AggFunc::Sum, &price).alias("sum_disc_price"),
        Agg::of(AggFunc::Sum, &charge).alias("sum_charge"),
        Agg::mean("l_quantity").alias("avg_qty"),
        Agg::mean("l_extendedprice").alias("avg_price"),
        Agg::mean("l_discount").alias("avg_disc"),
        Agg::size().alias("count_order"),
    ])?;
    // The group-by's answer is sorted by its keys already, as TPC-H orders Q1.
    Ok(out.compute_on(scheduler)?)
}

/// Q6, the forecasting revenue change: four filters and one sum.
pub fn q6(data: &str, scheduler: &dyn Scheduler) -> Result<RecordBatch, Error> {
    let li = table(data, "lineitem")?;
    let mask = li.col("l_shipdate").ge("1994-01-01")
        & li.col("l_shipdate").lt("1995-01-01")
        & li.col("l_discount").between(0.05, 0.07)
        & li.col("l_quantity").lt(24.0);
    let li = li.filter(&mask)?;
    let revenue = li.col("l_extendedprice") * li.col("l_discount");
    let out = li.agg([Agg::of(AggFunc::Sum, &revenue).alias("revenue")])?;
    Ok(out.compute_on(scheduler)?)
}

/// Q3, the shipping priority: two merges, a group-by of three keys and the top 10 by revenue.
pub fn q3(data: &str, scheduler: &dyn Scheduler) -> Result<RecordBatch, Error> {
    let c = table(data, "customer")?;
    let c = c.filter(&c.col("c_mktsegment").eq("BUILDING"))?.select(&["c_custkey"])?;
    let o = table(data, "orders")?;
    let o = o.filter(&o.col("o_orderdate").lt("1995-03-15"))?.select(&[
        "o_orderkey",
        "o_custkey",
        "o_orderdate",
        "o_shippriority",
    ])?;
    let li = table(data, "lineitem")?;
    let li =
        li.filter(&li.col("l_shipdate").gt("1995-03-15"))?.select(&["l_orderkey", "l_extendedprice", "l_discount"])?;
    let co = c.merge(&o, &MergeOptions::left_right(["c_custkey"], ["o_custkey"]))?;
    let j = co.merge(&li, &MergeOptions::left_right(["o_orderkey"], ["l_orderkey"]))?;
    let revenue = disc_price(&j);
    let grouped = j
        .groupby(["l_orderkey", "o_orderdate", "o_shippriority"])?
        .agg([Agg::of(AggFunc::Sum, &revenue).alias("revenue")])?;
    let all = grouped.compute_on(scheduler)?;
    // The top 10 of about 11 000 groups (SF1) on the caller, as Dask's `nlargest` does.
    let revenue = all.column_by_name("revenue").ok_or("no revenue column")?;
    let date = all.column_by_name("o_orderdate").ok_or("no o_orderdate column")?;
    let order = lexsort_to_indices(
        &[
            SortColumn { values: revenue.clone(), options: Some(SortOptions { descending: true, nulls_first: false }) },
            SortColumn { values: date.clone(), options: Some(SortOptions::default()) },
        ],
        Some(10),
    )?;
    let top = take_record_batch(&all, &order)?;
    let columns = ["l_orderkey", "revenue", "o_orderdate", "o_shippriority"];
    let positions = columns.iter().map(|c| top.schema().index_of(c)).collect::<Result<Vec<_>, _>>()?;
    Ok(top.project(&positions)?)
}
