#!/usr/bin/env bash
# Benchmarks behind docs/benchmarks.md. Run from the workspace root after
#   cargo build --release -p switchyard -p switchyard-loadgen
#
#   examples/loadgen/bench.sh idle 10000                # server RSS per idle connection
#   examples/loadgen/bench.sh idle-tls 5000 h1          # ... over TLS, one HTTP/1.1 connection per stream
#   examples/loadgen/bench.sh idle-tls 5000 h2 200      # ... over TLS and HTTP/2, 200 streams per connection
#                                                       # (a certificate made with openssl into $OUT;
#                                                       # port $TLS_PORT, default 18443; RAMP streams/s,
#                                                       # default 2000)
#   examples/loadgen/bench.sh fanout 1000 100           # 1,000 subscribers x 100 events/s, 20 s (the
#                                                       # example event filter active; EXAMPLE_PLUGINS=false: none)
#   examples/loadgen/bench.sh nchan start|stop          # nginx+nchan with examples/loadgen/nchan/nginx.conf
#                                                       # (apt-get install nginx libnginx-mod-nchan)
#   examples/loadgen/bench.sh fanout-nchan 1000 100     # the same against nginx+nchan (must be running)
#   examples/loadgen/bench.sh fanout-floor 1000 100     # the same against `switchyard-loadgen floor`,
#                                                       # one send per delivery and nothing else
#                                                       # (NODELAY=0: Nagle's algorithm left on)
#   examples/loadgen/bench.sh replay 100000             # resume from Last-Event-ID: 0 (the example
#                                                       # event filter active; EXAMPLE_PLUGINS=false: none)
#   examples/loadgen/bench.sh messages embedded 1000    # 1,000 user streams, 1,000 messages/s, 20 s
#   examples/loadgen/bench.sh messages cluster 100      # the same on two cluster nodes
#   examples/loadgen/bench.sh bids embedded max 1       # bids as fast as they are taken, one product
#   examples/loadgen/bench.sh bids cluster max 100      # ... spread over 100 products, two nodes
#   examples/loadgen/bench.sh bids embedded 1000 1      # 1,000 bids/s: POST -> bid.accepted latency
#   examples/loadgen/bench.sh plugins 10000 10          # plugin per-call cost per slot; the event
#                                                       # filter with 10 shapes at 10,000 events/s on
#                                                       # 10 streams, 5 filter swaps by file meanwhile
#   examples/loadgen/bench.sh plugins-cluster 5         # 5 validator uploads on one cluster node: time
#                                                       # until the other node has each one active
#   examples/loadgen/bench.sh plugins-lang              # per-call p50/p99 of every slot in Rust, JavaScript
#                                                       # and Python; a JavaScript upload -> active on the
#                                                       # node and on a second cluster node, /health while
#                                                       # it compiles; restart -> active from the code cache
#   examples/loadgen/bench.sh fanout-cluster 3 1000 100 # 3 cluster nodes, 1,000 subscribers on each, 100 events/s
#                                                       # published on the first: per-node latency, the nodes',
#                                                       # Redis' and Postgres' CPU, Redis bytes per event per node
#   examples/loadgen/bench.sh bus-tenants 3 all 300      # 3 cluster nodes, a tenant per node published at 100/s
#                                                       # each; `all`: one bus shard, every node holds streams of
#                                                       # every tenant (SUBS, default 100, per node); `spread`:
#                                                       # a shard per tenant, node i holds streams of tenant i only:
#                                                       # Redis bytes out and CPU per event, nodes' CPU per delivery
#   examples/loadgen/bench.sh redis-bus streams 6 5000   # Redis alone: 5,000 entries/s of PAYLOAD (400) bytes
#                                                       # appended and read by 6 readers (XADD/XREAD BLOCK, or
#                                                       # pubsub: PUBLISH/SUBSCRIBE): Redis CPU per delivery
#   examples/loadgen/bench.sh move 100000               # two cluster nodes on two databases (the second,
#                                                       # bench_sy_<pid>_b, on the same Postgres): tenant demo with
#                                                       # 100,000 events moved from main to b while RATE (200)
#                                                       # events/s are published to it and 10 streams on the
#                                                       # second node read it: the writes' pause, publish
#                                                       # latency, and the streams' gaps and repeats
#   examples/loadgen/bench.sh idle-cluster 10000        # RSS per idle connection on a cluster node
#   examples/loadgen/bench.sh replay-cluster 100000     # resume from Last-Event-ID: 0 on the second cluster node
#   examples/loadgen/bench.sh isolation on|off          # tenant demo's fan-out (1,000 x 100/s) while tenant
#                                                       # slowa's 10 streams run a filter of about 5 ms a call
#                                                       # (on) or no filter (off)
#   examples/loadgen/bench.sh publish embedded 100 1    # publish throughput: POST /api/events (batch 1) or
#                                                       # /api/events/batch of 100 events, as fast as taken for
#                                                       # BATCH_SECS (default 10) on CONCURRENCY (64) connections,
#                                                       # with an Idempotency-Key per request (1) or without (0)
#   examples/loadgen/bench.sh publish cluster 10 0      # ... on the first of two cluster nodes
#   examples/loadgen/bench.sh storm embedded 10000 on   # a reconnect storm: 10,000 signed-in streams (4 per
#                                                       # user) open on one topic at RAMP/s (default 5000), stay
#                                                       # 2 s and close; server CPU (and in cluster mode Redis
#                                                       # commands) from the first open until presence has
#                                                       # settled, less an idle period as long; `on`: occupancy
#                                                       # and members kept for the topic, `off`: no presence
#   examples/loadgen/bench.sh storm cluster 10000 on    # ... on the first of two cluster nodes
#   examples/loadgen/bench.sh backlog stream embedded 100000
#                                                       # a source drains a backlog of 100,000 seed-format
#                                                       # messages, released at once: events/s and server CPU
#                                                       # per event until every one is published. Kinds: stream
#                                                       # (XADD event/payload), list (LPUSH bids on 100 products:
#                                                       # until each is decided), outbox (one INSERT of 100,000
#                                                       # rows), jetstream (published meanwhile, acknowledged);
#                                                       # the Redis feeds are a redis-server of their own
#   examples/loadgen/bench.sh backlog stream cluster 100000 # ... on two cluster nodes (one reads, by lease)
#
# Each run starts its own server (embedded mode, a fresh temp data dir, port
# 18400) and stops it and every client it started on exit. `cluster` starts
# NODES nodes (default two: ports 18400, 18401, ...) on a private redis-server (port 18479,
# no persistence) and a fresh Postgres database bench_sy_<pid> on
# $PGHOST:5432 (user postgres), dropped at exit. JSON reports go to
# $OUT (default /tmp/switchyard-bench). BIN picks the binaries' directory
# (default target/release). Before messages and bids runs the script waits
# (up to QUIET_WAIT seconds, default 600) for the 1-minute load average to
# drop below 1.0, and prints it. `plugins` reads the example components from
# $PLUGINS (default target/plugins/wasm32-wasip2/release, where the build puts
# them) and the small inputs in examples/loadgen/plugins/.
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
SUB_ARGS=()
PGHOST=${PGHOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-18479}
JWT_SECRET=bench-jwt-secret-0123456789abcdef
cleanup() {
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${DATA:-}" ]; then rm -rf "$DATA"; fi
  if [ -n "${APP_DB:-}" ]; then
    psql -h "$PGHOST" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $APP_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ -n "${NATS_STREAM:-}" ]; then nats_js delete "$NATS_STREAM" >/dev/null 2>&1 || true; fi
  if [ -n "${PGDB:-}" ]; then
    psql -h "$PGHOST" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" >/dev/null 2>&1 || true
    psql -h "$PGHOST" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS ${PGDB}_b WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# start_server [ENV=VALUE ...]: sets SERVER_PID once it prints its address.
start_server() {
  DATA=$(mktemp -d)
  env SWITCHYARD_ADMIN_TOKEN=$TOKEN SWITCHYARD_LISTEN=127.0.0.1:18400 \
    SWITCHYARD_DATA_DIR="$DATA" SWITCHYARD_CLIENT_QUEUE=1024 SWITCHYARD_MAX_STREAMS_PER_ADDRESS=1000000 "$@" \
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
  local before slab0; before=$(rss_kib "$SERVER_PID"); slab0=$(slab_kib)
  "$BIN/switchyard-loadgen" idle --url $URL --path '/events?tenant=demo&topic=idle:1' \
    --clients "$n" --ramp-per-sec 2000 >"$OUT/idle-$n.log" 2>&1 &
  local lg=$!; PIDS+=("$lg")
  wait_line "$OUT/idle-$n.log" 'ramp complete'
  sleep 3
  local after slab1; after=$(rss_kib "$SERVER_PID"); slab1=$(slab_kib)
  grep 'ramp complete' "$OUT/idle-$n.log"
  echo "idle $n: server RSS ${before} KiB -> ${after} KiB; $(python3 -c "print(f'{($after - $before) / $n:.2f}')") KiB per connection; loadgen RSS $(rss_kib $lg) KiB"
  kernel_per_conn "$slab0" "$slab1" "$n"
}

