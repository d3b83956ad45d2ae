#!/usr/bin/env bash
# Checks that nginx's `hash $arg_tenant` and the HAProxy rule in haproxy.cfg send each
# tenant to group ((crc32(tenant) >> 16) & 0x7fff) mod G, the key Switchyard shards its
# bus by (host/src/backend/cluster/fanout.rs, `shard_of`): 300 tenants, G = 3, against
# local stand-ins for the groups. Needs nginx, haproxy and python3.
set -euo pipefail
dir=$(mktemp -d)
trap 'nginx -c "$dir/nginx.conf" -s stop 2>/dev/null || true; [ -f "$dir/haproxy.pid" ] && kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events {}
http {
    access_log off;
    upstream groups { hash \$arg_tenant; server 127.0.0.1:19100; server 127.0.0.1:19101; server 127.0.0.1:19102; }
    server { listen 127.0.0.1:19099; location / { proxy_pass http://groups; } }
    server { listen 127.0.0.1:19100; location / { return 200 "0"; } }
    server { listen 127.0.0.1:19101; location / { return 200 "1"; } }
    server { listen 127.0.0.1:19102; location / { return 200 "2"; } }
}
CONF
cat >"$dir/haproxy.cfg" <<CONF
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend f
    bind 127.0.0.1:19098
    acl stream path /events
    http-request set-var(txn.group) url_param(tenant),crc32,div(65536),and(32767),mod(3) if stream
    use_backend g0 if stream { var(txn.group) -m int 0 }
    use_backend g1 if stream { var(txn.group) -m int 1 }
    use_backend g2 if stream { var(txn.group) -m int 2 }
backend g0
    server a 127.0.0.1:19100
backend g1
    server a 127.0.0.1:19101
backend g2
    server a 127.0.0.1:19102
CONF
nginx -c "$dir/nginx.conf"
haproxy -D -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid"
sleep 0.5
python3 - <<'PY'
import sys, urllib.request, zlib
bad = 0
for port, name in ((19099, "nginx"), (19098, "haproxy")):
    for i in range(300):
        t = f"tenant-{i}"
        got = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/events?tenant={t}").read())
        want = ((zlib.crc32(t.encode()) >> 16) & 0x7fff) % 3
        if got != want:
            bad += 1
            print(f"{name}: {t} went to group {got}, its shard's group is {want}")
    print(f"{name}: 300 tenants checked")
sys.exit(1 if bad else 0)
PY
