#!/usr/bin/env bash
# Benchmarks behind docs/benchmarks.md. Run from the workspace root after
#   cargo build --release -p switchyard -p switchyard-loadgen
#
#   examples/loadgen/bench.sh idle 10000                # server RSS per idle connection
#   examples/loadgen/bench.sh fanout 1000 100           # 1,000 subscribers x 100 events/s, 20 s
#   examples/loadgen/bench.sh fanout-nchan 1000 100     # the same against nginx+nchan (must be running)
#   examples/loadgen/bench.sh replay 100000             # resume from Last-Event-ID: 0
#
# Each run starts its own server (embedded mode, a fresh temp data dir, port
# 18400) and stops it and every client it started on exit. JSON reports go to
# $OUT (default /tmp/switchyard-bench). BIN picks the binaries' directory
# (default target/release).
set -euo pipefail

BIN=${BIN:-target/release}
OUT=${OUT:-/tmp/switchyard-bench}
PUBLISH_SECS=${PUBLISH_SECS:-20}
TOKEN=bench-admin-token
URL=http://127.0.0.1:18400
NCHAN_URL=http://127.0.0.1:18080
TICK=$(getconf CLK_TCK)
mkdir -p "$OUT"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${DATA:-}" ]; then rm -rf "$DATA"; fi
}
trap cleanup EXIT

# start_server [ENV=VALUE ...]: sets SERVER_PID once it prints its address.
start_server() {
  DATA=$(mktemp -d)
  env SWITCHYARD_ADMIN_TOKEN=$TOKEN SWITCHYARD_LISTEN=127.0.0.1:18400 \
    SWITCHYARD_DATA_DIR="$DATA" SWITCHYARD_CLIENT_QUEUE=1024 "$@" \
    "$BIN/switchyard" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 100); do
    grep -q '^switchyard listening on' "$OUT/server.log" && return 0
    sleep 0.1
  done
  echo "server did not start:" >&2; cat "$OUT/server.log" >&2; exit 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# cpu_ticks PID...: "utime stime" summed over the processes, in clock ticks.
cpu_ticks() {
  local u=0 s=0 p
  for p in "$@"; do
    read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + pu)); s=$((s + ps))
  done
  echo "$u $s"
}

# machine_ticks: "busy idle" clock ticks of the whole machine (/proc/stat).
machine_ticks() {
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat
}

