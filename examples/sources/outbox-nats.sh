#!/usr/bin/env bash
# An application publishing through its own PostgreSQL and through NATS
# JetStream, against a node started with examples/sources/switchyard.toml
# (its `orders-outbox` and `orders-nats` sources). Needs psql and bash (the
# NATS lines speak the NATS protocol over bash's /dev/tcp; with the `nats`
# CLI they are `nats stream add ORDERS --subjects 'orders.*' --defaults` and
# `nats pub orders.42 '{"status":"paid"}'`).
set -euo pipefail
APP_DATABASE_URL=${APP_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
NATS_HOST=${NATS_HOST:-127.0.0.1}
NATS_PORT=${NATS_PORT:-4222}
here=$(dirname "$0")

# The outbox, once (idempotent), then a publish inside a transaction and one
# inside a transaction that rolls back (it publishes nothing).
psql "$APP_DATABASE_URL" -q -v ON_ERROR_STOP=1 -f "$here/outbox.sql"
psql "$APP_DATABASE_URL" -v ON_ERROR_STOP=1 <<'SQL'
BEGIN;
SELECT switchyard_publish('demo', 'order:42', 'order.paid', '{"total": 990}', 'order-42-paid');
COMMIT;
BEGIN;
SELECT switchyard_publish('demo', 'order:43', 'order.paid', '{"total": 5}');
ROLLBACK;
SQL

# NATS: the stream (an error if it exists already is fine), then a message.
# nats_pub SUBJECT PAYLOAD [REPLY]: one PUB, and the reply if one is asked for.
nats_pub() {
  exec 3<>"/dev/tcp/$NATS_HOST/$NATS_PORT"
  printf 'CONNECT {"verbose":false}\r\n' >&3
  if [ -n "${3:-}" ]; then printf 'SUB %s 1\r\nPUB %s %s %d\r\n%s\r\n' "$3" "$1" "$3" "${#2}" "$2" >&3
  else printf 'PUB %s %d\r\n%s\r\n' "$1" "${#2}" "$2" >&3; fi
  sleep 0.5
  printf 'PING\r\n' >&3
  timeout 2 sed -n '/^PONG/q;/^-ERR/p;/^MSG/{n;p}' <&3 | cut -c1-200 || true
  exec 3>&-
}
nats_pub '$JS.API.STREAM.CREATE.ORDERS' '{"name":"ORDERS","subjects":["orders.*"]}' _INBOX.example
nats_pub orders.42 '{"status":"paid"}'
echo "watch: curl -N 'http://127.0.0.1:8080/events?tenant=demo&topic=order:42'"
