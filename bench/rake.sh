#!/usr/bin/env bash
# Benchmark for `ferry rake`, side by side in one run:
# - one set of 2000 local `true` actions, against `seq 2000 | xargs -P2 -n1 true` and
#   `seq 2000 | parallel -j2 true` (GNU parallel);
# - the seed's C example (three files compiled in one set, linked, run) across three loopback
#   daemons, against the same commands run by `make -j3`.
# Prints a table with the ratios (throughput: the peer's time over ferry's) and the targets.
#
#   bash bench/rake.sh            # RUNS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-5}
ACTIONS=${ACTIONS:-2000}

need_hyperfine
command -v parallel >/dev/null || need_packages parallel
command -v make >/dev/null || need_packages make
command -v cc >/dev/null || need_packages gcc

build_ferry
setup_work

# The local daemon, and three hosts serving the native protocol on loopback with one token.
printf 'bench-token\n' >"$work/token"
start_daemon "$work/local.sock" --state-dir "$work/state-local" --max-finished 100
ports=()
for i in 1 2 3; do
  port=$(( 20000 + RANDOM % 20000 ))
  start_daemon "$work/host$i.sock" --state-dir "$work/state-$i" --max-finished 100 \
    --listen "ferry:unix:$work/host$i.sock" --listen "ferry:tcp:127.0.0.1:$port" \
    --token-file "$work/token" --allow-any-command
  ports+=("$port")
done

# One set of many local actions.
mkdir -p "$work/many"
{ printf 'actionset1:\n'; for _ in $(seq "$ACTIONS"); do printf '\ttrue\n'; done; } >"$work/many/Rakefile"

# The C example.
c="$work/c"
mkdir -p "$c"
printf 'int square(int);\nint cube(int);\n' >"$c/program.h"
printf '#include <stdio.h>\n#include "program.h"\nint main(void) { printf("%%d %%d\\n", square(3), cube(2)); return 0; }\n' >"$c/program.c"
printf '#include "program.h"\nint square(int x) { return x * x; }\n' >"$c/square.c"
printf '#include "program.h"\nint cube(int x) { return x * x * x; }\n' >"$c/cube.c"
{
  printf 'HOSTS = 127.0.0.1:%s 127.0.0.1:%s 127.0.0.1:%s\n\n' "${ports[@]}"
  printf 'actionset1:\n'
  for f in program square cube; do printf '\tremote-cc -c %s.c\n\t\trequires %s.c program.h\n' "$f" "$f"; done
  printf 'actionset2:\n\tremote-cc -o program program.o square.o cube.o\n\t\trequires program.o square.o cube.o\n'
  printf 'actionset3:\n\t./program\n'
} >"$c/Rakefile"
printf 'program: program.o square.o cube.o\n\tcc -o program program.o square.o cube.o\n\t./program\n%%.o: %%.c program.h\n\tcc -c $<\n' >"$c/Makefile"

rake="$FERRY --socket $work/local.sock --no-tls --token-file $work/token rake"
hyperfine --warmup 1 --runs "$RUNS" --export-csv "$work/many.csv" \
  "cd $work/many && $rake >/dev/null 2>&1" \
  "seq $ACTIONS | xargs -P2 -n1 true" \
  "seq $ACTIONS | parallel -j2 true" >"$work/many.txt"
hyperfine --warmup 1 --runs "$RUNS" --export-csv "$work/c.csv" \
  --prepare "rm -f $c/*.o $c/program" \
  "cd $c && $rake >/dev/null 2>&1" \
  "cd $c && make -s -j3 >/dev/null" >"$work/c.txt"

awk -F, -v rows="${BENCH_ROWS:-/dev/null}" '
  FNR == 1 { file++; next }
  file == 1 { many[FNR - 1] = $2 }
  file == 2 { c[FNR - 1] = $2 }
  END {
    printf "\n| work | ferry rake | peer | throughput vs peer | target |\n|---|---|---|---|---|\n"
    printf "| %s local `true` actions | %.2f s | xargs -P2: %.2f s | %.2fx | >= 0.8x |\n", n, many[1], many[2], many[2] / many[1]
    printf "| same | | GNU parallel -j2: %.2f s | %.2fx | >= 3x |\n", many[3], many[3] / many[1]
    printf "| C example, 3 loopback daemons | %.3f s | make -j3: %.3f s | %.2fx | |\n", c[1], c[2], c[2] / c[1]
    r = many[2] / many[1]; p = many[3] / many[1]
    printf "ferry rake: %s local true actions (throughput over xargs -P2)\t%.2f s\txargs -P2 %.2f s\t%.2f\t>= 0.8x\t%s\t%.3f\n", n, many[1], many[2], r, (r >= 0.8 ? "yes" : "NO"), r >> rows
    printf "ferry rake: %s local true actions (throughput over GNU parallel)\t%.2f s\tparallel -j2 %.2f s\t%.2f\t>= 3x\t%s\t%.3f\n", n, many[1], many[3], p, (p >= 3 ? "yes" : "NO"), p >> rows
    printf "ferry rake: the C example on 3 loopback daemons (throughput over make)\t%.0f ms\tmake -j3 (local) %.0f ms\t%.2f\t>= 0.9x\t%s\t%.3f\n", c[1] * 1000, c[2] * 1000, c[2] / c[1], (c[2] / c[1] >= 0.9 ? "yes" : "NO"), c[2] / c[1] >> rows
  }' n="$ACTIONS" "$work/many.csv" "$work/c.csv"
