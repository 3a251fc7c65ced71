#!/usr/bin/env bash
# Benchmark of the HTTP listener: a job's whole output read through its event stream (curl)
# against `ferry attach` (the native protocol), side by side; and the cost of one /metrics
# scrape with 1000 jobs in the daemon. Installs hyperfine and curl when missing. Not a test.
#
#   bash bench/web.sh               # 256 MiB of output
#   SIZE=64M bash bench/web.sh      # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SIZE=${SIZE:-256M}
RUNS=${RUNS:-5}
need_hyperfine
command -v curl >/dev/null || need_packages curl

build_ferry
setup_work
export FERRY_SOCKET=$work/ferry.sock
start_daemon "$FERRY_SOCKET" --state-dir "$work/state" --max-log-size 2147483648 --max-finished 5000
url=$("$FERRY" web --print)
base=${url%%/\?*}
token=${url##*token=}

# Text output (UTF-8: the events carry it as JSON strings), stored whole.
job=$("$FERRY" run --detach -- sh -c "base64 -w 76 /dev/urandom | head -c $SIZE")
"$FERRY" wait --quiet "$job"
bytes=$("$FERRY" attach "$job" | wc -c)
events=$(curl -sN -H "Authorization: Bearer $token" "$base/api/v1/jobs/$job/events" | grep -c '^event: stdout' || true)
echo "job $job: $bytes bytes of output; $events stdout events"

hyperfine -N --warmup 1 --runs "$RUNS" --export-csv "$work/stream.csv" \
  "$FERRY attach $job" \
  "curl -sN -o /dev/null -H 'Authorization: Bearer $token' $base/api/v1/jobs/$job/events" \
  --output=null | tee "$work/stream.txt"

awk -F, -v bytes="$bytes" -v rows="${BENCH_ROWS:-/dev/null}" '
  NR == 2 { attach = $2 } NR == 3 { sse = $2 }
  END {
    mib = bytes / 1048576
    ratio = attach / sse
    printf "\nferry attach %.0f MiB/s, event stream %.0f MiB/s: %.2fx (target >= 0.5x)\n", mib / attach, mib / sse, ratio
    printf "a job'"'"'s output through the HTTP event stream (speed over ferry attach)\t%.0f MiB/s\tferry attach %.0f MiB/s\t%.2f\t>= 0.5x\t%s\t%.3f\n", mib / sse, mib / attach, ratio, (ratio >= 0.5 ? "yes" : "NO"), ratio >> rows
  }' "$work/stream.csv"

# 1000 jobs, then the scrape.
for _ in $(seq 1000); do "$FERRY" run --detach -- true >/dev/null; done
"$FERRY" wait --quiet
hyperfine -N --warmup 5 --runs 200 --export-csv "$work/metrics.csv" \
  "curl -s -o /dev/null -H 'Authorization: Bearer $token' $base/metrics" \
  "curl -s -o /dev/null -H 'Authorization: Bearer $token' $base/api/v1" | tee "$work/metrics.txt"
awk -F, -v rows="${BENCH_ROWS:-/dev/null}" '
  NR == 2 { scrape = $2 * 1000 } NR == 3 { small = $2 * 1000 }
  END {
    printf "\none /metrics scrape with 1000 jobs: %.2f ms (a small API answer: %.2f ms; curl included)\n", scrape, small
    printf "one /metrics scrape with 1000 jobs (curl included)\t%.2f ms\tGET /api/v1 %.2f ms\t\t(measured)\t\t\n", scrape, small >> rows
  }' "$work/metrics.csv"
