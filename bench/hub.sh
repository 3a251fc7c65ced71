#!/usr/bin/env bash
# The peer hub's benchmark: broadcast fan-out (deliveries per second) with 100 and with 1000
# connected native peers, their clients in one process on the daemon's Unix socket, and the
# daemon's memory per idle hub member with 10 000 of them. Then one hub across three daemons
# on Debian's nats-server (JetStream; installed when missing): broadcast fan-out with 300
# members spread over them, one sender on each, and the time one message takes to reach a
# member of another daemon against one of the sender's own (and on a daemon outside any
# cluster). Prints one table.
#
#   bash bench/hub.sh                # MESSAGES=10000 IDLE=10000 CLUSTER_MESSAGES=6000 ROUNDS=2000
#   MESSAGES=5000 IDLE=2000 bash bench/hub.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

MESSAGES=${MESSAGES:-10000}
IDLE=${IDLE:-10000}
CLUSTER_MESSAGES=${CLUSTER_MESSAGES:-6000}
ROUNDS=${ROUNDS:-2000}

command -v nats-server >/dev/null || need_packages nats-server

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

# One hub across three daemons on one nats-server (JetStream on a scratch store, a free port).
nats_log=$work/nats.log
nats-server -a 127.0.0.1 -p -1 -js -sd "$work/nats-store" 2>"$nats_log" &
pids+=($!)
for _ in $(seq 200); do grep -q "Server is ready" "$nats_log" 2>/dev/null && break; sleep 0.05; done
nats_port=$(sed -n 's/.*Listening for client connections on 127.0.0.1:\([0-9]*\).*/\1/p' "$nats_log" | head -1)
[ -n "$nats_port" ] || { echo "nats-server did not start: $(cat "$nats_log")" >&2; exit 1; }
cluster_sockets=()
for node in a b c; do
  start_daemon "$work/node-$node.sock" --state-dir "$work/state-$node" --hub-outbox 4096 \
    --max-connections 30000 --max-handshakes 30000 -s \
    --hub-cluster "nats://127.0.0.1:$nats_port" --hub-node "$node"
  cluster_sockets+=("$work/node-$node.sock")
done
joined=$(IFS=,; echo "${cluster_sockets[*]}")
line=$("$LOAD" fanout "$joined" 300 "$CLUSTER_MESSAGES")
echo "fan-out, 3 daemons, 300 peers: $line" >&2
cluster_rate=$(sed -n 's/.*deliveries_per_s=\([0-9]*\).*/\1/p' <<<"$line")
lat=$("$LOAD" latency "${cluster_sockets[0]}" "${cluster_sockets[1]}" "$ROUNDS")
echo "latency, cluster: $lat" >&2
# A fresh daemon outside any cluster (the first one still holds the places of the members
# that left it).
start_daemon "$work/solo.sock" --state-dir "$work/state-solo" -s
solo=$("$LOAD" latency "$work/solo.sock" "$work/solo.sock" "$ROUNDS")
echo "latency, one daemon outside a cluster: $solo" >&2
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
across=$(field across_p50_ms "$lat")
same=$(field same_p50_ms "$lat")
alone=$(field same_p50_ms "$solo")
emit_row "hub cluster broadcast, 3 daemons, 300 members" "$cluster_rate deliveries/s" "" "" ">= 300000/s" "$([ "$cluster_rate" -ge 300000 ] && echo yes || echo NO)" ""
emit_row "hub cluster, one message to another daemon's member (median)" "$across ms" "same daemon $same ms; no cluster $alone ms" "" "< 2 ms" "$(awk -v t="$across" 'BEGIN { print (t < 2 ? "yes" : "NO") }')" ""
printf '| broadcast fan-out, 3 daemons on NATS, 300 peers | %s deliveries/s | >= 300000 |\n' "$cluster_rate"
printf '| one message across daemons, p50 (p99) | %s ms (%s ms); same daemon %s ms (%s ms); no cluster %s ms (%s ms) | < 2 ms at the median |\n' \
  "$across" "$(field across_p99_ms "$lat")" "$same" "$(field same_p99_ms "$lat")" "$alone" "$(field same_p99_ms "$solo")"
