"""Dask's side of the stored-data seed benchmark: (x + x.T - x.mean(axis=0)).std() with
x = da.from_zarr(store), or with --npy a directory of .npy blocks (i.j.npy) assembled with
da.block over delayed np.load, or with --hdf5 da.from_array over an h5py dataset (its chunks,
Dask's default lock); threaded scheduler, timed from opening the store to the value;
one warm-up, then --runs timed runs (bench/dask_common.py)."""
import argparse
import os
import resource

import dask
import dask.array as da
import numpy as np

from dask_common import add_protocol_args, measure, result_line, use_threads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", required=True)
    p.add_argument("--npy", action="store_true", help="--path is a directory of .npy blocks")
    p.add_argument("--hdf5", action="store_true", help="--path is an HDF5 file with dataset x")
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)

    def open_blocks():
        names = [f[:-4].split(".") for f in os.listdir(args.path) if f.endswith(".npy")]
        grid = [max(int(n[a]) for n in names) + 1 for a in range(2)]
        rows = []
        for i in range(grid[0]):
            row = []
            for j in range(grid[1]):
                f = os.path.join(args.path, f"{i}.{j}.npy")
                shape = np.load(f, mmap_mode="r").shape
                row.append(da.from_delayed(dask.delayed(np.load)(f), shape=shape, dtype="f8"))
            rows.append(row)
        return da.block(rows)

    def open_hdf5():
        import h5py

        dset = h5py.File(args.path, "r")["x"]
        return da.from_array(dset, chunks=dset.chunks)

    def work():
        x = open_blocks() if args.npy else open_hdf5() if args.hdf5 else da.from_zarr(args.path)
        return float((x + x.T - x.mean(axis=0)).std().compute()), x.shape[0]

    side, (value, n) = measure(args.runs, work)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kind = "npy blocks" if args.npy else "from_array(h5py)" if args.hdf5 else "from_zarr"
    print(f"dask: {kind} n={n} std={value:.6f}: {side.summary()}")
    print(result_line(f"n={n} {side.fields()} peak_rss_bytes={rss} std={value:.12f}", side, args.threads, args.runs))


if __name__ == "__main__":
    main()
