#!/usr/bin/env bash
# Benchmark for many jobs and the daemon's memory, side by side in one run:
# - `seq N | xargs -P2 -n1 ferry run -- true` against the same xargs of the floor's two
#   programs (a release "hello world" that runs /bin/true: two process starts per job, as a
#   client and its job are; target <= 1.3x), and against `xargs ... true`;
# - N detached jobs submitted one after another then waited for (`ferry run -d` then
#   `ferry wait`) against pueue (`pueue add` then `pueue wait`; target >= 20x its throughput);
# - N jobs submitted into a group that runs 2 at a time, then waited for (`ferry group add g
#   --parallel 2`, `ferry run -d --group g`, `ferry wait`) against pueue with the same group
#   limit (`pueue group add g`, `pueue parallel -g g 2`, `pueue add -g g`, `pueue wait -g g`;
#   target >= 50x its throughput);
# - the idle daemon's RSS after one job (target <= 6 MB), against pueued's, and after a burst
#   of 1000 jobs, and 5 s after 1 GiB of output streamed through it (target: within 2 MB of idle).
#
#   bash bench/jobs.sh                     # JOBS=2000 PUEUE_JOBS=200 (pueue takes ~0.3 s a task)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

JOBS=${JOBS:-2000}
PUEUE_JOBS=${PUEUE_JOBS:-200}
RUNS=${RUNS:-3}

need_hyperfine
if ! command -v pueue >/dev/null; then
  cargo install --locked pueue >&2
fi

build_ferry
setup_work
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

export FERRY_SOCKET=$work/ferry.sock
export FERRY_STATE_DIR=$work/state
start_daemon "$FERRY_SOCKET" --max-finished 100
daemon_pid=${pids[-1]}
"$FERRY" run -- true
sleep 2
idle_rss=$(rss_kib "$daemon_pid")
# Output streaming through the daemon, 1 GiB, then 5 s idle: its memory must go back (measured
# before the runs below, whose jobs are another matter: the burst's row).
"$FERRY" run -- head -c 1G /dev/zero >/dev/null
sleep 5
stream_rss=$(rss_kib "$daemon_pid")

# pueue with its own directories, two tasks at a time (as ferry runs as many as cores).
mkdir -p "$work/pueue/run" "$work/pueue/data"
cat >"$work/pueue.yml" <<YAML
shared:
  pueue_directory: $work/pueue/data
  runtime_directory: $work/pueue/run
  use_unix_socket: true
daemon:
  default_parallel_tasks: 2
YAML
pueued -c "$work/pueue.yml" >"$work/pueued.log" 2>&1 &
pids+=($!)
pueued_pid=$!
pueue="pueue -c $work/pueue.yml"
for _ in $(seq 100); do $pueue status >/dev/null 2>&1 && break; sleep 0.05; done
$pueue add -- true >/dev/null
$pueue wait >/dev/null 2>&1
sleep 2
pueued_rss=$(rss_kib "$pueued_pid")

# The floor per job: a process start (a release hello world) that starts /bin/true and waits.
printf 'fn main() { println!("hello world"); let _ = std::process::Command::new("/bin/true").status(); }\n' >"$work/floor.rs"
rustc -O -o "$work/floor" "$work/floor.rs"
hyperfine --warmup 1 --runs "$RUNS" --export-csv "$work/xargs.csv" \
  "seq $JOBS | xargs -P2 -n1 $FERRY run -- true" "seq $JOBS | xargs -P2 -n1 true" \
  "seq $JOBS | xargs -P2 -n1 $work/floor >/dev/null" >"$work/xargs.txt"

seconds() { date +%s.%N; }
start=$(seconds)
for _ in $(seq "$JOBS"); do "$FERRY" run -d -- true >/dev/null; done
"$FERRY" wait -q
ferry_detached=$(echo "$(seconds) - $start" | bc)
start=$(seconds)
for _ in $(seq "$PUEUE_JOBS"); do $pueue add -- true >/dev/null; done
$pueue wait >/dev/null 2>&1
pueue_detached=$(echo "$(seconds) - $start" | bc)

# Into a group that runs two at a time, on both.
"$FERRY" group add g --parallel 2
start=$(seconds)
for _ in $(seq "$JOBS"); do "$FERRY" run -d --group g -- true >/dev/null; done
"$FERRY" wait -q
ferry_grouped=$(echo "$(seconds) - $start" | bc)
$pueue group add g >/dev/null
$pueue parallel -g g 2 >/dev/null
start=$(seconds)
for _ in $(seq "$PUEUE_JOBS"); do $pueue add -g g -- true >/dev/null; done
$pueue wait -g g >/dev/null 2>&1
pueue_grouped=$(echo "$(seconds) - $start" | bc)

