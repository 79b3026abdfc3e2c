#!/usr/bin/env bash
# Interop test: builds the hub, starts it on free loopback ports with a
# fresh data dir, and drives it with third-party clients users already have
# (mosquitto-clients, libcoap's coap-client, slixmpp, curl). Each protocol's
# cases live in scripts/interop.d/*.sh and get the ports in the environment.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
hub_pid=""
cleanup() {
	if [ -n "$hub_pid" ] && kill -0 "$hub_pid" 2>/dev/null; then
		kill -TERM "$hub_pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$hub_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$hub_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=lib/ports.sh
. "$root/scripts/lib/ports.sh"

export HUB_BIN="$work/hub" HUB_DATA="$work/data" XMPP_DOMAIN=localhost
export MQTT_PORT=$(free_port tcp) MQTT_WS_PORT=$(free_port tcp) HTTP_PORT=$(free_port tcp) XMPP_PORT=$(free_port tcp) COAP_PORT=$(free_port udp) COAPS_PORT=$(free_port udp)
export XMPP_PROXY_PORT=$(free_port tcp)
(cd "$root" && go build -tags nomsgpack -o "$HUB_BIN" ./cmd/hub) # as released (.ci/run)

"$HUB_BIN" user add admin --password adminpw --role admin --data-dir "$HUB_DATA" >/dev/null
"$HUB_BIN" user add alice --password alicepw --role user --data-dir "$HUB_DATA" >/dev/null
"$HUB_BIN" device add sensor1 --protocol mqtt --password sensor1pw --psk 73656372657431 --data-dir "$HUB_DATA" >/dev/null

# Small file limits, so the file cases reach them quickly; a CoAP upload
# left idle for 2 s is discarded.
cat >"$work/hub.yaml" <<'YAML'
files:
  max_file_size: 8MiB
  quota_per_principal: 12MiB
  coap_upload_timeout: 2s
YAML
export HUB_FILES_MAX=8388608 HUB_FILES_QUOTA=12582912

"$HUB_BIN" serve --config "$work/hub.yaml" --data-dir "$HUB_DATA" \
	--mqtt-addr "127.0.0.1:$MQTT_PORT" --mqtt-ws-addr "127.0.0.1:$MQTT_WS_PORT" --coap-addr "127.0.0.1:$COAP_PORT" --coaps-addr "127.0.0.1:$COAPS_PORT" \
	--xmpp-addr "127.0.0.1:$XMPP_PORT" --xmpp-domain "$XMPP_DOMAIN" --xmpp-proxy-addr "127.0.0.1:$XMPP_PROXY_PORT" \
	--http-addr "127.0.0.1:$HTTP_PORT" >"$work/hub.log" 2>&1 &
hub_pid=$!

ready=""
for _ in $(seq 100); do
	if curl -fsS "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1; then ready=1; break; fi
	kill -0 "$hub_pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$ready" ]; then
	echo "FAIL: hub did not become healthy"; cat "$work/hub.log"; exit 1
fi
echo "ok: hub healthy (mqtt $MQTT_PORT, coap $COAP_PORT, coaps $COAPS_PORT, xmpp $XMPP_PORT, http $HTTP_PORT)"

passed=0 failed=0
for s in "$root"/scripts/interop.d/*${INTEROP_ONLY:-}*.sh; do # INTEROP_ONLY=47: only the matching cases
	[ -e "$s" ] || continue
	name=$(basename "$s")
	echo "--- $name"
	if timeout 300 bash "$s"; then
		passed=$((passed + 1))
	else
		echo "FAIL: $name"
		failed=$((failed + 1))
	fi
done
if ! kill -0 "$hub_pid" 2>/dev/null; then
	echo "FAIL: the hub died during the interop run"; failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then
	echo "--- hub log (last 80 lines)"; tail -n 80 "$work/hub.log"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
