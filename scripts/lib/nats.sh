# Helpers shared by the cluster interop cases (scripts/interop.d/6*-nats*.sh):
# sourced, not run. Loopback only.

# stop_pid PID: TERM, then KILL after 5 s.
stop_pid() {
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
}

# free_port comes from ports.sh, beside this file.
# shellcheck source=ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# wait_port PORT: waits up to 5 s for a listener on 127.0.0.1:PORT.
wait_port() {
	for _ in $(seq 50); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# start_nats PORT DIR: one Debian nats-server with JetStream (store in
# DIR); sets nats_pid and waits for its port.
start_nats() {
	nats-server -a 127.0.0.1 -p "$1" -js -sd "$2/nats" >"$2/nats.log" 2>&1 &
	nats_pid=$!
	if ! wait_port "$1" || ! kill -0 "$nats_pid" 2>/dev/null; then
		echo "FAIL: nats-server did not start on $1"; tail -n 40 "$2/nats.log"; exit 1
	fi
	echo "ok: $(nats-server --version) with JetStream on $1"
}

# wait_healthy NAME HTTP_PORT PID [TRIES]: waits for the hub's /healthz
# (TRIES tenths of a second, default 150), else prints its log and exits.
wait_healthy() {
	for _ in $(seq "${4:-150}"); do
		curl -fsS "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.1
	done
	# (Every step may fail: under set -e and pipefail, a failing one
	# would end the report before the NATS server's log.)
	echo "FAIL: hub $1 did not become healthy"; cat "$work/$1.log" || true
	if kill -0 "$3" 2>/dev/null; then echo "(hub $1 is running)"; else echo "(hub $1 has exited)"; fi
	{ curl -sS "http://127.0.0.1:$2/healthz" 2>&1 | head -c 2000; } || true
	echo
	if [ -n "${nats_pid:-}" ]; then
		if kill -0 "$nats_pid" 2>/dev/null; then echo "(nats-server is running)"; else echo "(nats-server has exited)"; fi
	fi
	if [ -f "$work/nats.log" ]; then echo "--- nats-server's log (tail)"; tail -n 40 "$work/nats.log" || true; fi
	exit 1
}

# need_bins BIN...: fails the case when one of them is not installed.
need_bins() {
	for bin in "$@"; do
		command -v "$bin" >/dev/null || { echo "FAIL: $bin not installed"; exit 1; }
	done
}

# start_xmpp_hub NAME XMPP_PORT HTTP_PORT: a hub on the NATS at
# $NATS_PORT serving XMPP (domain localhost) and HTTP only, its data dir
# $work/NAME holding the users alice and bob (passwords alicepw, bobpw)
# and admin (adminpw), and whatever the function hub_setup DIR adds when
# the case defines it; prints the hub's pid.
start_xmpp_hub() {
	for u in alice bob; do
		"$HUB_BIN" user add "$u" --password "${u}pw" --role user --data-dir "$work/$1" >/dev/null
	done
	"$HUB_BIN" user add admin --password adminpw --role admin --data-dir "$work/$1" >/dev/null
	if declare -F hub_setup >/dev/null; then hub_setup "$work/$1"; fi
	"$HUB_BIN" serve --data-dir "$work/$1" --nats "nats://127.0.0.1:$NATS_PORT" \
		--xmpp-addr "127.0.0.1:$2" --xmpp-domain localhost --xmpp-proxy-addr off --http-addr "127.0.0.1:$3" \
		--mqtt-addr off --coap-addr off --coaps-addr off >>"$work/$1.log" 2>&1 &
	echo $!
}
