"""Writes the object-store benchmark's table: --files Parquet files of --rows rows each, four
float64 columns a, b, c, d of uniform [0, 1) numbers (pyarrow's defaults: snappy, row groups of
1 Mi rows, 1 MiB pages), one file at a time so that writing needs little memory. Random doubles
barely compress, so the files hold about 32 bytes a row. Does nothing when the directory already
holds the asked files."""
import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", required=True)
    p.add_argument("--files", type=int, default=64)
    p.add_argument("--rows", type=int, default=2_000_000)
    args = p.parse_args()
    os.makedirs(args.path, exist_ok=True)
    names = [f"part-{i:04d}.parquet" for i in range(args.files)]
    existing = sorted(f for f in os.listdir(args.path) if f.endswith(".parquet"))
    if existing == names and all(pq.ParquetFile(os.path.join(args.path, n)).metadata.num_rows == args.rows for n in names):
        print(f"dataset {args.path} exists: {args.files} files of {args.rows} rows")
        return
    if existing:
        raise SystemExit(f"{args.path} holds another dataset ({len(existing)} files); remove it first")
    rng = np.random.default_rng(11)
    total = 0
    for name in names:
        table = pa.table({c: rng.random(args.rows) for c in "abcd"})
        out = os.path.join(args.path, name)
        pq.write_table(table, out)
        total += os.path.getsize(out)
    print(f"wrote {args.path}: {args.files} files x {args.rows} rows x 4 f64, {total / 1e9:.2f} GB on disk")


if __name__ == "__main__":
    main()
