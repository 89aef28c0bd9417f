#!/usr/bin/env python3
"""TPC-H Q1, Q6 and Q3: kiln beside dask.dataframe, polars (lazy) and DuckDB on the same files.

    bench/.venv/bin/python bench/tpch.py gen --sf 1 --dir /tmp/tpch        # raw tpchgen Parquet + normalized copy
    cargo build --release -p kiln-bench --bin tpch && cp target/release/tpch /tmp/kiln-tpch
    bench/.venv/bin/python bench/tpch.py run --sf 1 --dir /tmp/tpch --kiln /tmp/kiln-tpch --runs 3

`gen` runs `tpchgen-cli` (from PyPI, see setup-venv.sh) for lineitem, orders and customer in 8
files per table, then writes one normalized copy (decimal128 -> float64, string_view -> string,
dates stay date32) under DIR/sf{N}/norm, since Dask cannot add tpchgen's decimals. Every engine
reads that copy.

`run` starts each engine in its own process (so its peak RSS is its own), the same number of
runs of each query for each, and prints median and best with the load average before the runs.
It fails loudly when the answers of the engines disagree. It ends with a `RESULT` line.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from engine_answers import loadavg, peak_rss_mb, same_answer

TABLES = ["lineitem", "orders", "customer"]
PARTS = 8
QUERIES = ["q1", "q6", "q3"]


# ---------------------------------------------------------------------------------------------
# Data


def gen(args):
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = os.path.join(args.dir, f"sf{args.sf}")
    raw = os.path.join(base, "raw")
    norm = os.path.join(base, "norm")
    tpchgen = shutil.which("tpchgen-cli") or os.path.join(os.path.dirname(sys.executable), "tpchgen-cli")
    if not os.path.exists(os.path.join(raw, "lineitem")):
        subprocess.run(
            [tpchgen, "parquet", "-s", str(args.sf), "--tables=" + ",".join(TABLES), f"--parts={PARTS}",
             f"--output-dir={raw}"],
            check=True,
        )

    def normal(t):
        if pa.types.is_decimal(t):
            return pa.float64()
        if pa.types.is_string_view(t) or pa.types.is_large_string(t):
            return pa.string()
        return t

    for table in TABLES:
        os.makedirs(os.path.join(norm, table), exist_ok=True)
        for part in range(1, PARTS + 1):
            src = os.path.join(raw, table, f"{table}.{part}.parquet")
            dst = os.path.join(norm, table, f"{table}.{part}.parquet")
            if os.path.exists(dst):
                continue
            t = pq.read_table(src)
            schema = pa.schema([pa.field(f.name, normal(f.type), nullable=True) for f in t.schema])
            pq.write_table(t.cast(schema), dst, row_group_size=256 * 1024)
    print(f"data: {norm}")


# ---------------------------------------------------------------------------------------------
# Python engines; each query returns its answer as a list of rows of plain values.

Q1_DATE = "1998-09-02"  # 1998-12-01 minus 90 days


def dask_queries(norm):
    import dask
    import dask.dataframe as dd
    import pandas as pd

    dask.config.set(scheduler="threads")

    def path(t):
        return os.path.join(norm, t)

    def q1():
        li = dd.read_parquet(path("lineitem"), columns=[
            "l_returnflag", "l_linestatus", "l_quantity", "l_extendedprice", "l_discount", "l_tax", "l_shipdate"])
        li = li[li.l_shipdate <= pd.Timestamp(Q1_DATE).date()]
        li = li.assign(
            disc_price=li.l_extendedprice * (1 - li.l_discount),
        )
        li = li.assign(charge=li.disc_price * (1 + li.l_tax))
        out = li.groupby(["l_returnflag", "l_linestatus"]).agg(
            sum_qty=("l_quantity", "sum"),
            sum_base_price=("l_extendedprice", "sum"),
            sum_disc_price=("disc_price", "sum"),
            sum_charge=("charge", "sum"),
            avg_qty=("l_quantity", "mean"),
            avg_price=("l_extendedprice", "mean"),
            avg_disc=("l_discount", "mean"),
            count_order=("l_quantity", "count"),
        ).compute().reset_index().sort_values(["l_returnflag", "l_linestatus"])
        return out.values.tolist()

    def q6():
        li = dd.read_parquet(path("lineitem"), columns=["l_shipdate", "l_discount", "l_quantity", "l_extendedprice"])
        lo, hi = pd.Timestamp("1994-01-01").date(), pd.Timestamp("1995-01-01").date()
        f = li[(li.l_shipdate >= lo) & (li.l_shipdate < hi) & (li.l_discount >= 0.05) & (li.l_discount <= 0.07)
               & (li.l_quantity < 24)]
        return [[float((f.l_extendedprice * f.l_discount).sum().compute())]]

    def q3():
        day = pd.Timestamp("1995-03-15").date()
        c = dd.read_parquet(path("customer"), columns=["c_custkey", "c_mktsegment"])
        c = c[c.c_mktsegment == "BUILDING"][["c_custkey"]]
        o = dd.read_parquet(path("orders"), columns=["o_orderkey", "o_custkey", "o_orderdate", "o_shippriority"])
        o = o[o.o_orderdate < day]
        li = dd.read_parquet(path("lineitem"), columns=["l_orderkey", "l_extendedprice", "l_discount", "l_shipdate"])
        li = li[li.l_shipdate > day]
        co = c.merge(o, left_on="c_custkey", right_on="o_custkey")
        j = co.merge(li, left_on="o_orderkey", right_on="l_orderkey")
        j = j.assign(revenue=j.l_extendedprice * (1 - j.l_discount))
        g = j.groupby(["l_orderkey", "o_orderdate", "o_shippriority"]).revenue.sum().reset_index()
        top = g.compute().sort_values(["revenue", "o_orderdate"], ascending=[False, True]).head(10)
        return [[int(r.l_orderkey), float(r.revenue), str(r.o_orderdate), int(r.o_shippriority)]
                for r in top.itertuples()]

    return {"q1": q1, "q6": q6, "q3": q3}


def polars_queries(norm):
    import datetime as dt

    import polars as pl

    def scan(t):
        return pl.scan_parquet(os.path.join(norm, t, "*.parquet"))

    def q1():
        out = (
            scan("lineitem")
            .filter(pl.col("l_shipdate") <= dt.date(1998, 9, 2))
            .group_by("l_returnflag", "l_linestatus")
            .agg(
                pl.col("l_quantity").sum().alias("sum_qty"),
                pl.col("l_extendedprice").sum().alias("sum_base_price"),
                (pl.col("l_extendedprice") * (1 - pl.col("l_discount"))).sum().alias("sum_disc_price"),
                (pl.col("l_extendedprice") * (1 - pl.col("l_discount")) * (1 + pl.col("l_tax"))).sum()
                .alias("sum_charge"),
                pl.col("l_quantity").mean().alias("avg_qty"),
                pl.col("l_extendedprice").mean().alias("avg_price"),
                pl.col("l_discount").mean().alias("avg_disc"),
                pl.len().alias("count_order"),
            )
            .sort("l_returnflag", "l_linestatus")
            .collect()
        )
        return [list(r) for r in out.rows()]

    def q6():
        out = (
            scan("lineitem")
            .filter(
                (pl.col("l_shipdate") >= dt.date(1994, 1, 1)) & (pl.col("l_shipdate") < dt.date(1995, 1, 1))
                & pl.col("l_discount").is_between(0.05, 0.07) & (pl.col("l_quantity") < 24)
            )
            .select((pl.col("l_extendedprice") * pl.col("l_discount")).sum().alias("revenue"))
            .collect()
        )
        return [[float(out["revenue"][0])]]

    def q3():
        day = dt.date(1995, 3, 15)
        c = scan("customer").filter(pl.col("c_mktsegment") == "BUILDING")
        o = scan("orders").filter(pl.col("o_orderdate") < day)
        li = scan("lineitem").filter(pl.col("l_shipdate") > day)
        out = (
            c.join(o, left_on="c_custkey", right_on="o_custkey")
            .join(li, left_on="o_orderkey", right_on="l_orderkey")
            .group_by("o_orderkey", "o_orderdate", "o_shippriority")
            .agg((pl.col("l_extendedprice") * (1 - pl.col("l_discount"))).sum().alias("revenue"))
            .sort(["revenue", "o_orderdate"], descending=[True, False])
            .head(10)
            .collect()
        )
        return [[int(r[0]), float(r[3]), str(r[1]), int(r[2])] for r in out.rows()]

    return {"q1": q1, "q6": q6, "q3": q3}


def duckdb_queries(norm):
    import duckdb

    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{os.path.join(norm, t, '*.parquet')}')")

    def q1():
        return [list(r) for r in con.execute(f"""
            SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice),
                   sum(l_extendedprice * (1 - l_discount)), sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)),
                   avg(l_quantity), avg(l_extendedprice), avg(l_discount), count(*)
            FROM lineitem WHERE l_shipdate <= DATE '{Q1_DATE}'
            GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus""").fetchall()]

    def q6():
        return [[float(con.execute("""
            SELECT sum(l_extendedprice * l_discount) FROM lineitem
            WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
              AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24""").fetchone()[0])]]

    def q3():
        rows = con.execute("""
            SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
            FROM customer, orders, lineitem
            WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
              AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
            GROUP BY l_orderkey, o_orderdate, o_shippriority
            ORDER BY revenue DESC, o_orderdate LIMIT 10""").fetchall()
        return [[int(r[0]), float(r[1]), str(r[2]), int(r[3])] for r in rows]

    return {"q1": q1, "q6": q6, "q3": q3}


def engine(args):
    """Runs one Python engine's queries in this process and prints one JSON line."""
    queries = {"dask": dask_queries, "polars": polars_queries, "duckdb": duckdb_queries}[args.engine](args.norm)
    out = {"engine": args.engine, "times": {}, "load": {}, "answers": {}}
    for name in QUERIES:
        out["load"][name] = loadavg()
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            answer = queries[name]()
            times.append(time.perf_counter() - start)
        out["times"][name] = times
        out["answers"][name] = answer
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out, default=str))


