#!/usr/bin/env bash
# REST cases driven by curl (and mosquitto-clients for the device side of a
# command): publish/read/clear retained values, SSE, tokens, device
# commands (round trip, 404, 503), 400 on a wildcard publish, 413.
set -euo pipefail

base="http://127.0.0.1:$HTTP_PORT"
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }

# req METHOD PATH [curl args...]: prints the body to $tmp/body and the status.
req() {
	local method=$1 path=$2
	shift 2
	timeout 20 curl -sS -o "$tmp/body" -w '%{http_code}' -X "$method" "$@" "$base$path"
}

expect() { # expect STATUS what METHOD PATH [curl args...]
	local want=$1 what=$2
	shift 2
	local got
	got=$(req "$@") || fail "$what: curl failed"
	[ "$got" = "$want" ] || fail "$what: status $got, want $want: $(cat "$tmp/body")"
}

json_field() { # json_field FIELD < json
	python3 -c 'import json,sys; v=json.load(sys.stdin); print(v[sys.argv[1]] if v.get(sys.argv[1]) is not None else "")' "$1"
}

# Publish a retained value, read it back with its Content-Type, clear it.
expect 200 "retained publish" POST "/api/v1/topics/interop/rest/lamp?qos=1&retain=true" \
	-H 'Content-Type: application/json' --data-binary '{"on":true}'
got=$(timeout 10 curl -sS -D "$tmp/headers" "$base/api/v1/topics/interop/rest/lamp")
[ "$got" = '{"on":true}' ] || fail "retained read: body $got"
grep -qi '^content-type: application/json' "$tmp/headers" || fail "retained read: $(cat "$tmp/headers")"
grep -qi '^x-hub-qos: 1' "$tmp/headers" || fail "retained read: no X-Hub-Qos"
echo "ok: rest retained publish and read with Content-Type"
expect 204 "clear retained" DELETE "/api/v1/topics/interop/rest/lamp"
expect 404 "read after clear" GET "/api/v1/topics/interop/rest/lamp"
echo "ok: rest retained clear"

# An MQTT subscriber gets a REST publish.
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u alice -P alicepw -t interop/rest/tomqtt -C 1 >"$tmp/mqtt.out" &
sub=$!
pids+=("$sub")
sleep 0.5
expect 202 "publish for mqtt" POST "/api/v1/topics/interop/rest/tomqtt" -H 'Content-Type: text/plain' --data-binary 'from curl'
wait "$sub" || fail "mosquitto_sub got nothing"
[ "$(cat "$tmp/mqtt.out")" = "from curl" ] || fail "mqtt got $(cat "$tmp/mqtt.out")"
echo "ok: rest publish reaches an MQTT subscriber"

# SSE receives a publish made by curl.
timeout 10 curl -sS -N "$base/api/v1/subscribe?filter=interop/rest/sse/%2B" >"$tmp/sse" 2>/dev/null &
sse=$!
pids+=("$sse")
for _ in $(seq 50); do grep -q '^: subscribed' "$tmp/sse" 2>/dev/null && break; sleep 0.1; done
grep -q '^: subscribed' "$tmp/sse" || fail "SSE stream did not open"
expect 202 "publish for sse" POST "/api/v1/topics/interop/rest/sse/one" -H 'Content-Type: text/plain' --data-binary 'hello sse'
for _ in $(seq 50); do grep -q '^data: ' "$tmp/sse" && break; sleep 0.1; done
grep '^data: ' "$tmp/sse" | grep -q '"payload":"hello sse"' || fail "SSE got: $(cat "$tmp/sse")"
grep -q '^event: message' "$tmp/sse" || fail "SSE event name: $(cat "$tmp/sse")"
kill "$sse" 2>/dev/null || true
echo "ok: rest SSE receives a publish made by curl"