# slab_kib: the kernel's slab memory (sockets, their files and inodes), KiB.
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

# kernel_per_conn SLAB0 SLAB1 N: the kernel's memory per connection, from the
# slab growth over N connections whose two ends are both on this machine
# (so halved: an approximation, other processes' allocations included).
kernel_per_conn() {
  echo "kernel slab $1 KiB -> $2 KiB: about $(python3 -c "print(f'{($2 - $1) / $3 / 2:.2f}')") KiB per connection end"
}

idle_tls() { # clients h1|h2 [streams per connection]
  local n=$1 proto=$2 per=${3:-200}
  local certs="$OUT/tls"
  mkdir -p "$certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj '/CN=bench CA' -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=localhost' \
    -keyout "$certs/key.pem" -out "$certs/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$certs/ext"
  openssl x509 -req -in "$certs/leaf.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
    -set_serial 1 -days 2 -extfile "$certs/ext" -out "$certs/cert.pem" 2>/dev/null
  local port=${TLS_PORT:-18443}
  start_server SWITCHYARD_TLS_CERT="$certs/cert.pem" SWITCHYARD_TLS_KEY="$certs/key.pem" \
    SWITCHYARD_LISTEN=127.0.0.1:$port
  sleep 1
  local before; before=$(rss_kib "$SERVER_PID")
  local extra=()
  if [ "$proto" = h2 ]; then extra=(--h2-streams "$per"); fi
  "$BIN/switchyard-loadgen" idle-tls --url https://127.0.0.1:$port --ca "$certs/ca.pem" \
    --path '/events?tenant=demo&topic=idle:1' --clients "$n" --ramp-per-sec "${RAMP:-2000}" "${extra[@]}" \
    >"$OUT/idle-tls-$proto-$n.log" 2>&1 &
  local lg=$!; PIDS+=("$lg")
  wait_line "$OUT/idle-tls-$proto-$n.log" 'ramp complete'
  sleep 3
  local after; after=$(rss_kib "$SERVER_PID")
  grep 'ramp complete' "$OUT/idle-tls-$proto-$n.log"
  local open; open=$(sed -n 's/^ramp complete: \([0-9]*\) established.*/\1/p' "$OUT/idle-tls-$proto-$n.log")
  echo "idle-tls $proto $n: server RSS ${before} KiB -> ${after} KiB; $(python3 -c "print(f'{($after - $before) / max($open, 1):.2f}')") KiB per open stream ($open); loadgen RSS $(rss_kib $lg) KiB"
}

# fanout_run NAME SUB_URL SUB_PATH PUBLISH_ARGS... (server pids in SRV_PIDS)
fanout_run() {
  local name=$1 suburl=$2 path=$3; shift 3
  local n=$CLIENTS rate=$RATE
  local count=$((rate * PUBLISH_SECS))
  "$BIN/switchyard-loadgen" subscribe --url "$suburl" --path "$path" --clients "$n" \
    --ramp-per-sec 2000 --duration-secs $((PUBLISH_SECS + 30)) --expect-count "$count" \
    "${SUB_ARGS[@]}" --report "$OUT/$name-sub.json" >"$OUT/$name-sub.log" 2>&1 &
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

fanout() { # clients rate (EXAMPLE_PLUGINS=false: without the example event filter)
  CLIENTS=$1 RATE=$2
  start_server SWITCHYARD_EXAMPLE_PLUGINS="${EXAMPLE_PLUGINS:-true}"
  SRV_PIDS=("$SERVER_PID")
  fanout_run "switchyard-$1x$2" $URL "/events?tenant=demo&topic=bench:$1x$2" \
    publish --url $URL --tenant demo --topic "bench:$1x$2" --token $TOKEN
}

NCHAN_RUN=${NCHAN_RUN:-/tmp/switchyard-nchan}

nchan() { # start|stop: nginx+nchan on 127.0.0.1:18080, prefix $NCHAN_RUN
  local conf; conf="$(cd "$(dirname "$0")" && pwd)/nchan/nginx.conf"
  case "$1" in
    start)
      mkdir -p "$NCHAN_RUN"
      nginx -t -q -p "$NCHAN_RUN/" -c "$conf"
      nginx -p "$NCHAN_RUN/" -c "$conf"
      for _ in $(seq 1 100); do
        ss -Hltn 'sport = :18080' | grep -q . && break
        sleep 0.1
      done
      echo "nchan started, master pid $(cat "$NCHAN_RUN/nginx.pid")" ;;
    stop)
      [ -f "$NCHAN_RUN/nginx.pid" ] && kill -TERM "$(cat "$NCHAN_RUN/nginx.pid")" 2>/dev/null || true
      rm -f "$NCHAN_RUN/nginx.pid" ;;
    *) echo "nchan start|stop" >&2; return 2 ;;
  esac
}

fanout_nchan() { # clients rate (nchan started with `bench.sh nchan start`)
  CLIENTS=$1 RATE=$2
  local master; master=$(cat "$NCHAN_RUN/nginx.pid")
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

replay() { # events (EXAMPLE_PLUGINS=false: without the example event filter)
  local n=$1
  start_server SWITCHYARD_RETENTION_EVENTS=200000 SWITCHYARD_EXAMPLE_PLUGINS="${EXAMPLE_PLUGINS:-true}"
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

# wait_quiet: waits (up to QUIET_WAIT s) for a 1-minute load average below 1.0.
wait_quiet() {
  local waited=0 limit=${QUIET_WAIT:-600}
  while awk '{exit !($1 >= 1.0)}' /proc/loadavg && [ "$waited" -lt "$limit" ]; do
    sleep 10; waited=$((waited + 10))
  done
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s)"
}

# wait_ready LOG PORT: waits for a node's "listening" line, then for /ready.
wait_ready() {
  for _ in $(seq 1 300); do
    if grep -q '^switchyard listening on' "$1" && curl -sf "http://127.0.0.1:$2/ready" >/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "node on port $2 did not become ready:" >&2; cat "$1" >&2; exit 1
}

# start_mode embedded|cluster: starts the server(s); sets URLS and SRV_PIDS.
start_mode() {
  case "$1" in
    embedded)
      start_server SWITCHYARD_JWT_SECRET=$JWT_SECRET
      SRV_PIDS=("$SERVER_PID")
      URLS=$URL
      ;;
    cluster)
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no >"$OUT/redis.log" 2>&1 &
      REDIS_PID=$!
      PIDS+=("$REDIS_PID")
      for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
      PGDB=bench_sy_$$
      psql -h "$PGHOST" -U postgres -d postgres -qc "CREATE DATABASE $PGDB" >/dev/null
      local dbs=""
      if [ "${SECOND_DB:-0}" = 1 ]; then
        psql -h "$PGHOST" -U postgres -d postgres -qc "CREATE DATABASE ${PGDB}_b" >/dev/null
        dbs="b=postgres://postgres@$PGHOST:5432/${PGDB}_b"
      fi
      SRV_PIDS=()
      local port ports=() i
      for i in $(seq 0 $((${NODES:-2} - 1))); do ports+=($((18400 + i))); done
      for port in "${ports[@]}"; do
        env SWITCHYARD_ADMIN_TOKEN=$TOKEN SWITCHYARD_LISTEN=127.0.0.1:$port \
          SWITCHYARD_DATA_DIR="$(mktemp -d)" SWITCHYARD_CLIENT_QUEUE=1024 SWITCHYARD_MAX_STREAMS_PER_ADDRESS=1000000 \
          SWITCHYARD_JWT_SECRET=$JWT_SECRET REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
          DATABASE_URL=postgres://postgres@$PGHOST:5432/$PGDB SWITCHYARD_BUS_SHARDS="${SHARDS:-1}" \
          SWITCHYARD_DATABASES="$dbs" SWITCHYARD_RETENTION_EVENTS="${RETENTION_EVENTS:-100000}" \
          "$BIN/switchyard" >"$OUT/server-$port.log" 2>&1 &
        PIDS+=("$!"); SRV_PIDS+=("$!")
        # The first node applies the migrations before the second starts.
        wait_ready "$OUT/server-$port.log" "$port"
      done
      curl -sf -X POST "$URL/admin/tenants" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d '{"slug":"demo","name":"Demo"}' >/dev/null
      URLS=$(printf 'http://127.0.0.1:%s,' "${ports[@]}"); URLS=${URLS%,}
      ;;
    *) echo "mode must be embedded or cluster" >&2; exit 2 ;;
  esac
}

