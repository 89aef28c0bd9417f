#!/usr/bin/env bash
# Enforces the dependency rules of docs/ARCHITECTURE.md: the graph core and the collections stay
# free of async runtimes and I/O stacks, and never depend on a scheduler.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
forbid() { # crate, pattern, reason
  local deps
  deps=$(cargo tree -p "$1" -e normal --prefix none --offline 2>/dev/null || cargo tree -p "$1" -e normal --prefix none)
  if grep -Eq "^($2) v" <<<"$deps"; then
    echo "layering: $1 must not depend on $(grep -Eo "^($2) v[^ ]+" <<<"$deps" | sort -u | tr '\n' ' ')($3)"
    status=1
  fi
}
for core in kiln-graph kiln-delayed kiln-array kiln-dataframe kiln-bag kiln-storage; do
  forbid "$core" "tokio|mio|axum|hyper" "the graph core and collections are pure: no async runtime"
  forbid "$core" "kiln-local|kiln-scheduler|kiln-distributed" "collections never depend on a scheduler"
done
# The distributed scheduler's decisions and the wire format are pure too: events in, commands out.
for pure in kiln-scheduler kiln-worker kiln-protocol; do
  forbid "$pure" "tokio|mio|axum|hyper|socket2" "the scheduler and worker state machines and the protocol own no sockets or runtime"
done
forbid kiln-protocol "kiln-scheduler|kiln-worker|kiln-distributed|kiln-local" "the protocol depends on nothing above it"
forbid kiln-worker "kiln-scheduler|kiln-distributed|kiln-local" "the worker state machine knows only the protocol and the graph types"
# Collections reach object stores only through kiln-storage's trait; the store (and its async
# runtime) is registered at the edge.
for core in kiln-graph kiln-delayed kiln-array kiln-dataframe kiln-bag kiln-storage; do
  forbid "$core" "kiln-object-store|object_store|reqwest" "collections see storage through kiln-storage's synchronous trait"
done
# The dashboard reads snapshots; it never drives the scheduler (no dependency on the server
# crate, which depends on it) nor touches the worker.
forbid kiln-dashboard "kiln-distributed|kiln-worker" "the dashboard reads the scheduler's snapshots and, for local performance reports, kiln-local's task hook; nothing of the runtime"
[ "$status" -eq 0 ] && echo "layering: ok"
exit "$status"
