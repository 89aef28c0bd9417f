#!/usr/bin/env bash
# The long chaos run (issue 10): the CI test crates/kiln-cli/tests/chaos.rs, in release mode, for
# KILN_CHAOS_SECS seconds (default 600) of random SIGKILL and SIGSTOP/SIGCONT of a two-worker
# cluster's workers under array, delayed, futures and spilling workloads. Prints the test's
# RESULT line (faults, computations, right, errors, wrong, hangs, leaks). Replay a schedule with
# KILN_CHAOS_SEED=<seed printed by a run>.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_CHAOS_SECS="${KILN_CHAOS_SECS:-600}"
cargo test --release -p kiln-cli --test chaos -- --nocapture 2>&1 | grep -E "^(RESULT|chaos:|test result)"
