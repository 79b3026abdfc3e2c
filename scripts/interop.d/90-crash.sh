#!/usr/bin/env bash
# Crash durability with third-party clients: a second hub of its own
# (HUB_BIN, a fresh data dir, free ports) takes QoS 1 publishes from
# mosquitto_pub, curl and coap-client while a Mosquitto persistent session
# is away, is killed with SIGKILL, restarts, and the session must get every
# acknowledged message. Needs HUB_BIN; every wait is bounded.
set -euo pipefail

: "${HUB_BIN:?HUB_BIN is not set}"
tmp=$(mktemp -d)
hub_pid=
cleanup() {
	if [ -n "$hub_pid" ]; then kill -9 "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/hub.log" ] && tail -20 "$tmp/hub.log"; exit 1; }

coap_client=""
for c in coap-client coap-client-notls coap-client-openssl coap-client-gnutls; do
	if command -v "$c" >/dev/null 2>&1; then coap_client=$c; break; fi
done
[ -n "$coap_client" ] || fail "no coap-client (install libcoap3-bin)"

# shellcheck source=../lib/ports.sh
. "$(dirname "$0")/../lib/ports.sh"
read -r MQ HT XM CO < <(free_ports 4 both)
data="$tmp/data"
timeout 30 "$HUB_BIN" user add alice --password alicepw --data-dir "$data" >/dev/null

start_hub() {
	"$HUB_BIN" serve --data-dir "$data" --mqtt-addr "127.0.0.1:$MQ" --http-addr "127.0.0.1:$HT" \
		--xmpp-addr "127.0.0.1:$XM" --coap-addr "127.0.0.1:$CO" --log-level warn >>"$tmp/hub.log" 2>&1 &
	hub_pid=$!
	for _ in $(seq 150); do
		curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HT/healthz" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "hub not healthy on :$HT"
}

start_hub
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$MQ" -c -i crash-away -q 1 -t crash/x -W 1 >/dev/null 2>&1 || true
want=()
for i in $(seq 10); do
	timeout 5 mosquitto_pub -h 127.0.0.1 -p "$MQ" -q 1 -t crash/x -m "mqtt-$i" || fail "mosquitto_pub $i"
	want+=("mqtt-$i")
	code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H 'Content-Type: text/plain' \
		--data "rest-$i" "http://127.0.0.1:$HT/api/v1/topics/crash/x?qos=1")
	[ "$code" = 200 ] || fail "REST publish $i: $code"
	want+=("rest-$i")
	# coap-client prints nothing for 2.04 and the code for an error.
	out=$(timeout 15 "$coap_client" -B 10 -m post -t 0 -e "coap-$i" "coap://127.0.0.1:$CO/ps/crash/x" 2>&1) || fail "coap-client $i: $out"
	[ -z "$out" ] || fail "coap POST $i answered $out"
	want+=("coap-$i")
done
echo "ok: 30 QoS 1 publishes acknowledged (mosquitto_pub, curl, coap-client)"

kill -9 "$hub_pid"
wait "$hub_pid" 2>/dev/null || true # bash reports the kill; expected
hub_pid=
start_hub
echo "ok: hub restarted after SIGKILL"

timeout 20 mosquitto_sub -h 127.0.0.1 -p "$MQ" -c -i crash-away -q 1 -t crash/x -C 30 -W 15 >"$tmp/got" 2>&1 || true
for m in "${want[@]}"; do
	grep -qx "$m" "$tmp/got" || fail "persistent session did not get $m after kill -9 (got $(wc -l <"$tmp/got") lines)"
done
echo "ok: the Mosquitto persistent session got all 30 after kill -9"
