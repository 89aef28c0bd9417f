"""Writes the HDF5 variant of the seed benchmark's input: the Zarr store's array
(bench/make_zarr_store.py) as dataset "x" of an HDF5 file, written by h5py with its defaults
(uncompressed) in chunks the size of the store's. Same data as the store. Does nothing when the
file already holds a dataset "x" of the right shape."""
import argparse
import os

import h5py
import zarr


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--from-zarr", required=True)
    p.add_argument("--path", required=True)
    args = p.parse_args()
    z = zarr.open_array(args.from_zarr, mode="r")
    if os.path.exists(args.path):
        with h5py.File(args.path, "r") as f:
            if "x" in f and f["x"].shape == z.shape:
                print(f"{args.path} exists: {f['x'].shape} in chunks {f['x'].chunks}")
                return
    tmp = args.path + ".partial"
    with h5py.File(tmp, "w") as f:
        x = f.create_dataset("x", shape=z.shape, dtype=z.dtype, chunks=z.chunks)
        step = z.chunks[0]
        for start in range(0, z.shape[0], step):
            x[start : start + step] = z[start : start + step]
    os.replace(tmp, args.path)
    print(f"wrote {args.path}: {z.shape} in chunks {z.chunks} from {args.from_zarr}")


if __name__ == "__main__":
    main()
