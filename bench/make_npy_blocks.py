"""Writes the .npy-blocks variant of the seed benchmark's input: every chunk of a Zarr store
(bench/make_zarr_store.py) saved as its own file named by its block indices (0.0.npy, 0.1.npy,
...), the layout kiln's from_npy_blocks reads. Same data as the store. Does nothing when the
directory already holds the full grid."""
import argparse
import os

import numpy as np
import zarr


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--from-zarr", required=True)
    p.add_argument("--path", required=True)
    args = p.parse_args()
    z = zarr.open_array(args.from_zarr, mode="r")
    grid = [-(-s // c) for s, c in zip(z.shape, z.chunks)]
    names = [".".join(map(str, idx)) + ".npy" for idx in np.ndindex(*grid)]
    if os.path.isdir(args.path) and all(os.path.exists(os.path.join(args.path, n)) for n in names):
        print(f"{args.path} exists: grid {grid}")
        return
    os.makedirs(args.path, exist_ok=True)
    for idx, name in zip(np.ndindex(*grid), names):
        region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, z.chunks, z.shape))
        np.save(os.path.join(args.path, name), z[region])
    print(f"wrote {args.path}: grid {grid} from {args.from_zarr}")


if __name__ == "__main__":
    main()
