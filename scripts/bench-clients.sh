#!/usr/bin/env bash
# Compare hubload's two MQTT clients, the lean one (the default) and paho
# (--mqtt-client paho), against the hub, a bare mochi-mqtt (`hubload
# mochi`) and Mosquitto (persistence off): QoS 0 and 1, 1->1 and 1->100.
# Each case alternates targets and clients, BENCH_RUNS times; the table
# gives medians of the deliveries per second, of hubload's own CPU per
# delivery (getrusage) and of the server's (/proc/PID/stat utime+stime
# over the hubload run), with the load average beside it.
#
# Usage: scripts/bench-clients.sh
# Environment: BENCH_RUNS [3], BENCH_MESSAGES [20000] (1->1),
# BENCH_FANOUT_MESSAGES [1000] (1->100, x100 deliveries), BENCH_TARGETS
# ["hub mochi mosquitto"], BENCH_OUT [temp dir] keeps every run's JSON.
# Loopback only; every run is bounded by --duration and its drain.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_RUNS:-3}
messages=${BENCH_MESSAGES:-20000}
fanout_messages=${BENCH_FANOUT_MESSAGES:-1000}
targets=${BENCH_TARGETS:-hub mochi mosquitto}
[ $# -eq 0 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

work=$(mktemp -d)
out=${BENCH_OUT:-$work/results}
mkdir -p "$out"
declare -A pid url
cleanup() {
	for t in "${!pid[@]}"; do
		kill -TERM "${pid[$t]}" 2>/dev/null || true
		wait "${pid[$t]}" 2>/dev/null || true
	done
	[ -n "${BENCH_OUT:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=lib/ports.sh
. "$root/scripts/lib/ports.sh"
tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
clk_tck=$(getconf CLK_TCK)

echo "building hub and hubload ..."
(cd "$root" && go build -o "$work/hubload" ./cmd/hubload && go build -o "$work/hub" ./cmd/hub)
# mochi-mqtt as published, not the hub's patched copy.
. "$root/scripts/lib/mochi-upstream.sh"
build_upstream_hubload "$root" "$work"

for t in $targets; do
	port=$(free_port)
	case $t in
	hub)
		printf 'limits:\n  max_connections: -1\n  max_connections_per_address: -1\n  max_connections_per_user: -1\n' >"$work/hub.yaml"
		"$work/hub" serve --config "$work/hub.yaml" --data-dir "$work/hub-data" --mqtt-addr "127.0.0.1:$port" \
			--xmpp-addr "127.0.0.1:$(free_port)" --xmpp-proxy-addr "127.0.0.1:$(free_port)" --http-addr "127.0.0.1:$(free_port)" \
			--coap-addr "127.0.0.1:$(free_port)" --log-level warn >>"$work/hub.log" 2>&1 &
		;;
	mochi)
		"$work/hubload-upstream" mochi --addr "127.0.0.1:$port" >>"$work/mochi.log" 2>&1 &
		;;
	mosquitto)
		printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n' "$port" >"$work/mosquitto.conf"
		mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
		;;
	*) echo "unknown target $t" >&2; exit 2 ;;
	esac
	pid[$t]=$!
	for _ in $(seq 1000); do tcp_open "$port" && break; sleep 0.01; done
	tcp_open "$port" || { echo "$t did not start" >&2; exit 1; }
	url[$t]=tcp://127.0.0.1:$port
done

cases=(
	"q0-1to1|--qos 0 --publishers 1 --subscribers 1 --messages $messages"
	"q1-1to1|--qos 1 --publishers 1 --subscribers 1 --messages $messages"
	"q0-1to100|--qos 0 --publishers 1 --subscribers 100 --fanout --messages $fanout_messages"
	"q1-1to100|--qos 1 --publishers 1 --subscribers 100 --fanout --messages $fanout_messages"
)
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${cases[@]}"; do
	IFS='|' read -r name flags <<<"$c"
	for r in $(seq "$runs"); do
		for t in $targets; do
			for client in lean paho; do
				cpu0=$(cpu_ticks "${pid[$t]}")
				# shellcheck disable=SC2086 # flags are words on purpose
				if "$work/hubload" mqtt --url "${url[$t]}" --mqtt-client "$client" --pid "${pid[$t]}" --json \
					--duration 30s --drain 3s --topic "clients/$name/$r/%d" $flags >"$out/$t.$name.$client.$r.json" 2>"$out/err"; then
					echo "$(($(cpu_ticks "${pid[$t]}") - cpu0)) $clk_tck $(cut -d' ' -f1 /proc/loadavg)" >"$out/$t.$name.$client.$r.cpu"
				else
					echo "note: $t $name $client run $r failed: $(tail -n 2 "$out/err")"
					rm -f "$out/$t.$name.$client.$r.json"
				fi
			done
		done
		printf '.'
	done
	echo " $name"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$runs" "$targets" <<'EOF'
import glob, json, os, statistics, sys
out, runs, targets = sys.argv[1], sys.argv[2], sys.argv[3].split()
rows = {}
for p in glob.glob(os.path.join(out, "*.json")):
    t, case, client, run = os.path.basename(p)[:-5].split(".")
    r = json.load(open(p))
    ticks, hz, load = open(p[:-5] + ".cpu").read().split()
    if not r.get("received"):
        continue
    rows.setdefault((case, t, client), []).append((
        r["receive_rate_msg_s"], r["client_cpu_us_per_delivery"],
        int(ticks) / int(hz) * 1e6 / r["received"], float(load), r.get("lost", 0)))
med = lambda xs: statistics.median(xs)
print(f"\nmedians of {runs} alternating runs; load = 1-min load average after each run (min-max)")
print("| case | target | client | msg/s | hubload µs/msg | server µs/msg | lost | load |")
print("|---|---|---|---|---|---|---|---|")
for case in ["q0-1to1", "q1-1to1", "q0-1to100", "q1-1to100"]:
    for t in targets:
        for client in ["paho", "lean"]:
            v = rows.get((case, t, client))
            if not v:
                continue
            loads = [x[3] for x in v]
            print(f"| {case} | {t} | {client} | {med([x[0] for x in v]):,.0f} | {med([x[1] for x in v]):.2f} | "
                  f"{med([x[2] for x in v]):.2f} | {sum(x[4] for x in v)} | {min(loads):.1f}-{max(loads):.1f} |")
EOF