# server_cpu NAME T0: prints the servers' CPU since the ticks in T0.
server_cpu() {
  local c1; c1=$(cpu_ticks "${SRV_PIDS[@]}")
  python3 - "$2" "$c1" "$TICK" "$1" <<'EOF'
import sys
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[1:3])
tick, name = int(sys.argv[3]), sys.argv[4]
print(f"{name}: server CPU {(u1 - u0 + s1 - s0) / tick:.2f} s (user {(u1 - u0) / tick:.2f}, system {(s1 - s0) / tick:.2f})")
EOF
}

messages() { # embedded|cluster messages/s
  local mode=$1 rate=$2 users=${USERS:-1000}
  local name="messages-$mode-$rate"
  wait_quiet | tee "$OUT/$name.load"
  start_mode "$mode"
  local tokens="$OUT/$name-tokens.txt" i
  : >"$tokens"
  for i in $(seq 0 $((users - 1))); do
    echo "u$i $(SWITCHYARD_JWT_SECRET=$JWT_SECRET "$BIN/switchyard" token --sub "u$i" --tenant demo --ttl 1h)" >>"$tokens"
  done
  local c0; c0=$(cpu_ticks "${SRV_PIDS[@]}")
  "$BIN/switchyard-loadgen" messages --url "$URLS" --tokens "$tokens" --token $TOKEN \
    --tenant demo --rate "$rate" --duration-secs "$PUBLISH_SECS" --concurrency "${CONCURRENCY:-32}" \
    --report "$OUT/$name.json" >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; exit 1; }
  sed -n '/summary/,$p' "$OUT/$name.log"
  server_cpu "$name" "$c0"
  cat "$OUT/$name.load"
}

bids() { # embedded|cluster bids/s|max products
  local mode=$1 rate=$2 products=$3
  local name="bids-$mode-$rate-$products"
  local args=(--rate 0 --count "${BIDS:-20000}" --concurrency "${CONCURRENCY:-64}")
  if [ "$rate" != max ]; then
    args=(--rate "$rate" --duration-secs "$PUBLISH_SECS" --concurrency "${CONCURRENCY:-32}")
  fi
  wait_quiet | tee "$OUT/$name.load"
  start_mode "$mode"
  local c0; c0=$(cpu_ticks "${SRV_PIDS[@]}")
  "$BIN/switchyard-loadgen" bids --url "$URLS" --token $TOKEN --tenant demo \
    --products "$products" "${args[@]}" \
    --report "$OUT/$name.json" >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; exit 1; }
  sed -n '/summary/,$p' "$OUT/$name.log"
  server_cpu "$name" "$c0"
  local port
  for port in 18400 18401; do
    curl -sf "http://127.0.0.1:$port/metrics" -H "Authorization: Bearer $TOKEN" 2>/dev/null |
      grep -E '^switchyard_(bids_submitted_total|bid_decisions_(accepted|rejected)_total|bids_queued) ' |
      sed "s/^/:$port /" || true
  done
  cat "$OUT/$name.load"
}

# plugin_variant SRC DST N: SRC with a custom section appended (same code, a
# new content hash: a new version); prints the hash.
plugin_variant() {
  python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
name = b"switchyard-bench"
body = bytes([len(name)]) + name + n.to_bytes(4, "little")
data = open(src, "rb").read() + bytes([0, len(body)]) + body
open(dst, "wb").write(data)
print(hashlib.sha256(data).hexdigest())
EOF
}

# swap_filters DIR N LOG: N times, renames a new event-filter version into the
# plugins dir and times file write -> active (GET /admin/plugins shows it).
swap_filters() {
  local dir=$1 n=$2 log=$3 i hash t0 t1
  for i in $(seq 1 "$n"); do
    hash=$(plugin_variant "$PLUGINS/event_filter.wasm" "$dir/.event-filter.wasm.tmp" "$i")
    t0=$(date +%s%N)
    mv "$dir/.event-filter.wasm.tmp" "$dir/event-filter.wasm"
    until curl -sf "$URL/admin/plugins" -H "Authorization: Bearer $TOKEN" |
      grep -q "\"version\":\"$hash\""; do
      sleep 0.005
    done
    t1=$(date +%s%N)
    echo "swap $i: ${hash:0:12} active after $(( (t1 - t0) / 1000000 )) ms" | tee -a "$log"
    sleep 2
  done
}

# filter_stats: "calls p50_us p99_us errors" of the default event-filter slot.
filter_stats() {
  curl -sf "$URL/admin/plugins" -H "Authorization: Bearer $TOKEN" | python3 -c '
import json, sys
s = [x for x in json.load(sys.stdin)["slots"] if x["slot"] == "event-filter" and x["tenant"] is None][0]
print(s["calls"], s["latency_us"]["p50"], s["latency_us"]["p99"], sum(s["errors"].values()))'
}

plugins() { # events/s streams
  local rate=${1:-10000} clients=${2:-10} shapes=10
  PLUGINS=${PLUGINS:-target/plugins/wasm32-wasip2/release}
  wait_quiet | tee "$OUT/plugins.load"
  echo "== per-call cost, in process (switchyard plugin bench, small inputs) =="
  local slot
  for slot in bid-validator notification-shaper event-filter; do
    "$BIN/switchyard" plugin bench "$PLUGINS/${slot//-/_}.wasm" \
      "examples/loadgen/plugins/$slot.json" --calls "${CALLS:-200000}" | tee "$OUT/plugins-bench-$slot.txt"
  done
  echo "== event filter: $shapes shapes, $clients streams, $rate events/s for ${PUBLISH_SECS}s, 5 swaps =="
  local pdir; pdir=$(mktemp -d)
  start_server SWITCHYARD_PLUGINS_DIR="$pdir"
  SRV_PIDS=("$SERVER_PID")
  # The filter under test, active before the run (the bundled one otherwise).
  curl -sf -o /dev/null -X PUT "$URL/admin/plugins/event-filter?wait=true" \
    -H "Authorization: Bearer $TOKEN" --data-binary "@$PLUGINS/event_filter.wasm"
  local calls0 calls1 errors0 errors1 p50 p99
  read -r calls0 _ _ errors0 < <(filter_stats)
  : >"$OUT/plugins-swaps.log"
  # The swaps start once the publisher runs (ramp, 2 s, a margin).
  (sleep 6; swap_filters "$pdir" "${SWAPS:-5}" "$OUT/plugins-swaps.log") &
  local swapper=$!; PIDS+=("$swapper")
  SUB_ARGS=(--shapes "$shapes")
  CLIENTS=$clients RATE=$rate fanout_run "plugins-filter-$rate" $URL \
    "/events?tenant=demo&topic=pf:1&min_amount={shape}" \
    publish --url $URL --tenant demo --topic pf:1 --token $TOKEN --concurrency "${CONCURRENCY:-64}"
  wait "$swapper" || true
  read -r calls1 p50 p99 errors1 < <(filter_stats)
  python3 - "$OUT/plugins-filter-$rate-sub.json" "$OUT/plugins-filter-$rate-pub.json" \
    "$calls0" "$calls1" "$p50" "$p99" "$errors0" "$errors1" "$OUT/plugins-swaps.log" <<'EOF'
import json, re, sys
sub, pub = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
calls = int(sys.argv[4]) - int(sys.argv[3])
p50, p99, errors = sys.argv[5], sys.argv[6], int(sys.argv[8]) - int(sys.argv[7])
published = pub["ok"]
print(f"published {published} events ({pub['achieved_rate']:.0f}/s achieved, {pub['missed_ticks']} missed ticks); "
      f"POST latency p50 {pub['latency'].get('p50_ms', '?')} ms; deliveries {sub['events']}; gaps {sub['gaps']}, "
      f"duplicates {sub['duplicates']}, out of order {sub['out_of_order']}")
print(f"filter calls {calls} = {calls / max(published, 1):.2f} per event; failed calls {errors}; "
      f"server-side per call p50 <= {p50} us, p99 <= {p99} us (histogram bucket bounds)")
print(f"connections: {sub['established']} established, {sub['closed_by_server']} closed by the server, "
      f"{sub['open_at_end']} open at end, {sub['failed']} failed; errors {sub['errors']}")
ms = [int(m) for m in re.findall(r"active after (\d+) ms", open(sys.argv[9]).read())]
if ms:
    print(f"swaps: {len(ms)}, file write -> active {min(ms)}-{max(ms)} ms (median {sorted(ms)[len(ms) // 2]} ms)")
EOF
  rm -rf "$pdir"
  cat "$OUT/plugins.load"
}

