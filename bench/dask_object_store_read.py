"""Dask's side of the object-store read benchmark: reads a whole Zarr array (da.from_zarr(...).sum())
or a whole Parquet data set (dd.read_parquet(...).sum(), every column) from --source, a local
path, an s3:// URL served by the S3-compatible server at --endpoint (through s3fs, with the
server's test credentials, --key/--secret), or an http:// URL (through fsspec's HTTPFileSystem,
which lists a directory from the server's index page: nginx's autoindex); threaded scheduler, timed from opening to the value; one
warm-up, then --runs timed runs (bench/dask_common.py). One source a process, so that the peak
RSS is that source's."""
import argparse
import resource

import dask.array as da
import dask.dataframe as dd

from dask_common import add_protocol_args, measure, result_line, use_threads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--format", choices=["zarr", "parquet"], required=True)
    p.add_argument("--source", required=True, help="a local path, an s3:// or an http:// URL")
    p.add_argument("--endpoint", help="the S3-compatible server, for s3:// sources")
    p.add_argument("--key", default="testing", help="the server's access key (moto's by default)")
    p.add_argument("--secret", default="testing", help="the server's secret key")
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)
    options = None
    if args.source.startswith("s3://"):
        options = {
            "endpoint_url": args.endpoint,
            "key": args.key,
            "secret": args.secret,
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def work():
        if args.format == "zarr":
            x = da.from_zarr(args.source, storage_options=options)
            return float(x.sum().compute())
        frame = dd.read_parquet(args.source, storage_options=options)
        return float(frame.sum().compute().sum())

    side, value = measure(args.runs, work)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"dask: {args.format} from {args.source}: sum={value:.6f}: {side.summary()}")
    print(result_line(f"{side.fields()} peak_rss_bytes={rss} sum={value:.12f}", side, args.threads, args.runs))


if __name__ == "__main__":
    main()
