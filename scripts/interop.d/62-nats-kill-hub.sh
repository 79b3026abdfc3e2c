#!/usr/bin/env bash
# Cluster interop: kill -9 of a hub process (not of a NATS node) with
# devices on it and under QoS 1 load. Three hubs A, B, C on one Debian
# nats-server with JetStream, each started with --nats URL.
#
#   1. A persistent MQTT 5 session (mosquitto_sub -c -x 3600, QoS 1) on C
#      while mosquitto_pub -l sends a paced, numbered sequence at QoS 1
#      to A; C is killed with kill -9 mid-load; the same client ID
#      reconnects to B and resumes its session: every publish A
#      acknowledged (PUBACK reason < 0x80) arrives, duplicates counted.
#   2. An MQTT device (mosquitto_sub) and a CoAP device observing its
#      commands over DTLS PSK (coap-client-openssl) on C: after the kill
#      they show offline on A within a bounded time and a REST command on
#      A answers 503 at once; reconnected to B, a command on A reaches
#      each and its reply comes back.
#   3. C restarted on its data dir: the devices stay online on B (C's
#      stale presence does not take them back), a retained value set on A
#      while C was down is read on C, a new subscriber on C gets A's
#      publishes.
#   4. The publisher side: mosquitto_pub on C killed with C mid-load;
#      every publish C acknowledged reaches a persistent session on A.
#
# KILL_KEEP=1 keeps the work directory (the hubs' logs). KILL_RUNS=N repeats the load cases (1 and 4) N times; KILL_TOTAL and
# KILL_PACE set the sequence (default 2000 publishes, 2 ms apart). The
# figures go to stdout as "figure: ..." lines. Needs HUB_BIN,
# nats-server, mosquitto-clients, coap-client-openssl (libcoap3-bin),
# curl, python3.
set -euo pipefail
# shellcheck source=../lib/nats.sh
. "$(dirname "$0")/../lib/nats.sh"

for bin in nats-server mosquitto_pub mosquitto_sub coap-client-openssl curl python3; do
	command -v "$bin" >/dev/null || { echo "FAIL: $bin not installed"; exit 1; }
done