plugins_cluster() { # swaps
  local n=${1:-5} i hash t0 t1
  PLUGINS=${PLUGINS:-target/plugins/wasm32-wasip2/release}
  wait_quiet | tee "$OUT/plugins-cluster.load"
  start_mode cluster
  : >"$OUT/plugins-cluster.log"
  for i in $(seq 1 "$n"); do
    hash=$(plugin_variant "$PLUGINS/bid_validator.wasm" "$OUT/bid-validator-$i.wasm" "$i")
    t0=$(date +%s%N)
    curl -sf -X PUT "$URL/admin/plugins/bid-validator" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/wasm' --data-binary "@$OUT/bid-validator-$i.wasm" >/dev/null
    t1=$(date +%s%N)
    until curl -sf "http://127.0.0.1:18401/admin/plugins" -H "Authorization: Bearer $TOKEN" |
      grep -q "\"version\":\"$hash\""; do
      sleep 0.005
    done
    t2=$(date +%s%N)
    echo "swap $i: ${hash:0:12} PUT on :18400 answered after $(( (t1 - t0) / 1000000 )) ms, active on :18401 after $(( (t2 - t0) / 1000000 )) ms" |
      tee -a "$OUT/plugins-cluster.log"
    rm -f "$OUT/bid-validator-$i.wasm"
  done
  cat "$OUT/plugins-cluster.load"
}

# plugin_is_active URL HASH: whether GET /admin/plugins shows HASH active.
plugin_is_active() {
  curl -sf "$1/admin/plugins" -H "Authorization: Bearer $TOKEN" | python3 -c '
import json, sys
want = sys.argv[1]
sys.exit(0 if any((s.get("active") or {}).get("version") == want for s in json.load(sys.stdin)["slots"]) else 1)' "$2"
}

# plugin_active URL HASH: waits until GET /admin/plugins shows HASH active.
plugin_active() {
  until plugin_is_active "$1" "$2"; do sleep 0.01; done
}

plugins_lang() {
  local rust=target/plugins/wasm32-wasip2/release lang dir slot calls
  wait_quiet | tee "$OUT/plugins-lang.load"
  echo "== per-call cost by language (switchyard plugin bench, small inputs) =="
  for lang in ${LANGS-rust javascript python}; do
    case $lang in
      rust) dir=$rust; calls=${CALLS:-200000} ;;
      javascript) dir=target/plugins-lang/js; calls=${LANG_CALLS:-5000} ;;
      python) dir=target/plugins-lang/python; calls=${LANG_CALLS:-5000} ;;
    esac
    for slot in bid-validator notification-shaper event-filter; do
      echo "-- $lang $slot"
      "$BIN/switchyard" plugin bench "$dir/${slot//-/_}.wasm" \
        "examples/loadgen/plugins/$slot.json" --calls "$calls" | tee "$OUT/plugins-lang-$lang-$slot.txt"
    done
  done
  echo "== a JavaScript event filter uploaded to one of two cluster nodes (each compiles it once) =="
  start_mode cluster
  local wasm=$OUT/js-filter.wasm hash t0 t1 t2 t3 worst=0 ms
  hash=$(plugin_variant target/plugins-lang/js/event_filter.wasm "$wasm" "$$")
  t0=$(date +%s%N)
  curl -sf -o "$OUT/js-upload.json" -w '%{http_code} in %{time_total} s' -X PUT "$URL/admin/plugins/event-filter" \
    -H "Authorization: Bearer $TOKEN" --data-binary "@$wasm"; echo " (PUT answer)"
  t1=$(date +%s%N)
  # /health on the uploading node while the compile runs.
  while ! plugin_is_active "$URL" "$hash"; do
    ms=$(curl -s -o /dev/null -w '%{time_total}' "$URL/health")
    worst=$(python3 -c "print(max($worst, $ms * 1000))")
    sleep 0.05
  done
  t2=$(date +%s%N)
  plugin_active http://127.0.0.1:18401 "$hash"
  t3=$(date +%s%N)
  echo "PUT answered after $(( (t1 - t0) / 1000000 )) ms; active on :18400 after $(( (t2 - t0) / 1000000 )) ms, on :18401 after $(( (t3 - t0) / 1000000 )) ms; slowest /health meanwhile ${worst} ms"
  cleanup; PIDS=(); PGDB=""; DATA=""
  echo "== restart -> active with the compiled code cached (embedded) =="
  start_server SWITCHYARD_PLUGIN_CACHE_DIR="$OUT/cache-$$"
  curl -sf -o /dev/null -X PUT "$URL/admin/plugins/event-filter?wait=true" -H "Authorization: Bearer $TOKEN" --data-binary "@$wasm"
  local data=$DATA
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  t0=$(date +%s%N)
  env SWITCHYARD_ADMIN_TOKEN=$TOKEN SWITCHYARD_LISTEN=127.0.0.1:18400 SWITCHYARD_DATA_DIR="$data" \
    SWITCHYARD_PLUGIN_CACHE_DIR="$OUT/cache-$$" "$BIN/switchyard" >"$OUT/server-restart.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  until curl -sf "$URL/health" >/dev/null 2>&1; do sleep 0.01; done
  plugin_active "$URL" "$hash"
  t1=$(date +%s%N)
  echo "restart -> listening and the JavaScript filter active after $(( (t1 - t0) / 1000000 )) ms;" \
    "compiles: $(curl -sf "$URL/metrics" -H "Authorization: Bearer $TOKEN" | awk '/^switchyard_plugin_compiles_total/ {print $2}')," \
    "cache hits: $(curl -sf "$URL/metrics" -H "Authorization: Bearer $TOKEN" | awk '/^switchyard_plugin_cache_hits_total/ {print $2}')"
  rm -rf "$OUT/cache-$$" "$wasm"
  cat "$OUT/plugins-lang.load"
}

isolation() { # on|off: tenant slowa's filter of about 5 ms a call
  local slow=${1:-on} spin=${SPIN:-5000000}
  CLIENTS=${CLIENTS:-1000} RATE=${RATE:-100}
  wait_quiet | tee "$OUT/isolation.load"
  start_server SWITCHYARD_EXAMPLE_PLUGINS=false
  SRV_PIDS=("$SERVER_PID")
  curl -sf -o /dev/null -X POST "$URL/admin/tenants" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"slug":"slowa","name":"Slow A"}'
  if [ "$slow" = on ]; then
    curl -sf -o /dev/null -X PUT "$URL/admin/plugins/event-filter?tenant=slowa&wait=true" \
      -H "Authorization: Bearer $TOKEN" --data-binary "@target/plugins/wasm32-wasip2/release/hostile_filter.wasm"
  fi
  # Tenant slowa: 10 streams of one shape, RATE events/s.
  local count=$((RATE * PUBLISH_SECS))
  "$BIN/switchyard-loadgen" subscribe --url "$URL" --path "/events?tenant=slowa&topic=slow:1&spin=$spin" \
    --clients 10 --duration-secs $((PUBLISH_SECS + 40)) --report "$OUT/isolation-a-sub.json" >"$OUT/isolation-a-sub.log" 2>&1 &
  PIDS+=("$!")
  "$BIN/switchyard-loadgen" publish --url "$URL" --tenant slowa --topic slow:1 --token $TOKEN \
    --rate "$RATE" --count $((count * 2)) --duration-secs $((PUBLISH_SECS * 2 + 20)) \
    --report "$OUT/isolation-a-pub.json" >"$OUT/isolation-a-pub.log" 2>&1 &
  PIDS+=("$!")
  # Tenant demo, measured.
  fanout_run "isolation-$slow" $URL "/events?tenant=demo&topic=iso:1" \
    publish --url $URL --tenant demo --topic iso:1 --token $TOKEN
  curl -sf "$URL/admin/plugins" -H "Authorization: Bearer $TOKEN" | python3 -c '
import json, sys
for s in json.load(sys.stdin)["slots"]:
    if s["slot"] == "event-filter" and s["tenant"] == "slowa":
        print("tenant slowa filter: calls", s["calls"], "p50 <=", s["latency_us"]["p50"], "us, p99 <=", s["latency_us"]["p99"], "us, errors", s["errors"])'
  cat "$OUT/isolation.load"
}

