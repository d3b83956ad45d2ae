#!/bin/sh
# The seeds' producers, as they write today, against a node started with
# examples/sources/switchyard.toml. Needs redis-cli and curl.
set -eu
NODE=${NODE:-http://127.0.0.1:8080}
ADMIN=${ADMIN:-change-me-admin-token}
R="redis-cli -u ${REDIS_URL:-redis://127.0.0.1:6379}"

# A product to bid on (products are Switchyard's own; the CMS keeps its ids).
PRODUCT=$(curl -s "$NODE/api/products" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' \
  -d '{"tenant":"demo","seller_id":"seller","title":"Lamp","starting_price":100,"min_increment":10}' |
  sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "product $PRODUCT; watch it with:"
echo "  curl -N '$NODE/events?tenant=demo&topic=product:$PRODUCT&topic=service:balance-sync&topic=match:m1'"
sleep 1

# Seed 000: a bid through the queue, a chat notification, a product update.
$R LPUSH bids:pending "{\"productId\":\"$PRODUCT\",\"bidderId\":\"bob\",\"amount\":150,\"timestamp\":$(date +%s000)}"
$R PUBLISH sse:user:bob '{"type":"message","from":"alice","productId":"'"$PRODUCT"'","preview":"Still available?"}'
$R PUBLISH "sse:product:$PRODUCT" '{"type":"bid","currentBid":150,"bidder":"bob"}'

# Seed 003: a service's status.
$R PUBLISH service:balance-sync '{"service":"balance-sync","timestamp":1700000000000,"status":"running"}'

# Seed 004: a match update on the stream (its own group keeps working beside ours).
$R XADD trayb:events:realtime '*' event match:updated payload '{"matchId":"m1","action":"match:updated","data":{"score":"2-1"}}'

# What each source did, and its dead letters:
curl -s "$NODE/admin/sources" -H "Authorization: Bearer $ADMIN"; echo
