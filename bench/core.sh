#!/usr/bin/env bash
# Benchmark for the core: `ferry run` latency against `sh -c true` and against the floor a
# client/daemon design has (a release "hello world" exec plus a `/bin/true` exec, both
# measured in this run: two process starts), and throughput of `ferry run -- head -c 2G
# /dev/zero` against a plain pipe, side by side in one run.
# Prints a table with the ratios and the targets. Not a test: numbers, not assertions.
#
#   bash bench/core.sh            # full run
#   RUNS=3 SIZE=512M bash bench/core.sh   # quicker
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
# --max-finished 1: the throughput runs would otherwise keep every 2G log on disk.
start_daemon "$FERRY_SOCKET" --max-finished 1
"$FERRY" run -- true # warm: the daemon answers

# `ferry --version` (the client process alone) against a release "hello world": starting any
# client process plus the job's own exec is the floor a client/daemon design can reach.
printf 'fn main() { println!("hello world"); }\n' >"$work/hello.rs"
rustc -O -o "$work/hello" "$work/hello.rs"
hyperfine -N --warmup 50 --runs "${LATENCY_RUNS:-500}" --export-csv "$work/latency.csv" \
  "$FERRY run -- true" "sh -c true" "$FERRY --version" "$work/hello" "/bin/true" >"$work/latency.txt"
hyperfine --warmup 1 --runs "$RUNS" --export-csv "$work/throughput.csv" \
  "$FERRY run -- head -c $SIZE /dev/zero >/dev/null" "head -c $SIZE /dev/zero | cat >/dev/null" \
  >"$work/throughput.txt"

bytes=$(numfmt --from=iec "$SIZE")
awk -F, -v bytes="$bytes" -v size="$SIZE" -v rows="${BENCH_ROWS:-/dev/null}" '
  function row(name, mean) { printf "%-58s %12.3f ms\n", name, mean * 1000 }
  FNR == 1 { file++; next }
  file == 1 { lat[FNR - 1] = $2; latname[FNR - 1] = $1 }
  file == 2 { thr[FNR - 1] = $2; thrname[FNR - 1] = $1 }
  END {
    printf "%-58s %15s\n", "command", "mean"
    for (i = 1; i <= 5; i++) row(latname[i], lat[i])
    row(thrname[1], thr[1]); row(thrname[2], thr[2])
    printf "\n%-40s %10s %10s %8s\n", "measure", "ratio", "target", "met"
    r = lat[1] / lat[2]
    printf "%-40s %9.2fx %10s %8s\n", "latency: ferry run / sh -c true", r, "", ""
    floor = lat[4] + lat[5]
    f = lat[1] / floor
    printf "%-40s %9.2fx %10s %8s\n", "latency: ferry run / floor", f, "<= 1.3x", (f <= 1.3 ? "yes" : "NO")
    printf "  floor: hello world %.3f ms + /bin/true %.3f ms = %.3f ms\n", lat[4] * 1000, lat[5] * 1000, floor * 1000
    v = lat[3] / lat[4]
    printf "%-40s %9.2fx %10s %8s\n", "client start: ferry --version / hello", v, "<= 1.2x", (v <= 1.2 ? "yes" : "NO")
    t = lat[2] > 0 ? (thr[2] / thr[1]) : 0
    printf "%-40s %9.2fx %10s %8s\n", "throughput: ferry run / pipe", t, ">= 0.8x", (t >= 0.8 ? "yes" : "NO")
    printf "\nthroughput: ferry %.0f MiB/s, pipe %.0f MiB/s\n", bytes / thr[1] / 1048576, bytes / thr[2] / 1048576
    printf "ferry run -- true (time over sh -c true: one process start where ferry has two)\t%.2f ms\tsh -c true %.2f ms\t%.2f\t\t\t%.3f\n", lat[1] * 1000, lat[2] * 1000, r, 1 / r >> rows
    printf "ferry run -- true (time over the floor: hello world + /bin/true)\t%.2f ms\tfloor %.2f ms (hello %.2f + true %.2f)\t%.2f\t<= 1.3x\t%s\t%.3f\n", lat[1] * 1000, floor * 1000, lat[4] * 1000, lat[5] * 1000, f, (f <= 1.3 ? "yes" : "NO"), 1 / f >> rows
    printf "ferry --version, the client alone (time over the peer)\t%.2f ms\thello world %.2f ms\t%.2f\t<= 1.2x\t%s\t%.3f\n", lat[3] * 1000, lat[4] * 1000, v, (v <= 1.2 ? "yes" : "NO"), 1 / v >> rows
    printf "ferry run -- head -c %s /dev/zero, output through the daemon (speed over the peer)\t%.0f MiB/s\thead piped to cat %.0f MiB/s\t%.2f\t>= 0.8x\t%s\t%.3f\n", size, bytes / thr[1] / 1048576, bytes / thr[2] / 1048576, t, (t >= 0.8 ? "yes" : "NO"), t >> rows
  }' "$work/latency.csv" "$work/throughput.csv"