publish_bench() { # embedded|cluster batch keyed(0|1)
  local mode=$1 batch=$2 keyed=$3
  local name="publish-$mode-$batch-$keyed"
  wait_quiet | tee "$OUT/$name.load"
  start_mode "$mode"
  # A fresh node answers its first publish only once the bundled plugins are
  # compiled (seconds): one publish first, so the run measures the steady state.
  curl -sf -o /dev/null -X POST "$URL/api/events" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"tenant":"demo","topic":"warm:1","type":"warm","data":0}'
  local c0; c0=$(cpu_ticks "${SRV_PIDS[@]}")
  "$BIN/switchyard-loadgen" publish --url "$URL" --tenant demo --topic "pub:$batch" --token $TOKEN \
    --rate 0 --duration-secs "${BATCH_SECS:-10}" --concurrency "${CONCURRENCY:-64}" \
    --batch "$batch" --keyed "$keyed" \
    --report "$OUT/$name.json" >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; exit 1; }
  local c1; c1=$(cpu_ticks "${SRV_PIDS[@]}")
  sed -n '/summary/,$p' "$OUT/$name.log"
  python3 - "$OUT/$name.json" "$c0" "$c1" "$TICK" "$name" <<'EOF2'
import json, sys
r = json.load(open(sys.argv[1]))
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[2:4])
tick, name = int(sys.argv[4]), sys.argv[5]
cpu = (u1 - u0 + s1 - s0) / tick
events = max(r["ok"], 1)
lat = r["latency"]
print(f"{name}: {r['achieved_rate']:.0f} events/s ({r['achieved_rate'] / r['batch']:.0f} requests/s), "
      f"{r['ok']} events, {r['failed']} given up; request p50 {lat.get('p50_ms', '?')} ms, p99 {lat.get('p99_ms', '?')} ms; "
      f"server CPU {cpu:.2f} s = {cpu * 1e6 / events:.1f} us/event")
EOF2
  cat "$OUT/$name.load"
}

# metric_total REGEX URL...: the sum of the series matching REGEX on every node
# (sources' published events: `^switchyard_source_events_published_total[{]`;
# bids decided: `^switchyard_bid_decisions_(accepted|rejected)_total `).
metric_total() {
  local re=$1 u got=0 v
  shift
  for u in "$@"; do
    v=$(curl -sf "$u/metrics" -H "Authorization: Bearer $TOKEN" | awk -v re="$re" '$0 ~ re {s += $2} END {print s + 0}') || v=0
    got=$((got + ${v%.*}))
  done
  echo "$got"
}

# nats_js CMD...: a few JetStream steps over NATS' text protocol (no client
# library): `create STREAM SUBJECTS`, `publish SUBJECT N` (N seed-format
# messages, acknowledged in bulk), `delete STREAM`.
nats_js() {
  python3 - "$@" <<'EOF2'
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(__import__("os").environ.get("NATS_PORT", "4222"))))
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.bench 1\r\n')
def request(subject, body):
    b = json.dumps(body).encode()
    s.sendall(b"PUB %s _INBOX.bench %d\r\n%s\r\n" % (subject.encode(), len(b), b))
    while True:
        line = f.readline()
        if line.startswith(b"MSG"):
            n = int(line.split()[-1]); data = f.read(n + 2)[:n]
            return json.loads(data)
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        if line.startswith(b"-ERR"):
            sys.exit(line.decode())
cmd = sys.argv[1]
if cmd == "create":
    r = request(f"$JS.API.STREAM.CREATE.{sys.argv[2]}", {"name": sys.argv[2], "subjects": [sys.argv[3]], "storage": "file"})
    if "error" in r: sys.exit(str(r))
elif cmd == "delete":
    request(f"$JS.API.STREAM.DELETE.{sys.argv[2]}", {})
elif cmd == "publish":
    subject, n = sys.argv[2], int(sys.argv[3])
    out = bytearray()
    for i in range(n):
        b = json.dumps({"matchId": f"m{i % 100}", "n": i}).encode()
        # A reply subject: JetStream acknowledges each; the acks are read below.
        out += b"PUB %s _INBOX.bench %d\r\n%s\r\n" % (subject.encode(), len(b), b)
        if len(out) > 1 << 20:
            s.sendall(out); out = bytearray()
    s.sendall(out + b"PING\r\n")
    acks = 0
    while acks < n:
        line = f.readline()
        if line.startswith(b"MSG"):
            k = int(line.split()[-1]); f.read(k + 2); acks += 1
        elif line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            sys.exit(line.decode())
EOF2
}

backlog() { # stream|list|outbox|jetstream embedded|cluster entries
  local kind=$1 mode=$2 n=$3 name="backlog-$1-$2-$3" feed_port=$((REDIS_PORT + 1))
  local key=bench:events:realtime app_db="bench_app_$$" js="BENCH_$$" subj="bench$$"
  wait_quiet | tee "$OUT/$name.load"
  export SWITCHYARD_EXAMPLE_PLUGINS=false
  local src
  case "$kind" in
    stream|list)
      # The producers' Redis, apart from the nodes' own.
      redis-server --port "$feed_port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no >"$OUT/redis-feed.log" 2>&1 &
      PIDS+=("$!")
      for _ in $(seq 1 50); do redis-cli -p "$feed_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
      ;;
  esac
  case "$kind" in
    stream)
      # The stream is filled, then the group made at its end, so the nodes
      # start with nothing to read; the backlog is released at once below.
      python3 - "$n" "$key" <<'EOF2' | redis-cli -p "$feed_port" --pipe >"$OUT/$name-fill.log"
import json, sys
n, key = int(sys.argv[1]), sys.argv[2].encode()
out = sys.stdout.buffer
for i in range(n):
    parts = [b"XADD", key, b"*", b"event", b"match:updated", b"payload",
             json.dumps({"matchId": f"m{i % 100}", "n": i}).encode()]
    out.write(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
EOF2
      redis-cli -p "$feed_port" XGROUP CREATE $key switchyard '$' >/dev/null
      src="{\"name\":\"bench\",\"kind\":\"redis-stream\",\"redis_url\":\"redis://127.0.0.1:$feed_port\",\"key\":\"$key\",\"preset\":\"event-payload\",\"tenant\":\"demo\",\"topic\":\"match:{/payload/matchId}\"}"
      ;;
    list)
      src="{\"name\":\"bench\",\"kind\":\"redis-list-bids\",\"redis_url\":\"redis://127.0.0.1:$feed_port\",\"key\":\"bids:pending\",\"tenant\":\"demo\"}"
      ;;
    outbox)
      psql -h "$PGHOST" -U postgres -d postgres -qc "CREATE DATABASE $app_db" >/dev/null
      APP_DB=$app_db
      psql -h "$PGHOST" -U postgres -d "$app_db" -q -v ON_ERROR_STOP=1 -f examples/sources/outbox.sql >/dev/null
      src="{\"name\":\"bench\",\"kind\":\"postgres-outbox\",\"database_url\":\"postgres://postgres@$PGHOST:5432/$app_db\"}"
      ;;
    jetstream)
      nats_js create "$js" "$subj.>"
      NATS_STREAM=$js
      src="{\"name\":\"bench\",\"kind\":\"nats-jetstream\",\"stream\":\"$js\",\"pattern\":\"$subj.*\",\"tenant\":\"demo\",\"topic\":\"match:{1}\",\"type\":\"match:updated\",\"start\":\"all\"}"
      ;;
    *) echo "kind must be stream, list, outbox or jetstream" >&2; exit 2 ;;
  esac
  export SWITCHYARD_SOURCES="[${src%\}},\"batch\":${SOURCE_BATCH:-100}}]"
  start_mode "$mode"
  local urls; IFS=, read -r -a urls <<<"$URLS"
  if [ "$mode" = embedded ]; then wait_ready "$OUT/server.log" 18400; fi
  local want=$n count='^switchyard_source_events_published_total[{]'
  if [ "$kind" = list ]; then
    # 100 products; bids with rising amounts, in the seed's format, on a
    # list the source does not read yet (renamed onto its key below).
    local ids=() i
    for i in $(seq 1 100); do
      ids+=("$(curl -sf -X POST "$URL/api/products" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' \
        -d "{\"tenant\":\"demo\",\"seller_id\":\"bench-seller\",\"title\":\"bench $i\",\"starting_price\":1,\"min_increment\":1}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
    done
    python3 - "$n" "${ids[@]}" <<'EOF2' | redis-cli -p "$feed_port" --pipe >"$OUT/$name-fill.log"
import json, sys
n, ids = int(sys.argv[1]), sys.argv[2:]
out = sys.stdout.buffer
for i in range(n):
    bid = json.dumps({"productId": ids[i % len(ids)], "bidderId": f"b{i % 7}",
                      "amount": i // len(ids) + 1, "timestamp": i}).encode()
    parts = [b"LPUSH", b"bids:filling", bid]
    out.write(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
EOF2
    count='^switchyard_bid_decisions_(accepted|rejected)_total '
  fi
  sleep 2
  local c0; c0=$(cpu_ticks "${SRV_PIDS[@]}")
  local t0; t0=$(date +%s.%N)
  case "$kind" in
    stream)
      # Release the backlog, and add one entry to wake the blocked reader.
      redis-cli -p "$feed_port" XGROUP SETID $key switchyard 0 >/dev/null
      redis-cli -p "$feed_port" XADD $key '*' event match:updated payload '{"matchId":"m0","n":-1}' >/dev/null
      want=$((n + 1))
      ;;
    list) redis-cli -p "$feed_port" RENAME bids:filling bids:pending >/dev/null ;;
    outbox)
      # One transaction: the whole backlog commits at once.
      psql -h "$PGHOST" -U postgres -d "$app_db" -q -v ON_ERROR_STOP=1 -c \
        "INSERT INTO switchyard_outbox (tenant, topic, type, data) SELECT 'demo', 'match:m' || (g % 100), 'match:updated', jsonb_build_object('matchId', 'm' || (g % 100), 'n', g) FROM generate_series(0, $((n - 1))) g ORDER BY g"
      t0=$(date +%s.%N)
      ;;
    jetstream) nats_js publish "$subj.m1" "$n" ;;
  esac
  local got=0
  while [ "$got" -lt "$want" ]; do
    sleep 0.05
    got=$(metric_total "$count" "${urls[@]}")
  done
  local t1; t1=$(date +%s.%N)
  local c1; c1=$(cpu_ticks "${SRV_PIDS[@]}")
  python3 - "$t0" "$t1" "$c0" "$c1" "$TICK" "$want" "$name" <<'EOF2'
import sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[3:5])
tick, n, name = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
cpu = (u1 - u0 + s1 - s0) / tick
print(f"{name}: {n} published in {t1 - t0:.2f} s = {n / (t1 - t0):.0f}/s; "
      f"server CPU {cpu:.2f} s = {cpu * 1e6 / n:.1f} us each")