runs=${KILL_RUNS:-1} total=${KILL_TOTAL:-2000} pace=${KILL_PACE:-0.002}
work=$(mktemp -d)
nats_pid="" a_pid="" b_pid="" c_pid=""
bg=() # clients started in the background
cleanup() {
	for p in "${bg[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	stop_pid "$a_pid"
	stop_pid "$b_pid"
	stop_pid "$c_pid"
	stop_pid "$nats_pid"
	if [ -n "${KILL_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

NATS_PORT=$(free_port)
A_MQTT=$(free_port) A_HTTP=$(free_port)
B_MQTT=$(free_port) B_HTTP=$(free_port) B_COAPS=$(free_port)
C_MQTT=$(free_port) C_HTTP=$(free_port) C_COAPS=$(free_port)
start_nats "$NATS_PORT" "$work"

start_hub() { # name mqtt http coaps: starts a hub on the NATS, prints its pid
	"$HUB_BIN" serve --data-dir "$work/$1" --nats "nats://127.0.0.1:$NATS_PORT" \
		--mqtt-addr "127.0.0.1:$2" --http-addr "127.0.0.1:$3" --coaps-addr "$4" \
		--coap-addr off --xmpp-addr off >>"$work/$1.log" 2>&1 &
	echo $!
}
start_c() {
	c_pid=$(start_hub c "$C_MQTT" "$C_HTTP" "127.0.0.1:$C_COAPS")
	wait_healthy c "$C_HTTP" "$c_pid"
}
kill_c() { # kill -9 of C; returns once the process is gone
	kill -KILL "$c_pid"
	for _ in $(seq 100); do kill -0 "$c_pid" 2>/dev/null || break; sleep 0.05; done
	c_pid=""
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

# Devices and the admin are made with the CLI in A's store before A
# starts; A pushes them to the cluster, so B and C know them.
"$HUB_BIN" user add admin --password adminpw --role admin --data-dir "$work/a" >/dev/null
"$HUB_BIN" device add meter1 --protocol mqtt --password meter1pw --data-dir "$work/a" >/dev/null
"$HUB_BIN" device add cam1 --protocol coap --psk 63616d316b6579 --data-dir "$work/a" >/dev/null # "cam1key"
a_pid=$(start_hub a "$A_MQTT" "$A_HTTP" off)
b_pid=$(start_hub b "$B_MQTT" "$B_HTTP" "127.0.0.1:$B_COAPS")
wait_healthy a "$A_HTTP" "$a_pid"
wait_healthy b "$B_HTTP" "$b_pid"
start_c
echo "ok: hubs A, B and C healthy on one nats-server"

api() { # hub-http method path [curl args]: prints the body, the status in $work/status
	local port=$1 method=$2 path=$3
	shift 3
	curl -sS -m 20 -o "$work/body" -w '%{http_code}' -u admin:adminpw -X "$method" \
		"http://127.0.0.1:$port$path" "$@" >"$work/status" 2>/dev/null || echo 000 >"$work/status"
	cat "$work/body" 2>/dev/null || true
}
online() { # hub-http device: prints True or False
	api "$1" GET "/api/v1/devices/$2" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["online"])
except Exception: print("?")'
}
wait_online() { # hub-http device want tenths: waits until its online field is want
	for _ in $(seq "$4"); do
		[ "$(online "$1" "$2")" = "$3" ] && return 0
		sleep 0.1
	done
	return 1
}

# The devices on C. meter1: mosquitto_sub on its command topics; cam1:
# coap-client observing its command topics over DTLS PSK. Each prints a
# command's JSON as a line; answer() replies as the device.
mqtt_device() { # mqtt-port outfile
	stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$1" -u meter1 -P meter1pw -i meter1 -q 1 -t 'devices/meter1/commands/+' >"$2" 2>&1 &
	meter_pid=$!
	bg+=("$meter_pid")
	disown "$meter_pid" # no job notice when it is killed
}
coap_device() { # coaps-port outfile
	stdbuf -oL coap-client-openssl -u cam1 -k cam1key -s 600 -B 600 -m get \
		"coaps://127.0.0.1:$1/ps/devices/cam1/commands/+" >"$2" 2>&1 &
	cam_pid=$!
	bg+=("$cam_pid")
	disown "$cam_pid"
}
retry_login() { # mqtt-port: meter1 is known on that hub
	for _ in $(seq 100); do
		mosquitto_pub -h 127.0.0.1 -p "$1" -u meter1 -P meter1pw -i meter1-probe -q 1 -t devices/meter1/state -m up 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
retry_login "$C_MQTT" || fail "meter1, added on A, never logs in on C"
mqtt_device "$C_MQTT" "$work/meter.c"
coap_device "$C_COAPS" "$work/cam.c"
wait_online "$A_HTTP" meter1 True 100 || fail "meter1 on C never online on A: $(cat "$work/body")"
wait_online "$A_HTTP" cam1 True 100 || fail "cam1 on C never online on A: $(cat "$work/body")"
echo "ok: an MQTT device and a CoAP (DTLS) device on C are online on A"

# command DEVICE OUTFILE REPLY-CMD...: a REST command on A (ping), the
# device sees it in OUTFILE, REPLY-CMD answers with the request id as
# its last argument; the command must return 200 with the reply.
command_via_a() {
	local dev=$1 out=$2
	shift 2
	local seen
	seen=$(ids "$out" | wc -l)
	(api "$A_HTTP" POST "/api/v1/devices/$dev/commands/ping?timeout=10s" -H 'Content-Type: application/json' --data-binary '{"n":1}' >"$work/reply.$dev"
		cp "$work/status" "$work/reply.$dev.status") &
	local caller=$!
	local req=""
	for _ in $(seq 100); do
		if [ "$(ids "$out" | wc -l)" -gt "$seen" ]; then
			req=$(ids "$out" | tail -n 1)
			break
		fi
		sleep 0.1
	done
	[ -n "$req" ] || { wait "$caller" || true; fail "the command on A never reached $dev: $(cat "$out")"; }
	"$@" "$req"
	wait "$caller" || true
	[ "$(cat "$work/reply.$dev.status")" = 200 ] || fail "command to $dev: status $(cat "$work/reply.$dev.status"): $(cat "$work/reply.$dev")"
}
# ids FILE: the request ids of the commands in a device's output
# (coap-client prints notifications without a newline between them).
ids() { grep -o '"id":"[^"]*"' "$1" | sed -E 's/"id":"([^"]*)"/\1/' || true; }
reply_mqtt() { # mqtt-port req
	mosquitto_pub -h 127.0.0.1 -p "$1" -u meter1 -P meter1pw -i meter1-reply -q 1 -t "devices/meter1/responses/$2" -m '{"pong":"meter1"}'
}
reply_coap() { # coaps-port req
	local out
	out=$(timeout 15 coap-client-openssl -u cam1 -k cam1key -B 10 -m post -e '{"pong":"cam1"}' "coaps://127.0.0.1:$1/ps/devices/cam1/responses/$2" 2>&1)
	[ -z "$out" ] || fail "cam1's reply answered $out"
}
command_via_a meter1 "$work/meter.c" reply_mqtt "$C_MQTT"
command_via_a cam1 "$work/cam.c" reply_coap "$C_COAPS"
echo "ok: REST commands on A reach meter1 and cam1 on C and their replies come back"

# start_session SUB_PORT PUB_PORT ID TOPIC OUT: a persistent MQTT 5
# session ID (QoS 1, expiry 1 h) on the hub at SUB_PORT subscribed to
# TOPIC/#, its messages in OUT; sets session_pid. It succeeds once a
# message published on the hub at PUB_PORT reached it (the session then
# routes from there), and fails after 20 s without.
start_session() {
	: >"$5"
	stdbuf -oL mosquitto_sub -V 5 -h 127.0.0.1 -p "$1" -c -x 3600 -i "$3" -q 1 -t "$4/#" >"$5" 2>/dev/null &
	session_pid=$!
	bg+=("$session_pid")
	disown "$session_pid"
	for _ in $(seq 100); do
		grep -q '^ready$' "$5" && return 0
		mosquitto_pub -V 5 -h 127.0.0.1 -p "$2" -q 1 -t "$4/ready" -m ready 2>/dev/null || true
		sleep 0.2
	done
	grep -q '^ready$' "$5"
}

# start_loader PORT ID TOPIC LOG: mosquitto_pub ID sends $total numbered
# QoS 1 publishes ("n1", "n2", ...), $pace seconds apart, to TOPIC/x on
# the hub at PORT, logging its PUBACKs in LOG; sets loader_pid.
start_loader() {
	python3 -u -c 'import sys, time
for i in range(1, int(sys.argv[1]) + 1):
    print(f"n{i}", flush=True)
    time.sleep(float(sys.argv[2]))' "$total" "$pace" 2>/dev/null |
		timeout 120 stdbuf -oL mosquitto_pub -V 5 -h 127.0.0.1 -p "$1" -i "$2" -q 1 -t "$3/x" -l -d >"$4" 2>&1 &
	loader_pid=$!
	bg+=("$loader_pid")
}

# load_sub RUN: the persistent session on C, the paced publisher on A,
# kill -9 of C mid-load, the session resumed on B.
load_sub() {
	local run=$1 id="keeper$1" topic="load$1"
	start_session "$C_MQTT" "$A_MQTT" "$id" "$topic" "$work/got.c" || fail "the persistent session on C got nothing from A"
	local sp=$session_pid
	start_loader "$A_MQTT" "loader$run" "$topic" "$work/pub.log"
	local loader=$loader_pid
	for _ in $(seq 300); do
		[ "$(grep -c '^n' "$work/got.c" || true)" -ge $((total * 3 / 10)) ] && break
		sleep 0.05
	done
	local t0
	t0=$(now)
	kill_c
	kill -KILL "$sp" 2>/dev/null || true
	local before
	before=$(grep -c '^n' "$work/got.c" || true)
	# Devices: offline on A, and a command to them on A answers 503 at once.
	if [ "$run" = 1 ]; then
		wait_online "$A_HTTP" meter1 False 150 || fail "meter1 still online on A 15 s after kill -9 of its hub"
		echo "figure: kill -9 of C to meter1 offline on A: $(since "$t0") s"
		wait_online "$A_HTTP" cam1 False 150 || fail "cam1 still online on A 15 s after kill -9 of its hub"
		echo "figure: kill -9 of C to cam1 offline on A: $(since "$t0") s"
		for dev in meter1 cam1; do
			local tc
			tc=$(now)
			api "$A_HTTP" POST "/api/v1/devices/$dev/commands/ping?timeout=10s" -H 'Content-Type: application/json' --data-binary '{}' >/dev/null
			[ "$(cat "$work/status")" = 503 ] || fail "command on A to $dev of the dead hub: $(cat "$work/status") $(cat "$work/body"), want 503"
			echo "figure: command on A to $dev of the dead hub: 503 in $(since "$tc") s"
		done
	fi
	# The session resumes on B (same client ID, clean start off).
	: >"$work/got.b"
	stdbuf -oL mosquitto_sub -V 5 -h 127.0.0.1 -p "$B_MQTT" -c -x 3600 -i "$id" -q 1 -t "$topic/#" >"$work/got.b" 2>/dev/null &
	sp=$!
	bg+=("$sp")
	disown "$sp"
	local tb first=""
	tb=$(now)
	for _ in $(seq 300); do
		grep -q '^n' "$work/got.b" && { first=$(since "$tb"); break; }
		sleep 0.1
	done
	wait "$loader" || true
	grep -E 'received PUBACK \(Mid: [0-9]+, RC:([0-9]|[1-9][0-9]|1[01][0-9]|12[0-7])\)' "$work/pub.log" |
		sed -E 's/.*Mid: ([0-9]+),.*/n\1/' | sort -u >"$work/acked"
	local acked refused
	acked=$(wc -l <"$work/acked")
	refused=$(grep -cE 'received PUBACK \(Mid: [0-9]+, RC:(1[2-9][0-9]|2[0-9][0-9])\)' "$work/pub.log" || true)
	[ "$acked" -gt 0 ] || fail "no publish acknowledged by A: $(tail -n 5 "$work/pub.log")"
	local missing=1
	for _ in $(seq 900); do # up to 90 s: in flight to C comes again after AckWait (30 s)
		missing=$(cat "$work/got.c" "$work/got.b" | grep '^n' | sort -u | comm -23 "$work/acked" - | wc -l)
		[ "$missing" -gt 0 ] || break
		sleep 0.1
	done
	local done_at
	done_at=$(since "$t0")
	kill -KILL "$sp" 2>/dev/null || true
	[ "$missing" -eq 0 ] || fail "run $run: kill -9 of C lost $missing of $acked acknowledged QoS 1 publishes: $(cat "$work/got.c" "$work/got.b" | grep '^n' | sort -u | comm -23 "$work/acked" - | head -n 5 | tr '\n' ' ')"
	local delivered unique
	delivered=$(cat "$work/got.c" "$work/got.b" | grep -c '^n' || true)
	unique=$(cat "$work/got.c" "$work/got.b" | grep '^n' | sort -u | wc -l)
	echo "ok: run $run: kill -9 of the subscriber's hub C under QoS 1 load: all $acked acknowledged publishes reach the session resumed on B"
	echo "figure: run $run subscriber side: sent $total, acknowledged $acked, refused $refused, delivered $delivered ($before on C before the kill), duplicates $((delivered - unique)); first delivery on B $first s after its reconnect, the last acknowledged one $done_at s"
}

# load_pub RUN: the paced publisher on C, kill -9 of C mid-load, a
# persistent session on A gets every publish C acknowledged.
load_pub() {
	local run=$1 id="collector$1" topic="cload$1"
	start_session "$A_MQTT" "$C_MQTT" "$id" "$topic" "$work/got.a" || fail "the persistent session on A got nothing from C"
	local sp=$session_pid
	start_loader "$C_MQTT" "cloader$run" "$topic" "$work/cpub.log"
	local loader=$loader_pid
	for _ in $(seq 300); do
		[ "$(grep -c 'received PUBACK' "$work/cpub.log" || true)" -ge $((total * 3 / 10)) ] && break
		sleep 0.05
	done
	local t0
	t0=$(now)
	kill_c
	# mosquitto_pub would retry C for ever: stop it, C is gone.
	kill -TERM "$loader" 2>/dev/null || true # timeout passes it on
	wait "$loader" 2>/dev/null || true
	grep -E 'received PUBACK \(Mid: [0-9]+, RC:([0-9]|[1-9][0-9]|1[01][0-9]|12[0-7])\)' "$work/cpub.log" |
		sed -E 's/.*Mid: ([0-9]+),.*/n\1/' | sort -u >"$work/cacked"
	local acked
	acked=$(wc -l <"$work/cacked")
	[ "$acked" -gt 0 ] || fail "no publish acknowledged by C"
	local missing=1
	for _ in $(seq 600); do
		missing=$(grep '^n' "$work/got.a" | sort -u | comm -23 "$work/cacked" - | wc -l)
		[ "$missing" -gt 0 ] || break
		sleep 0.1
	done
	local done_at
	done_at=$(since "$t0")
	kill -KILL "$sp" 2>/dev/null || true
	[ "$missing" -eq 0 ] || fail "run $run: kill -9 of the publisher's hub C lost $missing of $acked acknowledged QoS 1 publishes"
	local delivered unique
	delivered=$(grep -c '^n' "$work/got.a" || true)
	unique=$(grep '^n' "$work/got.a" | sort -u | wc -l)
	echo "ok: run $run: kill -9 of the publisher's hub C under QoS 1 load: all $acked publishes C acknowledged reach the session on A"
	echo "figure: run $run publisher side: acknowledged by C $acked of $total, delivered on A $delivered (unique $unique, beyond the acknowledged $((unique - acked))), duplicates $((delivered - unique)); the last acknowledged one $done_at s after the kill"
}

for run in $(seq "$runs"); do
	load_sub "$run"
	if [ "$run" = 1 ]; then
		# The devices move to B; commands on A reach them there.
		kill -KILL "$meter_pid" "$cam_pid" 2>/dev/null || true
		t1=$(now)
		mqtt_device "$B_MQTT" "$work/meter.b"
		coap_device "$B_COAPS" "$work/cam.b"
		wait_online "$A_HTTP" meter1 True 600 || fail "meter1 reconnected to B never online on A"
		echo "figure: meter1 reconnected to B to online on A: $(since "$t1") s"
		wait_online "$A_HTTP" cam1 True 600 || fail "cam1 reconnected to B never online on A"
		echo "figure: cam1 reconnected to B to online on A: $(since "$t1") s"
		command_via_a meter1 "$work/meter.b" reply_mqtt "$B_MQTT"
		command_via_a cam1 "$work/cam.b" reply_coap "$B_COAPS"
		echo "ok: after kill -9 of C: its devices offline on A, commands 503; reconnected to B, commands on A reach them"
		# Published while C is down.
		mosquitto_pub -V 5 -h 127.0.0.1 -p "$A_MQTT" -q 1 -r -t room/state -m while-c-was-down
	fi
	start_c
	if [ "$run" = 1 ]; then
		# C's store still shows the devices online as of its last run; it
		# must neither take them back nor mark them offline.
		# Watched for 4 s, past HubTTL and a heartbeat.
		end=$(($(date +%s) + 4))
		while [ "$(date +%s)" -le "$end" ]; do
			for dev in meter1 cam1; do
				for hub in "$A_HTTP" "$C_HTTP"; do
					[ "$(online "$hub" "$dev")" = True ] || fail "$dev on B shown offline (hub port $hub) after C restarted: $(cat "$work/body")"
				done
			done
		done
		command_via_a meter1 "$work/meter.b" reply_mqtt "$B_MQTT"
		command_via_a cam1 "$work/cam.b" reply_coap "$B_COAPS"
		got=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$C_MQTT" -t room/state -C 1 -W 5 2>/dev/null || true)
		[ "$got" = while-c-was-down ] || fail "retained value set on A while C was down, read on restarted C: '$got'"
		: >"$work/live.c"
		stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$C_MQTT" -q 1 -t 'live/#' >"$work/live.c" 2>/dev/null &
		lp=$!
		bg+=("$lp")
		disown "$lp"
		for _ in $(seq 100); do
			grep -q . "$work/live.c" && break
			mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -t live/x -m hello 2>/dev/null || true
			sleep 0.1
		done
		kill -KILL "$lp" 2>/dev/null || true
		grep -q '^hello$' "$work/live.c" || fail "a new subscriber on the restarted C gets nothing from A"
		# The devices leave B: offline everywhere, C's old state included.
		kill -KILL "$meter_pid" "$cam_pid" 2>/dev/null || true
		wait_online "$A_HTTP" meter1 False 150 || fail "meter1 gone from B still online on A"
		wait_online "$C_HTTP" meter1 False 150 || fail "meter1 gone from B still online on C"
		echo "ok: C restarted: devices stay online on B, commands reach them there, C reads what A retained meanwhile, new subscribers on C get A's publishes"
	fi
	load_pub "$run"
	start_c
done
