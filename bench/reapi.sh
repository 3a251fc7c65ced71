#!/usr/bin/env bash
# Benchmark for `ferry rake --reapi`, side by side in one run: the rake authors' C example
# (three files compiled in one set, linked, run) on a real BuildGrid (installed by .ci/deps) with
# one and with two workers (the test worker, tests/fixtures/buildgrid_bot.py), cold (--no-cache:
# every action executes) and with a warm action cache, against the same Rakefile on a pool of
# three loopback ferry daemons.
#
#   bash bench/reapi.sh            # RUNS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-5}

need_hyperfine
command -v cc >/dev/null || need_packages gcc
command -v ss >/dev/null || need_packages iproute2
bash .ci/deps
venv=${FERRY_BUILDGRID_VENV:-$PWD/target/buildgrid-venv}

build_ferry
setup_work

# The local daemon, and three hosts serving the native protocol on loopback with one token.
printf 'bench-token\n' >"$work/token"
start_daemon "$work/local.sock" --state-dir "$work/state-local" --max-finished 100
ports=()
for i in 1 2 3; do
  start_daemon "$work/host$i.sock" --state-dir "$work/state-$i" --max-finished 100 \
    --listen "ferry:unix:$work/host$i.sock" --listen "ferry:tcp:127.0.0.1:0" \
    --token-file "$work/token" --allow-any-command
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on ferry:tcp:127.0.0.1:\([0-9]*\).*/\1/p' "$work/daemon-host$i.log" | head -1)
    [ -n "$port" ] && break
    sleep 0.05
  done
  ports+=("$port")
done

# BuildGrid on a port of its own choosing (found with ss), in-memory CAS and cache.
cp crates/ferry/tests/fixtures/buildgrid.yml "$work/buildgrid.yml"
(cd "$work" && exec "$venv/bin/bgd" server start buildgrid.yml >"$work/buildgrid.log" 2>&1) &
pids+=($!)
grid_pid=$!
grid_port=""
for _ in $(seq 600); do
  grid_port=$(ss -ltnpH 2>/dev/null | awk -v pid="pid=$grid_pid," 'index($0, pid) { n = split($4, a, ":"); print a[n]; exit }')
  [ -n "$grid_port" ] && break
  sleep 0.1
done
[ -n "$grid_port" ] || { echo "BuildGrid did not listen" >&2; cat "$work/buildgrid.log" >&2; exit 1; }

start_worker() {
  "$venv/bin/python" tests/fixtures/buildgrid_bot.py --remote "127.0.0.1:$grid_port" \
    --name "bench-bot-$1" --log "$work/work.log" >"$work/bot$1.log" 2>&1 &
  pids+=($!)
}
cd crates/ferry && start_worker 1 && cd ../..

# The C example, once for the pool and once for the cluster.
make_project() {
  local dir=$1 hosts=$2
  mkdir -p "$dir"
  printf 'int square(int);\nint cube(int);\n' >"$dir/program.h"
  printf '#include <stdio.h>\n#include "program.h"\nint main(void) { printf("%%d %%d\\n", square(3), cube(2)); return 0; }\n' >"$dir/program.c"
  printf '#include "program.h"\nint square(int x) { return x * x; }\n' >"$dir/square.c"
  printf '#include "program.h"\nint cube(int x) { return x * x * x; }\n' >"$dir/cube.c"
  {
    printf 'HOSTS = %s\n\n' "$hosts"
    printf 'actionset1:\n'
    for f in program square cube; do printf '\tremote-cc -c %s.c\n\t\trequires %s.c program.h\n' "$f" "$f"; done
    printf 'actionset2:\n\tremote-cc -o program program.o square.o cube.o\n\t\trequires program.o square.o cube.o\n'
    printf 'actionset3:\n\t./program\n'
  } >"$dir/Rakefile"
}
make_project "$work/pool" "127.0.0.1:${ports[0]} 127.0.0.1:${ports[1]} 127.0.0.1:${ports[2]}"
make_project "$work/grid" "reapi://127.0.0.1:$grid_port"

rake="$FERRY --socket $work/local.sock --no-tls --token-file $work/token rake"
clean="rm -f $work/pool/*.o $work/pool/program $work/grid/*.o $work/grid/program"
# Fill the action cache once.
(cd "$work/grid" && $rake >/dev/null 2>&1)
bench() {
  hyperfine --warmup 1 --runs "$RUNS" --export-csv "$work/$1.csv" --prepare "$clean" \
    "cd $work/pool && $rake >/dev/null 2>&1" \
    "cd $work/grid && $rake --no-cache >/dev/null 2>&1" \
    "cd $work/grid && $rake >/dev/null 2>&1" >"$work/$1.txt"
}
bench one
(cd crates/ferry && start_worker 2)
bench two

awk -F, -v rows="${BENCH_ROWS:-/dev/null}" '
  FNR == 1 { file++; next }
  file == 1 { one[FNR - 1] = $2 }
  file == 2 { two[FNR - 1] = $2 }
  END {
    printf "\n| work: the C example (3 compilations, a link, a local run) | time | vs the pool |\n|---|---|---|\n"
    printf "| pool of 3 loopback ferry daemons | %.3f s | 1.00x |\n", one[1]
    printf "| BuildGrid, 1 worker, cold (--no-cache) | %.3f s | %.2fx |\n", one[2], one[2] / one[1]
    printf "| BuildGrid, 1 worker, warm action cache | %.3f s | %.2fx |\n", one[3], one[3] / one[1]
    printf "| BuildGrid, 2 workers, cold (--no-cache) | %.3f s | %.2fx |\n", two[2], two[2] / two[1]
    printf "| BuildGrid, 2 workers, warm action cache | %.3f s | %.2fx |\n", two[3], two[3] / two[1]
    printf "ferry rake --reapi: C example, BuildGrid, 1 worker, cold (speed over the pool)\t%.0f ms\tpool of 3 daemons %.0f ms\t%.2f\t\t\t%.3f\n", one[2] * 1000, one[1] * 1000, one[1] / one[2], one[1] / one[2] >> rows
    printf "ferry rake --reapi: C example, BuildGrid, warm cache (speed over the pool)\t%.0f ms\tpool of 3 daemons %.0f ms\t%.2f\t\t\t%.3f\n", one[3] * 1000, one[1] * 1000, one[1] / one[3], one[1] / one[3] >> rows
    printf "ferry rake --reapi: C example, BuildGrid, 2 workers, cold (speed over the pool)\t%.0f ms\tpool of 3 daemons %.0f ms\t%.2f\t\t\t%.3f\n", two[2] * 1000, two[1] * 1000, two[1] / two[2], two[1] / two[2] >> rows
    printf "\n(times are hyperfine means; \"vs the pool\" is the time over the pool'"'"'s in the same group)\n"
  }' "$work/one.csv" "$work/two.csv"