EOF2
  cat "$OUT/$name.load"
}

presence_counts() { # topic: streams,users of the topic's occupancy, as a REST read says
  curl -sf "$URL/api/topics/$1/members?tenant=demo&limit=1" -H "Authorization: Bearer $TOKEN" |
    python3 -c "import json,sys; o=json.load(sys.stdin).get('occupancy') or {}; print(f\"{o.get('streams',0)},{o.get('users',0)}\")"
}
storm() { # embedded|cluster streams on|off
  local mode=$1 n=$2 presence=$3 users=$(($2 / 4)) ramp=${RAMP:-5000}
  local name="storm-$mode-$n-$presence" topic=storm:1
  case "$presence" in
    on) export SWITCHYARD_PRESENCE_OCCUPANCY='*' SWITCHYARD_PRESENCE_MEMBERS='storm:*' ;;
    off) export SWITCHYARD_PRESENCE_OCCUPANCY=none SWITCHYARD_PRESENCE_MEMBERS='' ;;
    *) echo "presence must be on or off" >&2; exit 2 ;;
  esac
  export SWITCHYARD_MAX_STREAMS_PER_TENANT=$((n * 2)) SWITCHYARD_PRESENCE_LINGER_MS=0
  wait_quiet | tee "$OUT/$name.load"
  start_mode "$mode"
  local tokens="$OUT/$name-tokens.txt" i
  : >"$tokens"
  for i in $(seq 0 $((users - 1))); do
    echo "u$i $(SWITCHYARD_JWT_SECRET=$JWT_SECRET "$BIN/switchyard" token --sub "u$i" --tenant demo --ttl 1h)" >>"$tokens"
  done
  sleep 3
  # An idle period as long as the storm will take, for the baseline.
  local hold=2 settle=5
  local span=$(( (n + ramp - 1) / ramp + hold + settle ))
  local c0 r0; c0=$(cpu_ticks "${SRV_PIDS[@]}"); r0=$( [ "$mode" = cluster ] && redis_stat total_commands_processed || echo 0)
  sleep "$span"
  local c1 r1; c1=$(cpu_ticks "${SRV_PIDS[@]}"); r1=$( [ "$mode" = cluster ] && redis_stat total_commands_processed || echo 0)
  "$BIN/switchyard-loadgen" idle --url "$URL" --path "/events?tenant=demo&topic=$topic" \
    --tokens "$tokens" --clients "$n" --ramp-per-sec "$ramp" --duration-secs "$hold" \
    >"$OUT/$name.log" 2>&1 &
  local lg=$!; PIDS+=("$lg")
  wait_line "$OUT/$name.log" 'ramp complete'
  grep 'ramp complete' "$OUT/$name.log"
  sleep 1.5
  local full; full=$(presence_counts "$topic")
  wait "$lg" || true
  sleep "$settle"
  local empty; empty=$(presence_counts "$topic")
  local c2 r2; c2=$(cpu_ticks "${SRV_PIDS[@]}"); r2=$( [ "$mode" = cluster ] && redis_stat total_commands_processed || echo 0)
  echo "$name: occupancy while open $full (expected $n,$users with presence on), after $empty"
  python3 - "$c0" "$c1" "$c2" "$r0" "$r1" "$r2" "$TICK" "$n" "$name" <<'PY'
import sys
(u0, s0), (u1, s1), (u2, s2) = (map(int, a.split()) for a in sys.argv[1:4])
r0, r1, r2 = map(int, sys.argv[4:7])
tick, n, name = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
idle = (u1 - u0 + s1 - s0) / tick
storm = (u2 - u1 + s2 - s1) / tick
cpu = storm - idle
print(f"{name}: server CPU {storm:.2f} s in the storm, {idle:.2f} s idle as long: "
      f"{cpu:.2f} s = {cpu * 1e6 / n:.0f} us per stream (open + close)")
if r2:
    cmds = (r2 - r1) - (r1 - r0)
    print(f"{name}: Redis commands {r2 - r1} in the storm, {r1 - r0} idle as long: "
          f"{cmds / n:.1f} per stream (open + close)")
PY
  cat "$OUT/$name.load"
}
fanout_floor() { # clients rate: the same load against `switchyard-loadgen floor`
  CLIENTS=$1 RATE=$2
  local floor_url=http://127.0.0.1:18402
  "$BIN/switchyard-loadgen" floor --listen 127.0.0.1:18402 --nodelay "${NODELAY:-1}" >"$OUT/floor.log" 2>&1 &
  local floor=$!; PIDS+=("$floor")
  wait_line "$OUT/floor.log" 'floor listening'
  SRV_PIDS=("$floor")
  fanout_run "floor-$1x$2" $floor_url "/sub/floor" publish-nchan --url $floor_url --channel floor
}

# pg_ticks: "pid utime stime" of every postgres process, one per line.
pg_ticks() {
  local p
  for p in $(pgrep -x postgres); do
    awk -v p="$p" '{print p, $14, $15}' "/proc/$p/stat" 2>/dev/null || true
  done
}

# redis_stat FIELD: a number from the private Redis' INFO stats.
redis_stat() {
  redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' | awk -F: -v f="$1" '$1 == f {print $2}'
}

