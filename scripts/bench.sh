#!/usr/bin/env bash
# Benchmark: the hub's MQTT listener against Debian's Mosquitto, side by
# side, with cmd/hubload. Builds hub and hubload, starts the hub on free
# loopback ports with a fresh data dir (CoAP and XMPP off), starts
# Mosquitto on another loopback port with a throw-away config, runs the same
# scenarios against each (alternating, BENCH_RUNS times) and prints the
# medians.
#
# Scenarios, each at QoS 0 and QoS 1:
#   1->1     one publisher, one subscriber, as fast as it goes: msg/s
#   1->100   one publisher, 100 subscribers on one topic: deliveries/s
#   and the same two paced at a moderate rate (BENCH_RATE_1TO1,
#   BENCH_RATE_FANOUT msg/s) for latency, since unpaced latency mostly
#   measures the queue the load generator builds up.
#
# With BENCH_CROSS=1 the hub also gets a CoAP listener and hub-only cases
# publish over CoAP (POST /ps/{topic}, NON/CON) and HTTP (POST
# /api/v1/topics/{topic}) to MQTT subscribers.
#
# Usage: scripts/bench.sh [--quick]
# Environment (defaults in brackets):
#   BENCH_RUNS [3]            runs of each case per target; medians are printed
#   BENCH_MESSAGES [20000]    messages per 1->1 throughput case
#   BENCH_FANOUT_MESSAGES [1000]  messages per 1->100 throughput case (x100 deliveries)
#   BENCH_RATE_1TO1 [1000]    msg/s of the paced 1->1 cases (3 s long)
#   BENCH_RATE_FANOUT [20]    msg/s of the paced 1->100 cases (3 s long; x100 deliveries)
#   BENCH_SIZE [64]           payload bytes
#   BENCH_TARGETS ["hub mosquitto"]
#   BENCH_CROSS [0]           1: add the hub-only CoAP and HTTP cases
#   BENCH_OUT [temp dir]      where the JSON of every run is kept
#   MOSQUITTO [mosquitto]     the Mosquitto binary
# Only loopback addresses are used. Each hubload run is bounded by
# --duration 30s plus its drain time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_RUNS:-3}
messages=${BENCH_MESSAGES:-20000}
fanout_messages=${BENCH_FANOUT_MESSAGES:-1000}
rate_1to1=${BENCH_RATE_1TO1:-1000}
rate_fanout=${BENCH_RATE_FANOUT:-20}
size=${BENCH_SIZE:-64}
targets=${BENCH_TARGETS:-hub mosquitto}
cross=${BENCH_CROSS:-0}
if [ "${1:-}" = "--quick" ]; then
	runs=1 messages=2000 fanout_messages=200 rate_1to1=1000 rate_fanout=20
elif [ -n "${1:-}" ]; then
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
fi
mosquitto_bin=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}

