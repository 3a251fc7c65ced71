# Shared by the bench scripts (sourced, not run).

# Installs the Debian packages named, with apt-get (as root, or through sudo).
need_packages() {
  [ $# -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

# Rows for bench/run's one table: when $BENCH_ROWS names a file, each script appends a row per
# figure, tab-separated: work, ferry's figure, the peers' figures, the ratio (a number, in the
# terms its target is stated in, or empty), the target, whether it is met (yes, NO, or empty),
# and a score for the chart (ferry against the peer, higher is better; or empty).
# emit_row WORK FERRY PEERS RATIO TARGET MET [SCORE]
emit_row() {
  [ -n "${BENCH_ROWS:-}" ] || return 0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" >>"$BENCH_ROWS"
}

# Installs hyperfine if this machine lacks it.
need_hyperfine() {
  command -v hyperfine >/dev/null || need_packages hyperfine
}

# Waits (up to 5 s) for a Unix socket to appear.
wait_for_socket() {
  for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "no socket at $1" >&2
  return 1
}

# Builds the release binary; sets FERRY to it.
build_ferry() {
  cargo build --release --quiet -p ferry
  FERRY=$PWD/target/release/ferry
}

# Makes a scratch directory ($work) and a list of processes ($pids); at exit the processes
# are stopped (TERM) and the directory removed.
setup_work() {
  work=$(mktemp -d)
  pids=()
  trap cleanup_work EXIT
}

cleanup_work() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  # Anything else that runs from the scratch directory (a daemon a client started by itself,
  # a job): stopped too, so that nothing outlives the benchmark.
  pkill -TERM -f "$work" 2>/dev/null || true
  rm -rf "$work"
}

# start_daemon SOCKET [ARGS...]: a ferry daemon in the background on SOCKET (its log in
# $work/daemon-NAME.log), stopped at exit; returns once it listens.
start_daemon() {
  local socket=$1
  shift
  "$FERRY" daemon --socket "$socket" "$@" 2>"$work/daemon-$(basename "$socket" .sock).log" &
  pids+=($!)
  wait_for_socket "$socket"
}