# ---------------------------------------------------------------------------------------------
# Driver


def run(args):
    norm = os.path.join(args.dir, f"sf{args.sf}", "norm")
    engines = args.engines.split(",")
    results = {}
    for name in engines:
        if name == "kiln":
            cmd = [args.kiln, "--data", norm, "--runs", str(args.runs)]
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "engine", "--engine", name, "--norm", norm, "--runs",
                   str(args.runs)]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    reference = engines[-1]
    for name in engines:
        for q in QUERIES:
            if not same_answer(results[name]["answers"][q], results[reference]["answers"][q]):
                print(f"ANSWERS DIFFER: {name} {q}:\n  {results[name]['answers'][q]}\n"
                      f"{reference}:\n  {results[reference]['answers'][q]}", file=sys.stderr)
                sys.exit(1)
    print(f"answers agree across {', '.join(engines)} (Q1 {len(results[reference]['answers']['q1'])} rows, "
          f"Q6 revenue {results[reference]['answers']['q6'][0][0]:.2f}, Q3 top order "
          f"{results[reference]['answers']['q3'][0][0]})")

    print(f"SF{args.sf}, {args.runs} runs each; median / best seconds (load average before the runs)")
    print(f"{'engine':8} " + " ".join(f"{q:>24}" for q in QUERIES) + f" {'peak RSS':>10}")
    fields = []
    for name in engines:
        r = results[name]
        cells = []
        for q in QUERIES:
            t = r["times"][q]
            med, best = statistics.median(t), min(t)
            cells.append(f"{med:7.3f} / {best:7.3f} ({r['load'][q]:4.1f})")
            fields.append(f"{name}_{q}_median_s={med:.3f}")
            fields.append(f"{name}_{q}_best_s={best:.3f}")
        fields.append(f"{name}_peak_rss_mb={r['peak_rss_mb']:.0f}")
        print(f"{name:8} " + " ".join(f"{c:>24}" for c in cells) + f" {r['peak_rss_mb']:8.0f}MB")
    if "kiln" in results:
        for q in QUERIES:
            kiln = statistics.median(results["kiln"]["times"][q])
            fast = [statistics.median(results[e]["times"][q]) for e in ("polars", "duckdb") if e in results]
            if fast:
                fields.append(f"kiln_{q}_vs_fastest={kiln / min(fast):.2f}")
            if "dask" in results:
                fields.append(f"dask_over_kiln_{q}={statistics.median(results['dask']['times'][q]) / kiln:.2f}")
    print(f"RESULT name=tpch sf={args.sf} runs={args.runs} " + " ".join(fields))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--sf", type=int, default=1)
    g.add_argument("--dir", default="/tmp/tpch")
    r = sub.add_parser("run")
    r.add_argument("--sf", type=int, default=1)
    r.add_argument("--dir", default="/tmp/tpch")
    r.add_argument("--kiln", default="/tmp/kiln-tpch", help="the kiln-bench `tpch` binary")
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--engines", default="kiln,dask,polars,duckdb")
    e = sub.add_parser("engine")
    e.add_argument("--engine", required=True)
    e.add_argument("--norm", required=True)
    e.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    {"gen": gen, "run": run, "engine": engine}[args.cmd](args)


if __name__ == "__main__":
    main()