work=$(mktemp -d)
out=${BENCH_OUT:-$work/results}
mkdir -p "$out"
hub_pid="" mosq_pid=""
stop_pid() { # pid: TERM, wait up to 5 s, then KILL
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
	stop_pid "$hub_pid"
	stop_pid "$mosq_pid"
	rm -rf "$work/data" "$work/mosquitto.conf"
	[ -n "${BENCH_OUT:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
tcp_open() { # port: true once something accepts on 127.0.0.1:port
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}
wait_tcp() { # port pid: wait up to 10 s for the port while pid lives
	for _ in $(seq 100); do
		tcp_open "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

echo "building hub and hubload ..."
(cd "$root" && go build -o "$work/hubload" ./cmd/hubload)
hub_built=""
if (cd "$root" && go build -o "$work/hub" ./cmd/hub) 2>"$work/hub-build.log"; then
	hub_built=1
else
	echo "note: cmd/hub does not build; benchmarking Mosquitto only"; cat "$work/hub-build.log"
fi

declare -A url pid
if [[ " $targets " == *" hub "* ]] && [ -n "$hub_built" ]; then
	mqtt_port=$(free_port) http_port=$(free_port) coap_addr=off
	if [ "$cross" = 1 ]; then
		coap_port=$(python3 -c 'import socket; s = socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
		coap_addr=127.0.0.1:$coap_port
	fi
	"$work/hub" serve --data-dir "$work/data" \
		--mqtt-addr "127.0.0.1:$mqtt_port" --coap-addr "$coap_addr" --xmpp-addr off \
		--http-addr "127.0.0.1:$http_port" >"$work/hub.log" 2>&1 &
	hub_pid=$!
	healthy=""
	for _ in $(seq 100); do
		if curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then healthy=1; break; fi
		kill -0 "$hub_pid" 2>/dev/null || break
		sleep 0.1
	done
	if [ -n "$healthy" ] && wait_tcp "$mqtt_port" "$hub_pid"; then
		url[hub]="tcp://127.0.0.1:$mqtt_port" pid[hub]=$hub_pid
		echo "hub: pid $hub_pid, mqtt 127.0.0.1:$mqtt_port, data dir $work/data"
	else
		echo "note: the hub did not come up with an MQTT listener; benchmarking Mosquitto only"
		tail -n 20 "$work/hub.log"
		stop_pid "$hub_pid"; hub_pid=""
	fi
fi
if [[ " $targets " == *" mosquitto "* ]]; then
	mosq_port=$(free_port)
	cat >"$work/mosquitto.conf" <<EOF
# Debian's defaults otherwise (max_inflight_messages 20, max_queued_messages 1000)
listener $mosq_port 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
EOF
	"$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
	mosq_pid=$!
	if wait_tcp "$mosq_port" "$mosq_pid"; then
		url[mosquitto]="tcp://127.0.0.1:$mosq_port" pid[mosquitto]=$mosq_pid
		echo "mosquitto: pid $mosq_pid, $("$mosquitto_bin" -h 2>&1 | head -1), 127.0.0.1:$mosq_port"
	else
		echo "note: mosquitto did not start"; cat "$work/mosquitto.log"
		stop_pid "$mosq_pid"; mosq_pid=""
	fi
fi
if [ ${#url[@]} -eq 0 ]; then
	echo "FAIL: nothing to benchmark"; exit 1
fi

# name|mode|hubload flags; coap and http cases run against the hub only
cases=(
	"q0-1to1|mqtt|--qos 0 --publishers 1 --subscribers 1 --messages $messages"
	"q1-1to1|mqtt|--qos 1 --publishers 1 --subscribers 1 --messages $messages"
	"q0-1to100|mqtt|--qos 0 --publishers 1 --subscribers 100 --fanout --messages $fanout_messages"
	"q1-1to100|mqtt|--qos 1 --publishers 1 --subscribers 100 --fanout --messages $fanout_messages"
	"q0-1to1-paced|mqtt|--qos 0 --publishers 1 --subscribers 1 --messages $((rate_1to1 * 3)) --rate $rate_1to1"
	"q1-1to1-paced|mqtt|--qos 1 --publishers 1 --subscribers 1 --messages $((rate_1to1 * 3)) --rate $rate_1to1"
	"q0-1to100-paced|mqtt|--qos 0 --publishers 1 --subscribers 100 --fanout --messages $((rate_fanout * 3)) --rate $rate_fanout"
	"q1-1to100-paced|mqtt|--qos 1 --publishers 1 --subscribers 100 --fanout --messages $((rate_fanout * 3)) --rate $rate_fanout"
)
if [ "$cross" = 1 ] && [ -n "${url[hub]:-}" ]; then
	cases+=(
		"coap-q0-paced|coap|--qos 0 --publishers 1 --subscribers 1 --messages $((rate_1to1 * 3)) --rate $rate_1to1"
		"coap-q1|coap|--qos 1 --publishers 4 --subscribers 4 --messages $((messages / 4))"
		"http-q0|http|--qos 0 --publishers 4 --subscribers 4 --messages $((messages / 4))"
		"http-q1|http|--qos 1 --publishers 4 --subscribers 4 --messages $((messages / 4))"
	)
fi

echo "runs: $runs of each case per target, payload $size bytes; JSON in $out"
for c in "${cases[@]}"; do
	name=${c%%|*} rest=${c#*|}
	mode=${rest%%|*} flags=${rest#*|}
	for r in $(seq "$runs"); do
		for t in hub mosquitto; do
			[ -n "${url[$t]:-}" ] || continue
			target=(--url "${url[$t]}")
			case $mode in
			coap) [ "$t" = hub ] || continue; target=(--url "coap://$coap_addr" --mqtt-url "${url[hub]}") ;;
			http) [ "$t" = hub ] || continue; target=(--url "http://127.0.0.1:$http_port" --mqtt-url "${url[hub]}") ;;
			esac
			# shellcheck disable=SC2086 # flags are words on purpose
			if ! "$work/hubload" "$mode" "${target[@]}" --pid "${pid[$t]}" --size "$size" \
				--topic "bench/$name/%d" --duration 30s --drain 3s --json $flags \
				>"$out/$t.$name.$r.json" 2>"$out/$t.$name.$r.err"; then
				echo "  $t $name run $r failed: $(tail -n 3 "$out/$t.$name.$r.err")"
				rm -f "$out/$t.$name.$r.json"
			fi
		done
		printf '.'
	done
	echo " $name"
done
for t in hub mosquitto; do
	if [ -n "${pid[$t]:-}" ] && ! kill -0 "${pid[$t]}" 2>/dev/null; then
		echo "FAIL: $t died during the benchmark"
	fi
done

python3 - "$out" "${cases[@]%%|*}" <<'PY'
import glob, json, os, statistics, sys

out, cases = sys.argv[1], sys.argv[2:]
targets = ["hub", "mosquitto"]
res = {}
for path in glob.glob(os.path.join(out, "*.json")):
    t, case, _run, _ = os.path.basename(path).split(".")
    with open(path) as f:
        res.setdefault((t, case), []).append(json.load(f))

def med(rs, f):
    return statistics.median(f(r) for r in rs)

def cell(rs):
    if not rs:
        return f"{'-':>9} {'':>8} {'':>8} {'':>7}", ""
    rate = med(rs, lambda r: r["receive_rate_msg_s"])
    p50 = med(rs, lambda r: r["latency"]["p50_ms"])
    p99 = med(rs, lambda r: r["latency"]["p99_ms"])
    cpu = med(rs, lambda r: (r.get("target") or {}).get("cpu_us_per_delivery", 0))
    lost = sum(r["lost"] for r in rs)
    dup = sum(r["duplicates"] for r in rs)
    errs = sum(r["error_count"] for r in rs)
    note = f"lost {lost} dup {dup} err {errs} over {len(rs)} runs" if lost or dup or errs else ""
    return f"{rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>7.1f}", note

print()
print("medians over runs. msg/s: deliveries received per second; p50/p99: publish-to-delivery")
print("latency in ms; cpu: server CPU microseconds per delivery (user+sys, /proc/PID/stat)")
head = f"{'msg/s':>9} {'p50':>8} {'p99':>8} {'cpu':>7}"
print(f"{'':<17} | {'hub':<35} | {'mosquitto':<35}")
print(f"{'case':<17} | {head} | {head}")
notes = []
for case in cases:
    cells = []
    for t in targets:
        c, note = cell(res.get((t, case), []))
        cells.append(c)
        if note:
            notes.append(f"  {case} {t}: {note}")
    print(f"{case:<17} | " + " | ".join(cells))
if notes:
    print("loss, duplicates, errors:")
    print("\n".join(notes))
client = [r["client_cpu_seconds"] / r["wall_seconds"] for v in res.values() for r in v if r["wall_seconds"] > 0]
if client:
    print(f"hubload's own CPU: median {statistics.median(client):.2f}, max {max(client):.2f} cores "
          f"(of {os.cpu_count()}); near the core count, the figures measure hubload, not the server")
print()
print("memory of the server (KiB): lifetime peak VmHWM at the end, largest VmRSS sampled during any run")
for t in targets:
    rs = [r for (tt, _), v in res.items() if tt == t for r in v if r.get("target")]
    if rs:
        hwm = max(r["target"]["vm_hwm_kib"] for r in rs)
        mx = max(r["target"]["max_rss_kib"] for r in rs)
        print(f"  {t:<10} VmHWM {hwm} KiB ({hwm/1024:.1f} MiB), max sampled RSS {mx} KiB ({mx/1024:.1f} MiB)")
PY
