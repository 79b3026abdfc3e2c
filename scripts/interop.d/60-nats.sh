#!/usr/bin/env bash
# Cluster interop: two hubs on an external NATS (Debian's nats-server with
# JetStream), each started with --nats URL. An MQTT publish on A reaches
# an MQTT subscriber on B once; a retained value set on A is read on B
# over REST; a persistent MQTT session made on A resumes on B with what
# was published while it was away; kill -9 of hub A under QoS 1 load
# loses nothing A acknowledged. Needs HUB_BIN, nats-server,
# mosquitto-clients, curl.
set -euo pipefail
# shellcheck source=../lib/nats.sh
. "$(dirname "$0")/../lib/nats.sh"


for bin in nats-server mosquitto_pub mosquitto_sub curl python3; do
	command -v "$bin" >/dev/null || { echo "FAIL: $bin not installed"; exit 1; }
done

work=$(mktemp -d)
nats_pid="" a_pid="" b_pid=""
cleanup() {
	stop_pid "$a_pid"
	stop_pid "$b_pid"
	stop_pid "$nats_pid"
	rm -rf "$work"
}
trap cleanup EXIT

NATS_PORT=$(free_port) A_MQTT=$(free_port) A_HTTP=$(free_port) B_MQTT=$(free_port) B_HTTP=$(free_port)

start_nats "$NATS_PORT" "$work"

start_hub() { # name mqtt http: starts a hub on the NATS, prints its pid
	"$HUB_BIN" serve --data-dir "$work/$1" --nats "nats://127.0.0.1:$NATS_PORT" \
		--mqtt-addr "127.0.0.1:$2" --http-addr "127.0.0.1:$3" \
		--coap-addr off --coaps-addr off --xmpp-addr off >>"$work/$1.log" 2>&1 &
	echo $!
}
a_pid=$(start_hub a "$A_MQTT" "$A_HTTP")
b_pid=$(start_hub b "$B_MQTT" "$B_HTTP")
wait_healthy a "$A_HTTP" "$a_pid"
wait_healthy b "$B_HTTP" "$b_pid"
echo "ok: hubs A and B healthy on the NATS"

out="$work/sub.b"
timeout 20 mosquitto_sub -h 127.0.0.1 -p "$B_MQTT" -t 'room/#' -q 1 -W 3 -v >"$out" 2>&1 &
sp=$!
sleep 0.5
mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -t room/temp -m 21.5
wait "$sp" || true
[ "$(grep -v "^Timed out" "$out")" = "room/temp 21.5" ] || { echo "FAIL: MQTT A -> B: got '$(cat "$out")' (want one message)"; exit 1; }
echo "ok: an MQTT publish on A reaches an MQTT subscriber on B, once"

mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -r -t room/state -m open
got=""
for _ in $(seq 50); do
	got=$(curl -fsS "http://127.0.0.1:$B_HTTP/api/v1/topics/room/state" 2>/dev/null || true)
	[ "$got" = "open" ] && break
	sleep 0.1
done
[ "$got" = "open" ] || { echo "FAIL: retained on A, read on B: got '$got'"; exit 1; }
echo "ok: a retained value set on A is read on B over REST"

timeout 10 mosquitto_sub -h 127.0.0.1 -p "$A_MQTT" -c -i roamer -q 1 -t 'roam/#' -W 1 >/dev/null 2>&1 || true
for i in 1 2 3; do mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -t roam/x -m "m$i"; done
got=$(timeout 15 mosquitto_sub -h 127.0.0.1 -p "$B_MQTT" -c -i roamer -q 1 -t 'roam/#' -C 3 -W 10 2>&1 | tr '\n' ' ' || true)
[ "$got" = "m1 m2 m3 " ] || { echo "FAIL: session made on A resumed on B: got '$got'"; exit 1; }
echo "ok: a persistent MQTT session made on A resumes on B with its 3 queued messages"

# kill -9 of A while it takes QoS 1 publishes: every one it acknowledged
# reaches the persistent session on B (duplicates allowed, none lost).
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$B_MQTT" -c -i keeper -q 1 -t 'load/#' -W 1 >/dev/null 2>&1 || true
acked="$work/acked"
: >"$acked"
(
	for i in $(seq 1 400); do
		mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -t load/x -m "n$i" 2>/dev/null && echo "n$i" >>"$acked" || break
	done
) &
loader=$!
sleep 1
kill -KILL "$a_pid"
a_pid=""
wait "$loader" || true
n=$(wc -l <"$acked")
[ "$n" -gt 0 ] || { echo "FAIL: no publish acknowledged before the kill"; exit 1; }
timeout 30 mosquitto_sub -h 127.0.0.1 -p "$B_MQTT" -c -i keeper -q 1 -t 'load/#' -W 5 >"$work/got" 2>&1 || true
missing=$(sort "$acked" | comm -23 - <(sort -u "$work/got") | wc -l)
[ "$missing" -eq 0 ] || { echo "FAIL: kill -9 of A lost $missing of $n acknowledged QoS 1 publishes"; exit 1; }
echo "ok: kill -9 of hub A under QoS 1 load: all $n acknowledged publishes reach B"
