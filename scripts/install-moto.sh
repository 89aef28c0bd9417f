#!/usr/bin/env bash
# Installs the `moto` S3-compatible server (PyPI) that the object-store tests start on
# loopback, in a virtual environment of its own, and prints the path of its `moto_server`.
# The tests find it there (or through KILN_MOTO_SERVER, or on PATH) and skip, saying so,
# without it. The environment lives outside the clone and is reused when present.
set -euo pipefail
venv="${KILN_MOTO_VENV:-$HOME/.cache/kiln-moto-venv}"
if [ ! -x "$venv/bin/moto_server" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'moto[server]==5.2.5' >&2
fi
echo "$venv/bin/moto_server"