# wait_line FILE PATTERN: waits (up to 120 s) for a line in a client's log.
wait_line() {
  for _ in $(seq 1 1200); do
    grep -q "$2" "$1" && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

idle() { # clients
  local n=$1
  start_server
  sleep 1
  local before; before=$(rss_kib "$SERVER_PID")
  "$BIN/switchyard-loadgen" idle --url $URL --path '/events?tenant=demo&topic=idle:1' \
    --clients "$n" --ramp-per-sec 2000 >"$OUT/idle-$n.log" 2>&1 &
  local lg=$!; PIDS+=("$lg")
  wait_line "$OUT/idle-$n.log" 'ramp complete'
  sleep 3
  local after; after=$(rss_kib "$SERVER_PID")
  grep 'ramp complete' "$OUT/idle-$n.log"
  echo "idle $n: server RSS ${before} KiB -> ${after} KiB; $(python3 -c "print(f'{($after - $before) / $n:.2f}')") KiB per connection; loadgen RSS $(rss_kib $lg) KiB"
}

# fanout_run NAME SUB_URL SUB_PATH PUBLISH_ARGS... (server pids in SRV_PIDS)
fanout_run() {
  local name=$1 suburl=$2 path=$3; shift 3
  local n=$CLIENTS rate=$RATE
  local count=$((rate * PUBLISH_SECS))
  "$BIN/switchyard-loadgen" subscribe --url "$suburl" --path "$path" --clients "$n" \
    --ramp-per-sec 2000 --duration-secs $((PUBLISH_SECS + 30)) --expect-count "$count" \
    --report "$OUT/$name-sub.json" >"$OUT/$name-sub.log" 2>&1 &
  local sub=$!; PIDS+=("$sub")
  wait_line "$OUT/$name-sub.log" 'ramp complete'
  sleep 2
  # shellcheck disable=SC2207
  local softirq=($(pgrep ksoftirqd))
  local c0 k0 m0
  c0=$(cpu_ticks "${SRV_PIDS[@]}"); k0=$(cpu_ticks "${softirq[@]}"); m0=$(machine_ticks)
  "$BIN/switchyard-loadgen" "$@" --rate "$rate" --count "$count" \
    --duration-secs $((PUBLISH_SECS + 10)) --report "$OUT/$name-pub.json" >"$OUT/$name-pub.log" 2>&1
  wait "$sub" || true
  local c1 k1 m1
  c1=$(cpu_ticks "${SRV_PIDS[@]}"); k1=$(cpu_ticks "${softirq[@]}"); m1=$(machine_ticks)
  sed -n '/summary/,$p' "$OUT/$name-pub.log"
  sed -n '/summary/,$p' "$OUT/$name-sub.log"
  local events; events=$(json "$OUT/$name-sub.json" "['events']")
  python3 - "$c0" "$c1" "$k0" "$k1" "$m0" "$m1" "$TICK" "$events" "$name" <<'EOF'
import sys
(u0, s0), (u1, s1), (ku0, ks0), (ku1, ks1), (b0, i0), (b1, i1) = (
    map(int, a.split()) for a in sys.argv[1:7])
tick, events, name = int(sys.argv[7]), max(int(sys.argv[8]), 1), sys.argv[9]
user, sys_ = (u1 - u0) / tick, (s1 - s0) / tick
cpu = user + sys_
ksoft = (ku1 + ks1 - ku0 - ks0) / tick
busy, idle = (b1 - b0) / tick, (i1 - i0) / tick
us = lambda secs: secs * 1e6 / events
print(f"{name}: server CPU {cpu:.2f} s (user {user:.2f}, system {sys_:.2f}) for {events} deliveries"
      f" = {us(cpu):.2f} us/delivery (user {us(user):.2f}, system {us(sys_):.2f})")
print(f"{name}: ksoftirqd {ksoft:.2f} s = {us(ksoft):.2f} us/delivery; whole machine busy {busy:.2f} s,"
      f" idle {idle:.2f} s = {us(busy):.2f} us/delivery (server + clients + kernel)")
EOF
}

fanout() { # clients rate
  CLIENTS=$1 RATE=$2
  start_server
  SRV_PIDS=("$SERVER_PID")
  fanout_run "switchyard-$1x$2" $URL "/events?tenant=demo&topic=bench:$1x$2" \
    publish --url $URL --tenant demo --topic "bench:$1x$2" --token $TOKEN
}

fanout_nchan() { # clients rate (nchan started with /work/shared/peers/run.sh start nchan)
  CLIENTS=$1 RATE=$2
  local master; master=$(cat /tmp/sse-peers/nchan/nginx.pid)
  # shellcheck disable=SC2207
  SRV_PIDS=("$master" $(pgrep -P "$master"))
  # A fresh channel per run: nchan hands a new subscriber the newest stored message.
  # One publishing connection by default, so that arrival order is publish order
  # (nchan has no ids of its own to check order by); NCHAN_CONCURRENCY=4 keeps
  # the rate when nchan's publish latency grows (out-of-order then counts
  # publisher reordering, not nchan's).
  local ch="b$1x$2t$(date +%s)"
  fanout_run "nchan-$1x$2" $NCHAN_URL "/sub/$ch" publish-nchan --url $NCHAN_URL --channel "$ch" --concurrency "${NCHAN_CONCURRENCY:-1}"
}

replay() { # events
  local n=$1
  start_server SWITCHYARD_RETENTION_EVENTS=200000
  "$BIN/switchyard-loadgen" publish --url $URL --tenant demo --topic replay:1 --token $TOKEN \
    --rate 0 --count "$n" --concurrency 64 --report "$OUT/replay-pub.json" >"$OUT/replay-pub.log" 2>&1
  sed -n '/summary/,$p' "$OUT/replay-pub.log"
  local c0; c0=$(cpu_ticks "$SERVER_PID")
  "$BIN/switchyard-loadgen" subscribe --url $URL --path '/events?tenant=demo&topic=replay:1' \
    --clients 1 --last-event-id 0 --expect-count "$n" --duration-secs 120 \
    --report "$OUT/replay-sub.json" >"$OUT/replay-sub.log" 2>&1
  local c1; c1=$(cpu_ticks "$SERVER_PID")
  sed -n '/summary/,$p' "$OUT/replay-sub.log"
  echo "replay: server CPU (user system) ticks before: $c0, after: $c1 (CLK_TCK $TICK)"
}

case "${1:-}" in
  idle) idle "${2:?clients}" ;;
  fanout) fanout "${2:?clients}" "${3:?events/s}" ;;
  fanout-nchan) fanout_nchan "${2:?clients}" "${3:?events/s}" ;;
  replay) replay "${2:-100000}" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
