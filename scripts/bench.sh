#!/usr/bin/env bash
# Benchmark: the hub against the servers a user would pick instead, side
# by side on this machine, with cmd/hubload. Targets:
#   hub        the hub binary (fresh data dir, default configuration)
#   mochi      a bare mochi-mqtt broker at the hub's go.mod version as
#              published (not the hub's patched copy in third_party/),
#              default options (`hubload mochi`, built without the replace)
#   mosquitto  Debian's Mosquitto (persistence off, Debian's defaults)
#   prosody    Debian's Prosody (STARTTLS, internal_plain accounts)
#   ejabberd   Debian's ejabberd (STARTTLS, SCRAM accounts; mod_mqtt as an
#              MQTT peer)
# A target whose binary is missing or that does not start is skipped with a
# note; its column shows "-".
#
# The table (every case alternates targets, BENCH_RUNS times; medians):
#   MQTT QoS 0/1 throughput 1->1, 1->100, 100->1   hub mochi mosquitto ejabberd
#   QoS 1 1->1 paced at 5,000 msg/s (p99)          hub mochi mosquitto ejabberd
#   QoS 1 1->1 to a persistent session (hub: durable, every copy in the
#     store's WAL before its PUBACK, the default sync_interval of 1s) against
#     the others' clean QoS 1 1->1
#   XMPP chat: 20 pairs at 3,000 msg/s; 50 pairs at 9,000 msg/s (180 per
#     connection: the hub's default c2s limit is 200 stanzas/s)   hub prosody ejabberd
#   XMPP c2s logins (STARTTLS + SASL + bind), 4 workers            hub prosody ejabberd
#   topic JID delivery (MQTT publish -> XMPP subscriber), cross-protocol p99
#     at 1,000 msg/s (CoAP->MQTT, MQTT->XMPP, MQTT->SSE)            hub only
# and, once per target on a freshly started process:
#   start-up to ready (hub: /healthz answers; others: the port accepts;
#   the median over every start, the hub's first on a new data dir),
#   idle RSS, RSS per idle MQTT connection (BENCH_IDLE_MQTT of them), per
#   idle XMPP c2s session (BENCH_IDLE_XMPP), and for the hub 10,000 idle
#   MQTT + 1,000 XMPP sessions together; peak RSS of the fan-out runs.
#
# Usage: scripts/bench.sh [--quick]
# Environment (defaults in brackets):
#   BENCH_RUNS [3]              runs of each case per target
#   BENCH_TARGETS ["hub mochi mosquitto prosody ejabberd"]
#   BENCH_MESSAGES [20000]      messages of the 1->1 and 100->1 cases
#   BENCH_FANOUT_MESSAGES [1000]  messages of the 1->100 cases (x100 deliveries)
#   BENCH_IDLE_MQTT [2000]      idle MQTT connections per target
#   BENCH_IDLE_XMPP [1000]      idle XMPP sessions per target (over BENCH_USERS accounts)
#   BENCH_BIG_MQTT [10000] BENCH_BIG_XMPP [1000]  the hub's big idle case
#   BENCH_IDLE_WAIT [10s]       how long the idle sessions stay idle, on every
#                               target, before their RSS is read (hubload idle
#                               --idle: the hub parks a client idle for 2 s)
#   BENCH_USERS [100]           XMPP accounts load0.. (password loadpw) per target
#   BENCH_SIZE [64]             payload bytes
#   BENCH_MQTT_CLIENT [lean]    hubload's MQTT client (lean or paho) in every case with MQTT
#   BENCH_OUT [temp dir]        where the JSON of every run is kept
# Every throughput case also reads the server's utime+stime (/proc/PID/stat)
# before and after its hubload run (TARGET.CASE.RUN.cpu: ticks, CLK_TCK):
# the report's "cpu µs/msg" is that over the deliveries received.
# --quick: one run, small counts (a smoke run of the whole script).
# Only loopback addresses are used; every hubload run is bounded by
# --duration and its drain time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_RUNS:-3}
targets=${BENCH_TARGETS:-hub mochi mosquitto prosody ejabberd}
messages=${BENCH_MESSAGES:-20000}
fanout_messages=${BENCH_FANOUT_MESSAGES:-1000}
idle_mqtt=${BENCH_IDLE_MQTT:-2000}
idle_xmpp=${BENCH_IDLE_XMPP:-1000}
big_mqtt=${BENCH_BIG_MQTT:-10000}
big_xmpp=${BENCH_BIG_XMPP:-1000}
idle_wait=${BENCH_IDLE_WAIT:-10s}
users=${BENCH_USERS:-100}
size=${BENCH_SIZE:-64}
mqtt_client=${BENCH_MQTT_CLIENT:-lean}
chat_pairs=20 chat_rate=3000 max_pairs=50 max_rate=9000 paced_secs=3 rate_5k=5000 cross_rate=1000
if [ "${1:-}" = "--quick" ]; then
	runs=1 messages=2000 fanout_messages=100 idle_mqtt=200 idle_xmpp=50 big_mqtt=500 big_xmpp=50 users=20 idle_wait=3s
	chat_pairs=4 chat_rate=400 max_pairs=10 max_rate=1000 paced_secs=1 rate_5k=2000 cross_rate=500
