#!/usr/bin/env bash
# Benchmark for durable history: `ferry run -- true` latency against a daemon that
# keeps the history (records in redb, a log file per job) and against one with history off
# (`--no-history`, the in-memory mode), side by side in one hyperfine run. Prints a table with
# the store's cost and the target (at most 5%). Not a test.
#
#   bash bench/history.sh            # 1000 runs each
#   RUNS=300 bash bench/history.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${HISTORY_RUNS:-1000}

need_hyperfine

build_ferry
setup_work

start_daemon "$work/store.sock" --state-dir "$work/store"
start_daemon "$work/memory.sock" --state-dir "$work/memory" --no-history
for sock in store memory; do
  "$FERRY" --socket "$work/$sock.sock" run --no-fds -- true # warm
done

hyperfine -N --warmup 50 --runs "$RUNS" --export-csv "$work/latency.csv" \
  "$FERRY --socket $work/store.sock run --no-fds -- true" \
  "$FERRY --socket $work/memory.sock run --no-fds -- true" >"$work/latency.txt"

jobs=$("$FERRY" --socket "$work/store.sock" ps --all --json | wc -l)
awk -F, -v jobs="$jobs" -v rows="${BENCH_ROWS:-/dev/null}" '
  FNR == 1 { next }
  { mean[++n] = $2 * 1000; sd[n] = $3 * 1000 }
  END {
    printf "%-44s %10s %10s\n", "ferry run -- true", "mean", "stddev"
    printf "%-44s %7.3f ms %7.3f ms\n", "with the history (redb + log file)", mean[1], sd[1]
    printf "%-44s %7.3f ms %7.3f ms\n", "history off (--no-history)", mean[2], sd[2]
    cost = (mean[1] - mean[2]) / mean[2] * 100
    printf "\n%-44s %+7.1f %% %10s %6s\n", "store cost", cost, "<= 5%", (cost <= 5 ? "yes" : "NO")
    printf "(%d jobs recorded in the store during the run)\n", jobs
    printf "ferry run -- true with the history (time over without)\t%.3f ms\t--no-history %.3f ms\t%.2f\t<= 1.05x\t%s\t%.3f\n", mean[1], mean[2], mean[1] / mean[2], (cost <= 5 ? "yes" : "NO"), mean[2] / mean[1] >> rows
  }' "$work/latency.csv"