# A burst of 1000 jobs, then idle again.
seq 1000 | xargs -P4 -n1 "$FERRY" run -- true >/dev/null
sleep 2
burst_rss=$(rss_kib "$daemon_pid")


awk -F, -v rows="${BENCH_ROWS:-/dev/null}" -v n="$JOBS" -v pn="$PUEUE_JOBS" \
  -v fd="$ferry_detached" -v pd="$pueue_detached" \
  -v fg="$ferry_grouped" -v pg="$pueue_grouped" \
  -v idle="$idle_rss" -v pueued="$pueued_rss" -v burst="$burst_rss" -v stream="$stream_rss" '
  FNR == 1 { next }
  { mean[FNR - 1] = $2 }
  END {
    x = mean[1] / mean[2]
    xf = mean[1] / mean[3]
    fr = n / fd; pr = pn / pd; d = fr / pr
    gr = n / fg; pgr = pn / pg; g = gr / pgr
    printf "\n| work | ferry | peer | ratio | target |\n|---|---|---|---|---|\n"
    printf "| seq %d \\| xargs -P2 -n1 ferry run -- true | %.2f s | the floor (2 process starts) %.2f s | %.2fx | <= 1.3x |\n", n, mean[1], mean[3], xf
    printf "| seq %d \\| xargs -P2 -n1 ferry run -- true | %.2f s | xargs ... true %.2f s | %.2fx | |\n", n, mean[1], mean[2], x
    printf "| detached jobs submitted, then waited for | %.0f jobs/s (%d) | pueue %.1f jobs/s (%d) | %.0fx | >= 20x |\n", fr, n, pr, pn, d
    printf "| jobs into a group of 2 at a time, then waited for | %.0f jobs/s (%d) | pueue %.1f jobs/s (%d) | %.0fx | >= 50x |\n", gr, n, pgr, pn, g
    printf "| idle daemon RSS after one job | %.1f MB | pueued %.1f MB | | <= 6 MB |\n", idle / 1024, pueued / 1024
    printf "| daemon RSS after a burst of 1000 jobs | %.1f MB | | | near idle |\n", burst / 1024
    printf "| daemon RSS 5 s after streaming 1 GiB | %.1f MB | idle %.1f MB | | within 2 MB of idle |\n", stream / 1024, idle / 1024
    printf "seq %d, xargs -P2 -n1 ferry run -- true (time over the floor: hello world running /bin/true)\t%.2f s\tfloor %.2f s\t%.2f\t<= 1.3x\t%s\t%.3f\n", n, mean[1], mean[3], xf, (xf <= 1.3 ? "yes" : "NO"), 1 / xf >> rows
    printf "seq %d, xargs -P2 -n1 ferry run -- true (time over xargs ... true)\t%.2f s\txargs -P2 -n1 true %.2f s\t%.2f\t\t\t%.3f\n", n, mean[1], mean[2], x, 1 / x >> rows
    printf "detached jobs submitted, then waited for (throughput over the peer)\t%.0f jobs/s\tpueue %.1f jobs/s\t%.1f\t>= 20x\t%s\t%.3f\n", fr, pr, d, (d >= 20 ? "yes" : "NO"), d >> rows
    printf "jobs into a group of 2 at a time, then waited for (throughput over the peer)\t%.0f jobs/s\tpueue %.1f jobs/s\t%.1f\t>= 50x\t%s\t%.3f\n", gr, pgr, g, (g >= 50 ? "yes" : "NO"), g >> rows
    printf "idle daemon RSS after one job\t%.1f MB\tpueued %.1f MB\t\t<= 6 MB\t%s\t%.3f\n", idle / 1024, pueued / 1024, (idle <= 6144 ? "yes" : "NO"), pueued / idle >> rows
    printf "daemon RSS after a burst of 1000 jobs\t%.1f MB\t\t\tnear idle: <= 1.5 x %.1f MB\t%s\t\n", burst / 1024, idle / 1024, (burst <= idle * 1.5 ? "yes" : "NO") >> rows
    printf "daemon RSS 5 s after streaming 1 GiB\t%.1f MB\tidle %.1f MB\t\twithin 2 MB of idle\t%s\t\n", stream / 1024, idle / 1024, (stream <= idle + 2048 ? "yes" : "NO") >> rows
  }' "$work/xargs.csv"
