"""Dask's side of the dot benchmark: x.dot(x.T) computed into memory on the threaded scheduler;
one warm-up, then --runs timed runs (bench/dask_common.py)."""
import argparse

import dask.array as da

from dask_common import add_protocol_args, measure, result_line, use_threads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8000)
    p.add_argument("--chunk", type=int, default=2000)
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)
    x = da.random.default_rng(7).random((args.n, args.n), chunks=(args.chunk, args.chunk))

    def work():
        out = x.dot(x.T).compute()
        assert out.shape == (args.n, args.n)
        # The diagonal is the squared row norms: a cheap check that the product is a product.
        return float(out.trace())

    side, trace = measure(args.runs, work)
    print(f"dask: x.dot(x.T) n={args.n}: {side.summary()}")
    print(result_line(f"n={args.n} {side.fields()} trace={trace:.6e}", side, args.threads, args.runs))


if __name__ == "__main__":
    main()
