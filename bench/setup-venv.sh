#!/usr/bin/env bash
# Creates bench/.venv with Dask (and NumPy) for the side-by-side benchmarks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --upgrade pip
# Pinned, so figures in RESULTS.md can be reproduced against the same Dask.
"$here/.venv/bin/pip" install --quiet "dask[array,distributed]==2026.8.0" "numpy==2.4.6" "zarr==3.1.6" "h5py==3.16.0" \
  "bokeh==3.9.2"  # the dashboard dask_dashboard_overhead.py opens
# The dataframe peers of the TPC-H benchmark (tpch.py): Dask's dataframe, polars, DuckDB, and
# tpchgen-cli, which generates the data.
"$here/.venv/bin/pip" install --quiet "dask[dataframe]==2026.8.0" "pandas==3.1.1" "pyarrow==26.0.1" \
  "polars==2.1.0" "duckdb==2.0.1" "tpchgen-cli==4.0.0"
# The object-store benchmark (object_store_read.rs): Dask reads S3 through s3fs, and moto's
# server is one of the S3 servers it starts (s3rver, the other, comes from npm:
# scripts/install-s3rver.sh); bench/s3_range_cost.py measures a server with boto3 (moto's).
"$here/.venv/bin/pip" install --quiet "s3fs==2026.9.0" "moto[server]==5.2.5"
# Its http:// side (`--server nginx`): Dask reads through fsspec's HTTPFileSystem, on aiohttp.
"$here/.venv/bin/pip" install --quiet "aiohttp==3.14.5"
"$here/.venv/bin/python" -c "import dask; print('dask', dask.__version__)"
