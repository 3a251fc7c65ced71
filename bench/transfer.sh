#!/usr/bin/env bash
# Benchmark for remote daemons: `ferry put` of a file over TLS on loopback, against
# `scp` to a private sshd on loopback (key auth), and against raw loopback TCP (socat), in one
# hyperfine run. Prints a table with the ratios and the targets. Not a test.
#
#   bash bench/transfer.sh              # 1 GiB, 3 runs each
#   SIZE=256M RUNS=2 bash bench/transfer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v socat >/dev/null || need+=(socat)
command -v scp >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
need_packages "${need[@]}"

build_ferry
setup_work

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

head -c "$SIZE" /dev/urandom >"$work/payload"
mkdir -p "$work/dest"

# A private sshd on loopback: its own host key, one authorized key, no password logins.
ssh_port=$(free_port)
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"
cat >"$work/sshd_config" <<CONF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
PidFile $work/sshd.pid
CONF
mkdir -p /run/sshd 2>/dev/null || true
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
pids+=($!)

# The ferry daemon on TLS.
tls_port=$(free_port)
"$FERRY" tls init "$work/tls" >/dev/null
start_daemon "$work/ferry.sock" --state-dir "$work/state" \
  --listen "ferry:unix:$work/ferry.sock" --listen "ferry:tls:127.0.0.1:$tls_port" --tls-dir "$work/tls"

# Raw TCP: socat writes every connection's bytes into a file.
raw_port=$(free_port)
socat -b 262144 -u "TCP-LISTEN:$raw_port,bind=127.0.0.1,reuseaddr,fork" "OPEN:$work/dest/raw,creat,trunc" &
pids+=($!)

sleep 1
ssh_opts="-P $ssh_port -i $work/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
scp $ssh_opts "$work/authorized_keys" "$(id -un)@127.0.0.1:$work/dest/probe" # sshd answers

# Each run starts with its destination removed, so that no method is charged for keeping the
# previous copy's pages while it writes the next one (ferry writes a temporary file and renames
# it; scp and socat truncate in place). As root, each run also starts from the same page cache:
# the earlier runs' gigabytes written back and dropped, the payload read back in (on this VM a
# page cache full of earlier copies made any writer up to 2x slower, whichever ran later).
settle=":"
if [ "$(id -u)" = 0 ]; then
  settle="sync; echo 3 >/proc/sys/vm/drop_caches; cat $work/payload >/dev/null"
fi
hyperfine --runs "$RUNS" --export-csv "$work/transfer.csv" \
  --prepare "rm -f $work/dest/scp; $settle" \
  --prepare "rm -f $work/state/files/bench $work/state/files/*/bench; $settle" \
  --prepare "rm -f $work/dest/raw; $settle" \
  "scp $ssh_opts $work/payload $(id -un)@127.0.0.1:$work/dest/scp" \
  "$FERRY --host 127.0.0.1:$tls_port --tls-dir $work/tls put --quiet $work/payload bench" \
  "socat -b 262144 -u FILE:$work/payload TCP:127.0.0.1:$raw_port" >"$work/transfer.txt"

"$FERRY" --host "127.0.0.1:$tls_port" --tls-dir "$work/tls" put --quiet "$work/payload" bench
# ferry's copy is exact (in the file area's part of the client's principal).
copy=$(find "$work/state/files" -name bench -type f | head -1)
cmp "$work/payload" "$copy"

bytes=$(numfmt --from=iec "$SIZE")
awk -F, -v bytes="$bytes" -v size="$SIZE" -v rows="${BENCH_ROWS:-/dev/null}" '
  FNR == 1 { next }
  { name[FNR - 1] = $1; mean[FNR - 1] = $2 }
  END {
    printf "%-12s %12s %12s\n", "transfer", "mean", "MiB/s"
    split("scp ferry-put socat", label, " ")
    for (i = 1; i <= 3; i++) printf "%-12s %10.3f s %12.0f\n", label[i], mean[i], bytes / mean[i] / 1048576
    printf "\n%-36s %8s %10s %6s\n", "measure", "ratio", "target", "met"
    r = mean[1] / mean[2]
    printf "%-36s %7.2fx %10s %6s\n", "ferry put speed / scp", r, ">= 4x", (r >= 4 ? "yes" : "NO")
    t = mean[3] / mean[2]
    printf "%-36s %7.2fx %10s %6s\n", "ferry put speed / raw TCP (socat)", t, ">= 0.8x", (t >= 0.8 ? "yes" : "NO")
    mib = bytes / 1048576
    printf "ferry put over TLS, %s (speed over scp)\t%.0f MiB/s\tscp %.0f MiB/s\t%.2f\t>= 4x\t%s\t%.3f\n", size, mib / mean[2], mib / mean[1], r, (r >= 4 ? "yes" : "NO"), r >> rows
    printf "ferry put over TLS, %s (speed over raw TCP)\t%.0f MiB/s\tsocat %.0f MiB/s\t%.2f\t>= 0.8x\t%s\t%.3f\n", size, mib / mean[2], mib / mean[3], t, (t >= 0.8 ? "yes" : "NO"), t >> rows
  }' "$work/transfer.csv"