fanout_cluster() { # nodes subscribers-per-node events/s
  local nodes=$1 n=$2 rate=$3
  local name="cluster-$1x$2x$3" count=$(($3 * PUBLISH_SECS)) i port
  wait_quiet | tee "$OUT/$name.load"
  NODES=$nodes start_mode cluster
  local subs=()
  for i in $(seq 0 $((nodes - 1))); do
    port=$((18400 + i))
    "$BIN/switchyard-loadgen" subscribe --url "http://127.0.0.1:$port" --path "/events?tenant=demo&topic=bench:c" \
      --clients "$n" --ramp-per-sec 2000 --duration-secs $((PUBLISH_SECS + 30)) --expect-count "$count" \
      --report "$OUT/$name-sub-$port.json" >"$OUT/$name-sub-$port.log" 2>&1 &
    subs+=("$!"); PIDS+=("$!")
  done
  for i in $(seq 0 $((nodes - 1))); do wait_line "$OUT/$name-sub-$((18400 + i)).log" 'ramp complete'; done
  sleep 2
  local c0 r0 pg0 out0 in0
  c0=$(cpu_ticks "${SRV_PIDS[@]}"); r0=$(cpu_ticks "$REDIS_PID"); pg0=$(pg_ticks)
  out0=$(redis_stat total_net_output_bytes); in0=$(redis_stat total_net_input_bytes)
  "$BIN/switchyard-loadgen" publish --url "$URL" --tenant demo --topic bench:c --token $TOKEN \
    --rate "$rate" --count "$count" --duration-secs $((PUBLISH_SECS + 10)) \
    --report "$OUT/$name-pub.json" >"$OUT/$name-pub.log" 2>&1
  for i in "${subs[@]}"; do wait "$i" || true; done
  local c1 r1 pg1 out1 in1
  c1=$(cpu_ticks "${SRV_PIDS[@]}"); r1=$(cpu_ticks "$REDIS_PID"); pg1=$(pg_ticks)
  out1=$(redis_stat total_net_output_bytes); in1=$(redis_stat total_net_input_bytes)
  sed -n '/summary/,$p' "$OUT/$name-pub.log"
  python3 - "$OUT/$name" "$nodes" "$c0" "$c1" "$r0" "$r1" "$TICK" "$out0" "$out1" "$in0" "$in1" "$pg0" "$pg1" <<'EOF'
import json, sys
base, nodes = sys.argv[1], int(sys.argv[2])
(u0, s0), (u1, s1), (ru0, rs0), (ru1, rs1) = (map(int, a.split()) for a in sys.argv[3:7])
tick = int(sys.argv[7])
out0, out1, in0, in1 = map(int, sys.argv[8:12])
def pg(text):
    return {int(l.split()[0]): int(l.split()[1]) + int(l.split()[2]) for l in text.splitlines() if l.strip()}
pg0, pg1 = pg(sys.argv[12]), pg(sys.argv[13])
pg_cpu = sum(t - pg0.get(p, 0) for p, t in pg1.items()) / tick
pub = json.load(open(base + "-pub.json"))
events = max(pub["ok"], 1)
deliveries = 0
for i in range(nodes):
    sub = json.load(open(f"{base}-sub-{18400 + i}.json"))
    deliveries += sub["events"]
    l = sub["latency"]
    print(f"node :{18400 + i}: {sub['established']} streams, {sub['events']} deliveries ({sub['events_per_sec']:.0f}/s),"
          f" p50 {l['p50_ms']:.1f} ms, p99 {l['p99_ms']:.1f} ms, p99.9 {l['p999_ms']:.1f} ms;"
          f" gaps {sub['gaps']}, duplicates {sub['duplicates']}, out of order {sub['out_of_order']}, incomplete {sub['incomplete']}")
cpu = (u1 - u0 + s1 - s0) / tick
print(f"published {pub['ok']} events ({pub['achieved_rate']:.0f}/s), POST p50 {pub['latency'].get('p50_ms', '?')} ms;"
      f" {deliveries} deliveries")
print(f"nodes CPU {cpu:.2f} s (user {(u1 - u0) / tick:.2f}, system {(s1 - s0) / tick:.2f})"
      f" = {cpu * 1e6 / max(deliveries, 1):.2f} us/delivery; per node {cpu / nodes:.2f} s")
rcpu = (ru1 - ru0 + rs1 - rs0) / tick
print(f"redis CPU {rcpu:.2f} s = {rcpu * 1e6 / events:.1f} us/event;"
      f" bytes out {out1 - out0} = {(out1 - out0) / events / nodes:.0f} per event per node,"
      f" bytes in {in1 - in0} = {(in1 - in0) / events:.0f} per event")
print(f"postgres CPU (every postgres process) {pg_cpu:.2f} s = {pg_cpu * 1e6 / events:.1f} us/event")
EOF
  cat "$OUT/$name.load"
}

bus_tenants() { # nodes all|spread events/s: one tenant per node, each published at events/s / nodes
  # all: one bus shard, every node holds streams of every tenant (SUBS / nodes of each);
  # spread: a shard per tenant (SHARDS, default 8 per node), node i holds SUBS streams of tenant i only
  local nodes=$1 how=$2 rate=$3 per=${SUBS:-100}
  local shards=1 i j
  [ "$how" = spread ] && shards=${SHARDS:-$((nodes * 8))}
  local name="bus-$how-$nodes-$rate" count=$((rate / nodes * PUBLISH_SECS))
  wait_quiet | tee "$OUT/$name.load"
  # Tenant i on a shard of its own: the first name bus-i-k whose shard no earlier one has
  # (the shard is (crc32(name) >> 16 & 0x7fff) mod shards, as the server computes it).
  local tenants=()
  mapfile -t tenants < <(python3 - "$nodes" "$shards" <<'EOF'
import sys, zlib
nodes, shards = int(sys.argv[1]), int(sys.argv[2])
taken = set()
for i in range(nodes):
    k = 0
    while True:
        name = f"bus-{i}-{k}"
        s = ((zlib.crc32(name.encode()) >> 16) & 0x7fff) % shards
        if shards == 1 or s not in taken:
            taken.add(s)
            print(name)
            break
        k += 1
EOF
)
  SHARDS=$shards NODES=$nodes start_mode cluster
  for j in "${tenants[@]}"; do
    curl -sf -X POST "$URL/admin/tenants" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -d "{\"slug\":\"$j\",\"name\":\"$j\"}" >/dev/null
  done
  local subs=() logs=() reports=() port clients
  for i in $(seq 0 $((nodes - 1))); do
    port=$((18400 + i))
    for j in $(seq 0 $((nodes - 1))); do
      if [ "$how" = all ]; then clients=$((per / nodes)); elif [ "$i" = "$j" ]; then clients=$per; else continue; fi
      "$BIN/switchyard-loadgen" subscribe --url "http://127.0.0.1:$port" --path "/events?tenant=${tenants[$j]}&topic=bench:c" \
        --clients "$clients" --ramp-per-sec 2000 --duration-secs $((PUBLISH_SECS + 30)) --expect-count "$count" \
        --report "$OUT/$name-sub-$port-$j.json" >"$OUT/$name-sub-$port-$j.log" 2>&1 &
      subs+=("$!"); PIDS+=("$!"); logs+=("$OUT/$name-sub-$port-$j.log"); reports+=("$OUT/$name-sub-$port-$j.json")
    done
  done
  for i in "${logs[@]}"; do wait_line "$i" 'ramp complete'; done
  sleep 2
  local c0 r0 out0
  c0=$(cpu_ticks "${SRV_PIDS[@]}"); r0=$(cpu_ticks "$REDIS_PID"); out0=$(redis_stat total_net_output_bytes)
  local pubs=()
  for j in $(seq 0 $((nodes - 1))); do
    "$BIN/switchyard-loadgen" publish --url "http://127.0.0.1:$((18400 + j))" --tenant "${tenants[$j]}" --topic bench:c \
      --token $TOKEN --rate $((rate / nodes)) --count "$count" --duration-secs $((PUBLISH_SECS + 10)) \
      --report "$OUT/$name-pub-$j.json" >"$OUT/$name-pub-$j.log" 2>&1 &
    pubs+=("$!"); PIDS+=("$!")
  done
  for i in "${pubs[@]}"; do wait "$i" || true; done
  for i in "${subs[@]}"; do wait "$i" || true; done
  local c1 r1 out1
  c1=$(cpu_ticks "${SRV_PIDS[@]}"); r1=$(cpu_ticks "$REDIS_PID"); out1=$(redis_stat total_net_output_bytes)
  for i in $(seq 0 $((nodes - 1))); do
    curl -sf "http://127.0.0.1:$((18400 + i))/metrics" -H "Authorization: Bearer $TOKEN" \
      | grep -E '^switchyard_(fanout_gap_skipped_total|fanout_gap_fills_total|fanout_tail_fills_total|client_lagged_total|resets_total) ' \
      | tr '\n' ' ' | sed "s/^/node :$((18400 + i)): /"; echo
  done
  python3 - "$OUT/$name" "$nodes" "$c0" "$c1" "$r0" "$r1" "$TICK" "$out0" "$out1" "$how" "$shards" "${reports[@]}" <<'EOF'
import json, sys
base, nodes = sys.argv[1], int(sys.argv[2])
(u0, s0), (u1, s1), (ru0, rs0), (ru1, rs1) = (map(int, a.split()) for a in sys.argv[3:7])
tick = int(sys.argv[7]); out0, out1 = int(sys.argv[8]), int(sys.argv[9]); how, shards = sys.argv[10], sys.argv[11]
events = sum(json.load(open(f"{base}-pub-{j}.json"))["ok"] for j in range(nodes))
subs = [json.load(open(r)) for r in sys.argv[12:]]
deliveries = sum(s["events"] for s in subs)
bad = {k: sum(s[k] for s in subs) for k in ("gaps", "duplicates", "out_of_order", "incomplete")}
p99 = max(s["latency"]["p99_ms"] for s in subs)
cpu = (u1 - u0 + s1 - s0) / tick; rcpu = (ru1 - ru0 + rs1 - rs0) / tick
print(f"{how}: {nodes} nodes, {shards} shard(s); {events} events published, {deliveries} deliveries"
      f" (worst p99 {p99:.1f} ms); gaps {bad['gaps']}, duplicates {bad['duplicates']},"
      f" out of order {bad['out_of_order']}, incomplete {bad['incomplete']}")
print(f"redis bytes out {out1 - out0} = {(out1 - out0) / max(events, 1):.0f} per event;"
      f" redis CPU {rcpu:.2f} s = {rcpu * 1e6 / max(events, 1):.1f} us/event")
print(f"nodes CPU {cpu:.2f} s = {cpu * 1e6 / max(deliveries, 1):.2f} us/delivery")
EOF
  cat "$OUT/$name.load"
}

