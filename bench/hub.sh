#!/usr/bin/env bash
# The peer hub's benchmark: broadcast fan-out (deliveries per second) with 100 and with 1000
# connected native peers, their clients in one process on the daemon's Unix socket, and the
# daemon's memory per idle hub member with 10 000 of them. Prints one table.
#
#   bash bench/hub.sh                # MESSAGES=10000 IDLE=10000 by default
#   MESSAGES=5000 IDLE=2000 bash bench/hub.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

MESSAGES=${MESSAGES:-10000}
IDLE=${IDLE:-10000}

build_ferry
cargo build --release --quiet -p ferry-client --example hub_load
LOAD=$PWD/target/release/examples/hub_load
setup_work
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# RSS of a process, in KiB.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

sock=$work/hub.sock
start_daemon "$sock" --state-dir "$work/state" --max-connections 30000 --max-handshakes 30000 \
  --hub-outbox 4096 -s
daemon_pid=${pids[-1]}

declare -A rate
for peers in 100 1000; do
  line=$("$LOAD" fanout "$sock" "$peers" "$MESSAGES")
  echo "fan-out, $peers peers: $line" >&2
  rate[$peers]=$(sed -n 's/.*deliveries_per_s=\([0-9]*\).*/\1/p' <<<"$line")
done

before=$(rss_kib "$daemon_pid")
# Each client holds two fds (the socket and a duplicate for passing fds): the idle peers come
# from processes of at most 4000 each, to stay within the open-files limit.
fifo=$work/hold
mkfifo "$fifo"
loaders=()
left=$IDLE
i=0
while [ "$left" -gt 0 ]; do
  n=$(( left < 4000 ? left : 4000 ))
  "$LOAD" idle "$sock" "$n" <"$fifo" >"$work/idle-$i.out" &
  loaders+=($!)
  left=$(( left - n ))
  i=$(( i + 1 ))
done
exec 3>"$fifo"
# Every join is announced to every member already there: n joins cost n*n/2 presence
# deliveries, which is most of this wait.
joining=$(date +%s)
for _ in $(seq 6000); do
  [ "$(cat "$work"/idle-*.out 2>/dev/null | grep -c ready)" = "$i" ] && break
  sleep 0.1
done
[ "$(cat "$work"/idle-*.out | grep -c ready)" = "$i" ] || { echo "the idle peers did not all join" >&2; exit 1; }
joined_in=$(( $(date +%s) - joining ))
# Idle: the daemon gives memory back once traffic has paused for a second.
sleep 3
after=$(rss_kib "$daemon_pid")
exec 3>&-
for pid in "${loaders[@]}"; do wait "$pid"; done
per_peer=$(( (after - before) * 1024 / IDLE ))

emit_row "hub broadcast, 100 members" "${rate[100]} deliveries/s" "" "" ">= 500000/s" "$([ "${rate[100]}" -ge 500000 ] && echo yes || echo NO)" ""
emit_row "hub broadcast, 1000 members" "${rate[1000]} deliveries/s" "" "" "" "" ""
emit_row "daemon memory per idle hub member ($IDLE joined)" "$per_peer bytes" "" "" "<= 32768 bytes" "$([ "$per_peer" -le 32768 ] && echo yes || echo NO)" ""

printf '\n| work | ferry | target |\n|---|---|---|\n'
printf '| broadcast fan-out, 100 peers | %s deliveries/s | >= 500000 |\n' "${rate[100]}"
printf '| broadcast fan-out, 1000 peers | %s deliveries/s | |\n' "${rate[1000]}"
printf '| daemon RSS, %s idle hub members (all joined in %s s) | %s KiB -> %s KiB: %s bytes per peer | <= 32768 bytes per peer |\n' \
  "$IDLE" "$joined_in" "$before" "$after" "$per_peer"
