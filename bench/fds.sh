#!/usr/bin/env bash
# Benchmark for fd passing: `ferry run --fds -- head -c 2G /dev/zero >/dev/null`
# against running `head -c 2G /dev/zero >/dev/null` directly, side by side in one hyperfine
# run; also a stateful session command (`ferry run --session`) against its floor, a release
# "hello world" exec plus `bash -c true` (a client's start, then the shell a session command
# is), measured in the same run. Prints a table with the ratios and the targets. Not a test.
#
#   bash bench/fds.sh                    # 2G, 10 runs
#   SIZE=512M RUNS=3 bash bench/fds.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-10}
SIZE=${SIZE:-2G}

need_hyperfine

build_ferry
setup_work

export FERRY_SOCKET=$work/ferry.sock
export FERRY_STATE_DIR=$work/state
start_daemon "$FERRY_SOCKET"
"$FERRY" run --fds -- true # warm: the daemon answers
session=$("$FERRY" session new)
printf 'fn main() { println!("hello world"); }\n' >"$work/hello.rs"
rustc -O -o "$work/hello" "$work/hello.rs"

hyperfine --warmup 1 --runs "$RUNS" --export-csv "$work/throughput.csv" \
  "$FERRY run --fds -- head -c $SIZE /dev/zero >/dev/null" \
  "head -c $SIZE /dev/zero >/dev/null" >"$work/throughput.txt"
hyperfine -N --warmup 10 --runs 100 --export-csv "$work/session.csv" \
  "$FERRY run --fds --session $session -- true" "$FERRY run --fds -- true" "bash -c true" \
  "$work/hello" \
  >"$work/session.txt"

bytes=$(numfmt --from=iec "$SIZE")
awk -F, -v bytes="$bytes" -v size="$SIZE" -v rows="${BENCH_ROWS:-/dev/null}" '
  FNR == 1 { next }
  FILENAME ~ /throughput/ { tp[++n] = $2 }
  FILENAME ~ /session/ { lat[++m] = $2 * 1000 }
  END {
    printf "%-48s %10s %10s\n", "command", "mean", "MiB/s"
    printf "%-48s %8.3f s %10.0f\n", "ferry run --fds -- head -c SIZE /dev/zero", tp[1], bytes / tp[1] / 1048576
    printf "%-48s %8.3f s %10.0f\n", "head -c SIZE /dev/zero (direct)", tp[2], bytes / tp[2] / 1048576
    printf "%-48s %7.2f ms\n", "ferry run --fds --session ID -- true", lat[1]
    printf "%-48s %7.2f ms\n", "ferry run --fds -- true", lat[2]
    printf "%-48s %7.2f ms\n", "bash -c true", lat[3]
    printf "%-48s %7.2f ms\n", "hello world", lat[4]
    r = tp[2] / tp[1]
    floor = lat[3] + lat[4]
    s = lat[1] / floor
    printf "\n%-40s %7.2fx %10s %6s\n", "ferry --fds speed / direct", r, ">= 0.95x", (r >= 0.95 ? "yes" : "NO")
    printf "ferry run --fds -- head -c %s /dev/zero (speed over the peer)\t%.0f MiB/s\tdirect %.0f MiB/s\t%.2f\t>= 0.95x\t%s\t%.3f\n", size, bytes / tp[1] / 1048576, bytes / tp[2] / 1048576, r, (r >= 0.95 ? "yes" : "NO"), r >> rows
    printf "%-40s %7.2fx %10s %6s\n", "session command / floor", s, "<= 1.5x", (s <= 1.5 ? "yes" : "NO")
    printf "ferry run --fds --session ID -- true (time over the floor: hello world + bash -c true)\t%.2f ms\tfloor %.2f ms (hello %.2f + bash -c true %.2f)\t%.2f\t<= 1.5x\t%s\t%.3f\n", lat[1], floor, lat[4], lat[3], s, (s <= 1.5 ? "yes" : "NO"), 1 / s >> rows
  }' "$work/throughput.csv" "$work/session.csv"
