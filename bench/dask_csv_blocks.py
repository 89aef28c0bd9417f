"""The Dask side of bench/src/bin/csv_blocks.rs: the seeds' group-by,
`df.groupby("origin").dep_delay.mean()`, on one big CSV file read with
`dd.read_csv(blocksize=None)` (one partition) and `dd.read_csv(blocksize=B)` (byte-range
blocks), each with one warm-up and --runs timed runs and its own peak RSS, on the threaded
scheduler. Prints the means (checked by the Rust side) and a RESULT line.

    python dask_csv_blocks.py FILE BLOCKSIZE --runs 3 --threads 2
"""
import argparse

import dask
import dask.dataframe as dd

from dask_common import Side, add_protocol_args, measure, use_threads
from engine_answers import peak_rss_mb


def reset_peak_rss():
    # Linux: writing 5 to clear_refs resets VmHWM, so each way's peak is its own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("blocksize", type=int)
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)
    dask.config.set({"dataframe.convert-string": False})

    def query(blocksize):
        # assume_missing: dep_delay's NA must not fail a block whose sample has none.
        df = dd.read_csv(args.file, blocksize=blocksize, assume_missing=True)
        return df, df.groupby("origin").dep_delay.mean().compute().sort_index()

    fields = []
    means = None
    overall = Side()
    for label, blocksize in [("whole", None), ("blocks", args.blocksize)]:
        reset_peak_rss()
        side, (df, answer) = measure(args.runs, lambda: query(blocksize))
        means = answer if means is None else means
        print(f"dask {label} ({df.npartitions} partitions): {side.summary()}, peak RSS {peak_rss_mb():.0f} MiB")
        fields.append(side.fields(label))
        fields.append(f"{label}_peak_rss_mb={peak_rss_mb():.0f} {label}_npartitions={df.npartitions}")
        if not (answer - means).abs().max() <= 1e-9 * means.abs().max():
            raise SystemExit(f"blocks and whole differ: {answer} vs {means}")
    overall.end()
    fields.extend(f"mean_{k}={v:.12g}" for k, v in means.items())
    print(
        f"RESULT {' '.join(fields)} runs={args.runs} threads={args.threads} load_start={overall.load_start:.2f} "
        f"load_end={overall.load_end:.2f} dask={dask.__version__}"
    )


if __name__ == "__main__":
    main()
