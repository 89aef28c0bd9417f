#!/usr/bin/env bash
# Creates bench/.venv with Dask (and NumPy) for the side-by-side benchmarks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --upgrade pip
"$here/.venv/bin/pip" install --quiet "dask[array,distributed]" numpy
"$here/.venv/bin/python" -c "import dask; print('dask', dask.__version__)"