# Tokens: create one with credentials, use it, refuse a bad one.
expect 201 "create token" POST /api/v1/tokens -H 'Content-Type: application/json' \
	--data-binary '{"name":"alice","password":"alicepw","ttl":"10m"}'
token=$(json_field token <"$tmp/body")
[ -n "$token" ] || fail "no token in $(cat "$tmp/body")"
expect 202 "publish with token" POST /api/v1/topics/interop/rest/token -H "Authorization: Bearer $token" --data-binary x
expect 403 "user reads \$hub" GET '/api/v1/topics/$hub/devices/sensor1/presence' -H "Authorization: Bearer $token"
expect 401 "bad token" GET /api/v1/topics/interop/rest/token -H 'Authorization: Bearer not-a-token'
expect 401 "bad basic auth" GET /api/v1/topics/interop/rest/token -u alice:wrong
expect 201 "token by basic auth" POST /api/v1/tokens -u admin:adminpw
echo "ok: rest tokens created and used, bad credentials refused"

# Device commands: 404 unknown, 503 offline, a round trip with a device
# on mosquitto (MQTT 3.1.1 topic convention), then 503 again.
expect 404 "command to unknown device" POST "/api/v1/devices/nosuchdevice/commands/ping" --data-binary '{}'
expect 503 "command to offline device" POST "/api/v1/devices/sensor1/commands/ping?timeout=5s" --data-binary '{}'
echo "ok: rest command 404 for an unknown device, 503 for an offline one"

timeout 20 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u sensor1 -P sensor1pw -i sensor1-cmd -q 1 \
	-t 'devices/sensor1/commands/+' -C 1 >"$tmp/cmd.out" &
dev=$!
pids+=("$dev")
online=""
for _ in $(seq 50); do
	req GET /api/v1/devices/sensor1 >/dev/null || true
	if [ "$(json_field online <"$tmp/body")" = "True" ]; then online=1; break; fi
	sleep 0.1
done
[ -n "$online" ] || fail "sensor1 never shown online: $(cat "$tmp/body")"
(timeout 20 curl -sS -o "$tmp/reply" -w '%{http_code}' -X POST "$base/api/v1/devices/sensor1/commands/ping?timeout=10s" \
	-H 'Content-Type: application/json' --data-binary '{"n":1}' >"$tmp/reply.status") &
caller=$!
pids+=("$caller")
for _ in $(seq 100); do [ -s "$tmp/cmd.out" ] && break; sleep 0.1; done
reqid=$(json_field id <"$tmp/cmd.out") || fail "command payload: $(cat "$tmp/cmd.out")"
timeout 10 mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u sensor1 -P sensor1pw -i sensor1-reply -q 1 \
	-t "devices/sensor1/responses/$reqid" -m '{"pong":1}'
wait "$caller" || fail "command caller failed"
[ "$(cat "$tmp/reply.status")" = 200 ] || fail "command status $(cat "$tmp/reply.status"): $(cat "$tmp/reply")"
[ "$(cat "$tmp/reply")" = '{"pong":1}' ] || fail "command reply $(cat "$tmp/reply")"
wait "$dev" || true
echo "ok: rest command round trip with an MQTT device"

# 400 on a wildcard publish, 413 on a body above the limit (1 MiB).
expect 400 "wildcard publish" POST "/api/v1/topics/interop/%2B/x" --data-binary x
grep -q wildcards "$tmp/body" || fail "wildcard message: $(cat "$tmp/body")"
expect 400 "filter publish" POST "/api/v1/topics/interop/%23" --data-binary x
head -c 1100000 /dev/zero >"$tmp/big"
expect 413 "big body" POST /api/v1/topics/interop/rest/big --data-binary "@$tmp/big"
echo "ok: rest 400 on a wildcard publish, 413 on a big body"

# The OpenAPI document is served.
expect 200 "openapi" GET /api/v1/openapi.json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["openapi"].startswith("3.")' "$tmp/body" || fail "openapi.json"
echo "ok: rest OpenAPI document served"