redis_bus() { # streams|pubsub readers entries/s: Redis alone, with the bus's traffic (no Switchyard)
  local mode=$1 readers=$2 rate=$3
  local name="redis-bus-$mode-$readers-$rate"
  wait_quiet | tee "$OUT/$name.load"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local r0 out0 r1 out1
  r0=$(cpu_ticks "$REDIS_PID"); out0=$(redis_stat total_net_output_bytes)
  "$BIN/switchyard-loadgen" redis-bus --url "redis://127.0.0.1:$REDIS_PORT" --mode "$mode" --readers "$readers" \
    --rate "$rate" --duration-secs "$PUBLISH_SECS" --payload-bytes "${PAYLOAD:-400}" --batch "${BATCH:-1}" \
    --report "$OUT/$name.json" >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; exit 1; }
  r1=$(cpu_ticks "$REDIS_PID"); out1=$(redis_stat total_net_output_bytes)
  python3 - "$OUT/$name.json" "$r0" "$r1" "$TICK" "$out0" "$out1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[2:4])
tick = int(sys.argv[4]); out = int(sys.argv[6]) - int(sys.argv[5])
cpu = (u1 - u0 + s1 - s0) / tick
d = max(r["received"], 1)
print(f"{r['mode']}: {r['readers']} readers, {r['published']} entries ({r['entries_per_sec']:.0f}/s),"
      f" {r['received']} deliveries, {r['lost']} lost; redis CPU {cpu:.2f} s ="
      f" {cpu * 1e6 / d:.2f} us per delivery, {d / max(cpu, 1e-9):.0f} deliveries per Redis core-second;"
      f" bytes out {out / d:.0f} per delivery")
EOF
  kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null || true
  cat "$OUT/$name.load"
}

idle_cluster() { # clients: idle streams on one node of a two-node cluster
  local n=$1
  start_mode cluster
  local srv=${SRV_PIDS[0]}
  sleep 1
  local before slab0; before=$(rss_kib "$srv"); slab0=$(slab_kib)
  "$BIN/switchyard-loadgen" idle --url $URL --path '/events?tenant=demo&topic=idle:1' \
    --clients "$n" --ramp-per-sec 2000 >"$OUT/idle-cluster-$n.log" 2>&1 &
  local lg=$!; PIDS+=("$lg")
  wait_line "$OUT/idle-cluster-$n.log" 'ramp complete'
  sleep 3
  local after slab1; after=$(rss_kib "$srv"); slab1=$(slab_kib)
  grep 'ramp complete' "$OUT/idle-cluster-$n.log"
  echo "idle cluster $n: node RSS ${before} KiB -> ${after} KiB; $(python3 -c "print(f'{($after - $before) / $n:.2f}')") KiB per connection"
  kernel_per_conn "$slab0" "$slab1" "$n"
}

replay_cluster() { # events: resume from Last-Event-ID 0 on the second node of a two-node cluster
  local n=$1
  start_mode cluster
  "$BIN/switchyard-loadgen" publish --url $URL --tenant demo --topic replay:1 --token $TOKEN \
    --rate 0 --count "$n" --concurrency 64 --report "$OUT/replay-cluster-pub.json" >"$OUT/replay-cluster-pub.log" 2>&1
  sed -n '/summary/,$p' "$OUT/replay-cluster-pub.log"
  local c0; c0=$(cpu_ticks "${SRV_PIDS[1]}")
  "$BIN/switchyard-loadgen" subscribe --url http://127.0.0.1:18401 --path '/events?tenant=demo&topic=replay:1' \
    --clients 1 --last-event-id 0 --expect-count "$n" --duration-secs 120 \
    --report "$OUT/replay-cluster-sub.json" >"$OUT/replay-cluster-sub.log" 2>&1
  local c1; c1=$(cpu_ticks "${SRV_PIDS[1]}")
  sed -n '/summary/,$p' "$OUT/replay-cluster-sub.log"
  echo "replay cluster: node :18401 CPU (user system) ticks before: $c0, after: $c1 (CLK_TCK $TICK)"
}

move_bench() { # events: tenant demo with this many events moved between databases under load
  local n=$1
  SECOND_DB=1 RETENTION_EVENTS=$((n + 100000)) start_mode cluster
  # --count is requests: n events in batches of 100.
  "$BIN/switchyard-loadgen" publish --url $URL --tenant demo --topic fill:1 --token $TOKEN \
    --rate 0 --count $((n / 100)) --batch 100 --concurrency 16 --report "$OUT/move-fill.json" >"$OUT/move-fill.log" 2>&1
  sed -n '/summary/,$p' "$OUT/move-fill.log"
  "$BIN/switchyard-loadgen" subscribe --url http://127.0.0.1:18401 --path '/events?tenant=demo&topic=live:1' \
    --clients 10 --duration-secs 26 --report "$OUT/move-sub.json" >"$OUT/move-sub.log" 2>&1 &
  local sub=$!
  PIDS+=("$sub")
  sleep 2
  "$BIN/switchyard-loadgen" publish --url $URL --tenant demo --topic live:1 --token $TOKEN \
    --rate "${RATE:-200}" --duration-secs 20 --concurrency 8 --report "$OUT/move-pub.json" >"$OUT/move-pub.log" 2>&1 &
  local pub=$!
  PIDS+=("$pub")
  sleep 5
  curl -sf -X POST "$URL/admin/tenants/demo/move" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"database":"b"}' >"$OUT/move.json"
  echo "move: $(cat "$OUT/move.json")"
  wait "$pub" || true
  wait "$sub" || true
  echo "publishing during the move:"; sed -n '/summary/,$p' "$OUT/move-pub.log"
  echo "10 streams on the second node:"; sed -n '/summary/,$p' "$OUT/move-sub.log"
}

case "${1:-}" in
  move) move_bench "${2:-100000}" ;;
  idle) idle "${2:?clients}" ;;
  idle-tls) idle_tls "${2:?clients}" "${3:?h1|h2}" "${4:-200}" ;;
  fanout) fanout "${2:?clients}" "${3:?events/s}" ;;
  nchan) nchan "${2:?start|stop}" ;;
  fanout-nchan) fanout_nchan "${2:?clients}" "${3:?events/s}" ;;
  fanout-floor) fanout_floor "${2:?clients}" "${3:?events/s}" ;;
  replay) replay "${2:-100000}" ;;
  messages) messages "${2:?embedded|cluster}" "${3:?messages/s}" ;;
  bids) bids "${2:?embedded|cluster}" "${3:?bids/s or max}" "${4:?products}" ;;
  plugins) plugins "${2:-10000}" "${3:-10}" ;;
  plugins-cluster) plugins_cluster "${2:-5}" ;;
  plugins-lang) plugins_lang ;;
  isolation) isolation "${2:-on}" ;;
  fanout-cluster) fanout_cluster "${2:?nodes}" "${3:?subscribers per node}" "${4:?events/s}" ;;
  bus-tenants) bus_tenants "${2:?nodes}" "${3:?all|spread}" "${4:?events/s}" ;;
  redis-bus) redis_bus "${2:?streams|pubsub}" "${3:?readers}" "${4:?entries/s}" ;;
  idle-cluster) idle_cluster "${2:?clients}" ;;
  replay-cluster) replay_cluster "${2:-100000}" ;;
  publish) publish_bench "${2:?embedded|cluster}" "${3:?events per request}" "${4:-0}" ;;
  storm) storm "${2:?embedded|cluster}" "${3:?streams}" "${4:?on|off}" ;;
  backlog) backlog "${2:?stream|list|outbox|jetstream}" "${3:?embedded|cluster}" "${4:-100000}" ;;
  *) sed -n '2,/^set -euo pipefail/{/^set -euo/d;p}' "$0"; exit 2 ;;
esac
