#!/usr/bin/env bash
# The long chaos run (issue 10): the CI test crates/kiln-cli/tests/chaos.rs, in release mode, for
# KILN_CHAOS_SECS seconds (default 600) of random SIGKILL, SIGSTOP/SIGCONT and network cuts (one
# worker in a network namespace whose link goes down for 1-8 s; needs root and iproute2, else
# left out with a note) of a two-worker cluster's workers under array, delayed, futures and
# spilling workloads. Prints the test's RESULT line (faults, kills, pauses, cuts, computations,
# right, errors, wrong, hangs, leaks), and on failure every unexpected error and the fault
# schedule (KILN_CHAOS_SCHEDULE=1 prints the schedule always). Replay a schedule with
# KILN_CHAOS_SEED=<seed printed by a run>.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_CHAOS_SECS="${KILN_CHAOS_SECS:-600}"
cargo test --release -p kiln-cli --test chaos -- --nocapture 2>&1 | grep -E "^(RESULT|chaos:|test result|thread .* panicked)"
