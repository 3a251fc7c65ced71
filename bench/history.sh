#!/usr/bin/env bash
# Benchmark for durable history: `ferry run -- true` latency against a daemon that
# keeps the history (records in redb, a log file per job) and against one with history off
# (`--no-history`, the in-memory mode), side by side in alternating rounds. Prints a table with
# the store's cost and the target (at most 5%). Not a test.
#
#   bash bench/history.sh                    # 1000 runs each, in 5 rounds
#   HISTORY_RUNS=300 bash bench/history.sh   # quicker
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

# In rounds, the order swapped each round: the machine's speed drifts by more than the 5%
# measured here over the minute one long block of each would take.
ROUNDS=${HISTORY_ROUNDS:-5}
per_round=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
store_cmd="$FERRY --socket $work/store.sock run --no-fds -- true"
memory_cmd="$FERRY --socket $work/memory.sock run --no-fds -- true"
: >"$work/rounds.csv"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    first=$store_cmd second=$memory_cmd
  else
    first=$memory_cmd second=$store_cmd
  fi
  hyperfine -N --warmup 20 --runs "$per_round" --export-csv "$work/round.csv" \
    "$first" "$second" >>"$work/latency.txt"
  tail -n +2 "$work/round.csv" >>"$work/rounds.csv"
done

jobs=$("$FERRY" --socket "$work/store.sock" ps --all --json | wc -l)
awk -F, -v jobs="$jobs" -v rows="${BENCH_ROWS:-/dev/null}" '
  # One line per command and round: the daemon is told by its socket.
  { k = ($1 ~ /store.sock/) ? 1 : 2; sum[k] += $2 * 1000; sq[k] += $3 * 1000; n[k]++ }
  END {
    for (k = 1; k <= 2; k++) { mean[k] = sum[k] / n[k]; sd[k] = sq[k] / n[k] }
    printf "%-44s %10s %10s\n", "ferry run -- true (" n[1] " rounds)", "mean", "stddev"
    printf "%-44s %7.3f ms %7.3f ms\n", "with the history (redb + log file)", mean[1], sd[1]
    printf "%-44s %7.3f ms %7.3f ms\n", "history off (--no-history)", mean[2], sd[2]
    cost = (mean[1] - mean[2]) / mean[2] * 100
    printf "\n%-44s %+7.1f %% %10s %6s\n", "store cost", cost, "<= 5%", (cost <= 5 ? "yes" : "NO")
    printf "(%d jobs recorded in the store during the run)\n", jobs
    printf "ferry run -- true with the history (time over without)\t%.3f ms\t--no-history %.3f ms\t%.2f\t<= 1.05x\t%s\t%.3f\n", mean[1], mean[2], mean[1] / mean[2], (cost <= 5 ? "yes" : "NO"), mean[2] / mean[1] >> rows
  }' "$work/rounds.csv"
