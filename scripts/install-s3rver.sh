#!/usr/bin/env bash
# Installs `s3rver` (npm), an S3-compatible server that keeps objects as files and reads only
# the asked range for a ranged GET (moto reads the whole object for each one), and prints the
# path of its program. bench/src/bin/object_store_read.rs finds it there (`--server s3rver`).
# The install lives outside the clone and is reused when present.
set -euo pipefail
dir="${KILN_S3RVER_DIR:-$HOME/.cache/kiln-s3rver}"
if [ ! -x "$dir/node_modules/.bin/s3rver" ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent s3rver@3.7.1 >&2
fi
echo "$dir/node_modules/.bin/s3rver"
