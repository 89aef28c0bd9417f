"""Dask's side of the dot benchmark: x.dot(x.T) computed into memory."""
import argparse
import time

import dask.array as da


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8000)
    p.add_argument("--chunk", type=int, default=2000)
    args = p.parse_args()
    x = da.random.default_rng(7).random((args.n, args.n), chunks=(args.chunk, args.chunk))
    t0 = time.perf_counter()
    out = x.dot(x.T).compute()
    secs = time.perf_counter() - t0
    assert out.shape == (args.n, args.n)
    print(f"dask: x.dot(x.T) n={args.n} in {secs:.2f} s")
    print(f"RESULT dask_s={secs:.3f}")


if __name__ == "__main__":
    main()