elif [ -n "${1:-}" ]; then
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
fi
[ "$users" -ge $((2 * max_pairs)) ] || users=$((2 * max_pairs))

work=$(mktemp -d)
out=${BENCH_OUT:-$work/results}
mkdir -p "$out"
declare -A pid mqtt xmpp http coap
epmd_before=$(pgrep -x epmd || true)

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
	local p=$1
	[ -n "$p" ] || return 0
	kill -0 "$p" 2>/dev/null || return 0
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
	for t in "${!pid[@]}"; do stop_target "$t"; done
	if [ -z "$epmd_before" ]; then
		for p in $(pgrep -x epmd || true); do stop_pid "$p"; done
	fi
	[ -n "${BENCH_OUT:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=lib/ports.sh
. "$root/scripts/lib/ports.sh"
tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
now_ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# cpu_ticks pid: utime + stime of pid in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
clk_tck=$(getconf CLK_TCK)
note() { echo "note: $*" | tee -a "$out/notes.txt"; }
# record name value: one figure of the memory/start-up part
record() { echo "$1 $2" >>"$out/figures.txt"; }

echo "building hub and hubload ..."
(cd "$root" && go build -o "$work/hubload" ./cmd/hubload && go build -tags nomsgpack -o "$work/hub" ./cmd/hub)
# The mochi target is mochi-mqtt as published, not the hub's patched copy.
. "$root/scripts/lib/mochi-upstream.sh"
build_upstream_hubload "$root" "$work"
# The hub as installed: its pages read from disk, not left in the page
# cache by the linker (that state moved its idle RSS by up to 2 MiB).
dd if="$work/hub" iflag=nocache count=0 status=none
hubload=$work/hubload

# Accounts load0..load{users-1}, password loadpw, for each XMPP target.
mkdir -p "$work/hub-template"
if [[ " $targets " == *" hub "* ]]; then
	for i in $(seq 0 $((users - 1))); do
		"$work/hub" user add "load$i" --password loadpw --data-dir "$work/hub-template" >/dev/null
	done
fi

# start_TARGET sets pid[t] and the URLs, and prints the start-up time in
# ms; it returns non-zero when the target cannot start.
start_hub() {
	# The first start initialises the data dir (its XMPP certificate);
	# later ones are restarts, as after a reboot.
	[ -d "$work/hub-data" ] || cp -a "$work/hub-template" "$work/hub-data"
	local m x h px c
	m=$(free_port) x=$(free_port) h=$(free_port) px=$(free_port) c=$(free_port udp)
	# The per-address and per-user limits would refuse the load
	# generator's thousands of connections from one address and account.
	cat >"$work/hub.yaml" <<-'EOF'
		limits:
		  max_connections: -1
		  max_connections_per_address: -1
		  max_connections_per_user: -1
		  max_resources_per_user: -1
		  max_persistent_sessions_per_user: -1
	EOF
	local t0
	t0=$(now_ms)
	"$work/hub" serve --config "$work/hub.yaml" --data-dir "$work/hub-data" --mqtt-addr "127.0.0.1:$m" --xmpp-addr "127.0.0.1:$x" \
		--xmpp-proxy-addr "127.0.0.1:$px" --http-addr "127.0.0.1:$h" --coap-addr "127.0.0.1:$c" \
		--log-level warn >>"$work/hub.log" 2>&1 &
	pid[hub]=$!
	for _ in $(seq 1000); do
		if curl -fsS "http://127.0.0.1:$h/healthz" >/dev/null 2>&1; then
			echo $(($(now_ms) - t0))
			mqtt[hub]=tcp://127.0.0.1:$m xmpp[hub]=xmpp://127.0.0.1:$x http[hub]=http://127.0.0.1:$h coap[hub]=coap://127.0.0.1:$c
			return 0
		fi
		kill -0 "${pid[hub]}" 2>/dev/null || break
		sleep 0.005
	done
	tail -n 20 "$work/hub.log" >&2
	return 1
}
start_mochi() {
	local m t0
	m=$(free_port)
	t0=$(now_ms)
	"$work/hubload-upstream" mochi --addr "127.0.0.1:$m" >>"$work/mochi.log" 2>&1 &
	pid[mochi]=$!
	wait_ready mochi "$m" "$t0" && mqtt[mochi]=tcp://127.0.0.1:$m
}
start_mosquitto() {
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || return 1
	local m t0
	m=$(free_port)
	cat >"$work/mosquitto.conf" <<EOF
# Debian's defaults otherwise (max_inflight_messages 20, max_queued_messages 1000)
listener $m 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
EOF
	t0=$(now_ms)
	"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
	pid[mosquitto]=$!
	wait_ready mosquitto "$m" "$t0" && mqtt[mosquitto]=tcp://127.0.0.1:$m
}
start_prosody() {
	command -v prosody >/dev/null || return 1
	local d=$work/prosody c t0
	rm -rf "$d" && mkdir -p "$d/data/localhost/accounts"
	[ -f "$work/cert.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
		-days 2 -subj /CN=localhost 2>/dev/null
	c=$(free_port)
	cat >"$d/prosody.cfg.lua" <<EOF
pidfile = "$d/prosody.pid"
data_path = "$d/data"
run_as_root = true
daemonize = false
log = { { levels = { min = "error" }, to = "file", filename = "$d/prosody.log" } }
interfaces = { "127.0.0.1" }
c2s_ports = { $c }
s2s_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix" }
modules_disabled = { "s2s" }
authentication = "internal_plain"
c2s_require_encryption = true
ssl = { certificate = "$work/cert.pem"; key = "$work/key.pem"; }
VirtualHost "localhost"
EOF
	for i in $(seq 0 $((users - 1))); do
		echo 'return { ["password"] = "loadpw"; };' >"$d/data/localhost/accounts/load$i.dat"
	done
	t0=$(now_ms)
	prosody --config "$d/prosody.cfg.lua" -F >>"$d/out.log" 2>&1 &
	pid[prosody]=$!
	wait_ready prosody "$c" "$t0" && xmpp[prosody]=xmpp://127.0.0.1:$c
}
ej_ctl() { ejabberdctl --config "$work/ejabberd/ejabberd.yml" --ctl-config "$work/ejabberd/ejabberdctl.cfg" \
	--spool "$work/ejabberd/spool" --logs "$work/ejabberd/logs" --node "hubbench$$@localhost" "$@"; }
start_ejabberd() {
	command -v ejabberdctl >/dev/null || return 1
	local d=$work/ejabberd c m h t0
	rm -rf "$d" && mkdir -p "$d/spool" "$d/logs"
	c=$(free_port) m=$(free_port) h=$(free_port)
	grep -v '^EJABBERD_CONFIG_PATH\|^EJABBERD_PID_PATH\|^INET_DIST_INTERFACE\|^ERL_EPMD_ADDRESS' /etc/ejabberd/ejabberdctl.cfg >"$d/ejabberdctl.cfg"
	printf 'INET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_EPMD_ADDRESS\n' >>"$d/ejabberdctl.cfg"
	# ejabberdctl runs the VM through su, which resets the open-files
	# limit to 1024; raise it (the file is sourced by that shell too).
	# ejabberd still stops accepting at about 1,000 connections here, for
	# a reason not found: its idle cases then fail and show "-".
	echo 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true' >>"$d/ejabberdctl.cfg"
	cat >"$d/ejabberd.yml" <<EOF
hosts:
  - localhost
loglevel: error
certfiles:
  - /etc/ejabberd/ejabberd.pem
listen:
  - {port: $c, ip: "127.0.0.1", module: ejabberd_c2s, starttls: true, starttls_required: true, max_stanza_size: 262144, access: c2s}
  - {port: $m, ip: "127.0.0.1", module: mod_mqtt, backlog: 1000}
  - {port: $h, ip: "127.0.0.1", module: ejabberd_http, request_handlers: {/api: mod_http_api}}
acl:
  loopback:
    ip: [127.0.0.0/8]
access_rules:
  c2s:
    allow: all
api_permissions:
  "loopback admin":
    from: [ejabberd_ctl, mod_http_api]
    who:
      ip: 127.0.0.0/8
    what: "*"
auth_method: internal
auth_password_format: scram
modules:
  mod_mqtt:
    access_publish: {"#": [allow: all]}
    access_subscribe: {"#": [allow: all]}
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
  mod_stream_mgmt: {}
EOF
	chmod 755 "$work" "$d"
	chmod 644 "$d/ejabberd.yml" "$d/ejabberdctl.cfg"
	chown -R ejabberd: "$d/spool" "$d/logs" 2>/dev/null || true
	t0=$(now_ms)
	ERL_EPMD_ADDRESS=127.0.0.1 ej_ctl foreground >>"$d/out.log" 2>&1 &
	pid[ejabberd]=$!
	# ejabberdctl runs beam through su: measure the Erlang VM itself.
	wait_ready ejabberd "$h" "$t0" || return 1
	local beam
	beam=$(pgrep -f "beam.smp.*hubbench$$@localhost" | head -1)
	[ -n "$beam" ] || return 1
	pid[ejabberd]=$beam
	for i in $(seq 0 $((users - 1))); do
		curl -fsS -X POST -d "{\"user\":\"load$i\",\"host\":\"localhost\",\"password\":\"loadpw\"}" \
			"http://127.0.0.1:$h/api/register" >/dev/null || { note "ejabberd: registering load$i failed"; return 1; }
	done
	tcp_open "$c" && tcp_open "$m" || return 1
	xmpp[ejabberd]=xmpp://127.0.0.1:$c mqtt[ejabberd]=tcp://127.0.0.1:$m
}
# wait_ready target port t0: wait up to 30 s for the port; prints ms.
wait_ready() {
	for _ in $(seq 3000); do
		if tcp_open "$2"; then echo $(($(now_ms) - $3)); return 0; fi
		kill -0 "${pid[$1]}" 2>/dev/null || return 1
		sleep 0.01
	done
	return 1
}
stop_target() {
	local t=$1
	[ -n "${pid[$t]:-}" ] || return 0
	if [ "$t" = ejabberd ]; then
		ej_ctl stop >/dev/null 2>&1 || true
	fi
	stop_pid "${pid[$t]}"
	unset "pid[$t]"
	unset "mqtt[$t]" "xmpp[$t]" "http[$t]" "coap[$t]"
}
start_target() { # target: start it, record its start-up time once
	local ms
	# Not in $(...): the start functions set pid[] and the URLs.
	if ! "start_$1" >"$work/start.ms"; then
		note "$1 did not start; its cells show -"
		stop_target "$1"
		return 1
	fi
	ms=$(tail -n 1 "$work/start.ms")
	record "$1.startup_ms" "$ms"
	return 0
}
available=()
for t in $targets; do
	if start_target "$t"; then available+=("$t"); fi
	stop_target "$t"
done
echo "targets: ${available[*]}"
has() { [[ " ${available[*]} " == *" $1 "* ]]; }
ej_user=(--username load0 --password loadpw) # mod_mqtt logs in with an XMPP account

# ---- memory, each on a freshly started process ----
idle_json() { # target name hubload-idle-args...
	local t=$1 name=$2
	shift 2
	sleep 1
	record "$t.idle_rss_kib" "$(rss_kib "${pid[$t]}")"
	if "$hubload" idle --pid "${pid[$t]}" --json --idle "$idle_wait" "$@" >"$out/$t.$name.idle.json" 2>"$out/$t.$name.idle.err"; then
		:
	else
		note "$t $name: $(tail -n 2 "$out/$t.$name.idle.err")"
		rm -f "$out/$t.$name.idle.json"
	fi
}
echo "memory: idle RSS, $idle_mqtt idle MQTT connections, $idle_xmpp idle XMPP sessions"
for t in "${available[@]}"; do
	if [ "$t" != prosody ]; then
		start_target "$t" >/dev/null || continue
		args=(--mqtt-url "${mqtt[$t]}" --mqtt "$idle_mqtt")
		[ "$t" = ejabberd ] && args+=("${ej_user[@]}")
		idle_json "$t" mqtt "${args[@]}"
		stop_target "$t"
	fi
	if [ "$t" = hub ] || [ "$t" = prosody ] || [ "$t" = ejabberd ]; then
		start_target "$t" >/dev/null || continue
		idle_json "$t" xmpp --xmpp-url "${xmpp[$t]}" --xmpp "$idle_xmpp" --xmpp-users "$users"
		stop_target "$t"
	fi
	if [ "$t" = hub ]; then
		start_target hub >/dev/null || continue
		idle_json hub big --mqtt-url "${mqtt[hub]}" --mqtt "$big_mqtt" --xmpp-url "${xmpp[hub]}" --xmpp "$big_xmpp" --xmpp-users "$users" --connect-timeout 3m
		stop_target hub
	fi
	printf '.'
done
echo

# ---- throughput and latency, all targets running, alternating ----
for t in "${available[@]}"; do start_target "$t" >/dev/null || true; done
q1_paced_msgs=$((rate_5k * paced_secs))
# name|mode|targets|hubload flags
cases=(
	"mqtt-q0-1to1|mqtt|hub mochi mosquitto ejabberd|--qos 0 --publishers 1 --subscribers 1 --messages $messages"
	"mqtt-q1-1to1|mqtt|hub mochi mosquitto ejabberd|--qos 1 --publishers 1 --subscribers 1 --messages $messages"
	"mqtt-q0-1to100|mqtt|hub mochi mosquitto ejabberd|--qos 0 --publishers 1 --subscribers 100 --fanout --messages $fanout_messages"
	"mqtt-q1-1to100|mqtt|hub mochi mosquitto ejabberd|--qos 1 --publishers 1 --subscribers 100 --fanout --messages $fanout_messages"
	"mqtt-q0-100to1|mqtt|hub mochi mosquitto ejabberd|--qos 0 --publishers 100 --subscribers 1 --messages $messages"
	"mqtt-q1-100to1|mqtt|hub mochi mosquitto ejabberd|--qos 1 --publishers 100 --subscribers 1 --messages $messages"
	"mqtt-q1-1to1-paced|mqtt|hub mochi mosquitto ejabberd|--qos 1 --publishers 1 --subscribers 1 --messages $q1_paced_msgs --rate $rate_5k"
	"mqtt-q1-1to1-persistent|mqtt|hub|--qos 1 --publishers 1 --subscribers 1 --messages $messages --persistent"
	"xmpp-chat-paced|xmpp|hub prosody ejabberd|--publishers $chat_pairs --subscribers $chat_pairs --messages $((chat_rate * paced_secs)) --rate $chat_rate"
	"xmpp-chat-max|xmpp|hub prosody ejabberd|--publishers $max_pairs --subscribers $max_pairs --messages $((max_rate * paced_secs)) --rate $max_rate"
	"xmpp-login|login|hub prosody ejabberd|--workers 4 --logins $((runs > 1 ? 200 : 40))"
	"topic-jid-1to10|xmpp-topic|hub|--qos 0 --publishers 1 --subscribers 10 --fanout --messages $((messages / 10))"
	"cross-coap-mqtt|coap|hub|--qos 0 --publishers 1 --subscribers 1 --messages $((cross_rate * paced_secs)) --rate $cross_rate"
	"cross-mqtt-xmpp|xmpp-topic|hub|--qos 0 --publishers 1 --subscribers 1 --messages $((cross_rate * paced_secs)) --rate $cross_rate"
	"cross-mqtt-sse|sse|hub|--qos 0 --publishers 1 --subscribers 1 --messages $((cross_rate * paced_secs)) --rate $cross_rate"
)
echo "runs: $runs of each case per target, payload $size bytes; JSON in $out"
for c in "${cases[@]}"; do
	IFS='|' read -r name mode ctargets flags <<<"$c"
	for r in $(seq "$runs"); do
		for t in $ctargets; do
			[ -n "${pid[$t]:-}" ] || continue
			base=(--pid "${pid[$t]}" --json)
			[ "$mode" = login ] || [ "$mode" = xmpp ] || base+=(--mqtt-client "$mqtt_client")
			case $mode in
			mqtt)
				[ -n "${mqtt[$t]:-}" ] || continue
				base+=(--url "${mqtt[$t]}" --size "$size" --duration 30s --drain 3s --topic "bench/$name/$r/%d")
				[ "$t" = ejabberd ] && base+=("${ej_user[@]}") ;;
			xmpp)
				base+=(--url "${xmpp[$t]}" --size "$size" --duration 30s --drain 3s --topic "bench/$name/$r/%d") ;;
			login)
				base+=(--url "${xmpp[$t]}" --duration 60s) ;;
			xmpp-topic)
				base+=(--url "${xmpp[$t]}" --mqtt-url "${mqtt[$t]}" --size "$size" --duration 30s --drain 3s --topic "bench/$name/$r/%d") ;;
			coap)
				base+=(--url "${coap[$t]}" --mqtt-url "${mqtt[$t]}" --size "$size" --duration 30s --drain 3s --topic "bench/$name/$r/%d") ;;
			sse)
				base+=(--url "${http[$t]}" --mqtt-url "${mqtt[$t]}" --size "$size" --duration 30s --drain 3s --topic "bench/$name/$r/%d") ;;
			esac
			cpu0=$(cpu_ticks "${pid[$t]}")
			# shellcheck disable=SC2086 # flags are words on purpose
			if ! "$hubload" "$mode" "${base[@]}" $flags >"$out/$t.$name.$r.json" 2>"$out/$t.$name.$r.err"; then
				note "$t $name run $r failed: $(tail -n 2 "$out/$t.$name.$r.err")"
				rm -f "$out/$t.$name.$r.json"
			else
				echo "$(($(cpu_ticks "${pid[$t]}") - cpu0)) $clk_tck" >"$out/$t.$name.$r.cpu"
			fi
		done
		printf '.'
	done
	echo " $name"
done
for t in "${available[@]}"; do
	if [ -n "${pid[$t]:-}" ] && ! kill -0 "${pid[$t]}" 2>/dev/null; then
		note "$t died during the benchmark"
	fi
done

{
	echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "hubload MQTT client: $mqtt_client"
	echo "versions: mochi-mqtt $(awk '$1 == "github.com/mochi-mqtt/server/v2" && $2 ~ /^v/ {print $2; exit}' "$root/go.mod") (the hub: patched, third_party/mochi-mqtt), $( (mosquitto -h 2>&1 || true) | head -1), prosody $(dpkg-query -W -f '${Version}' prosody 2>/dev/null || echo none), ejabberd $(dpkg-query -W -f '${Version}' ejabberd 2>/dev/null || echo none)"
} >"$out/machine.txt"
python3 "$root/scripts/bench_report.py" "$out" "$runs"
