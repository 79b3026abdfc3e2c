#!/usr/bin/env bash
# Cross-hub figures (issue 14): MQTT throughput and latency with the
# publisher on hub A and the subscriber on hub B, both on one Debian
# nats-server with JetStream, beside the same load on one of those hubs
# (A -> A) and on a hub without NATS. cmd/hubload's --sub-url puts the
# subscriber on B. Loopback only; every run is bounded by hubload's
# --duration and drain.
#
# Usage: scripts/bench-cluster.sh   (BENCH_RUNS [3], BENCH_MESSAGES [20000])
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_RUNS:-3}
messages=${BENCH_MESSAGES:-20000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. "$root/scripts/lib/nats.sh"
(cd "$root" && go build -o "$work/hub" ./cmd/hub && go build -o "$work/hubload" ./cmd/hubload)
NATS_PORT=$(free_port)
start_nats "$NATS_PORT" "$work"
pids+=("$nats_pid")
start_hub() { # name mqtt http [--nats URL]
	local name=$1 m=$2 h=$3
	shift 3
	"$work/hub" serve --data-dir "$work/$name" "$@" --mqtt-addr "127.0.0.1:$m" --http-addr "127.0.0.1:$h" \
		--coap-addr off --coaps-addr off --xmpp-addr off --xmpp-proxy-addr off --log-level warn >>"$work/$name.log" 2>&1 &
	pids+=("$!")
	wait_healthy "$name" "$h" "$!"
}
A_M=$(free_port) A_H=$(free_port) B_M=$(free_port) B_H=$(free_port) S_M=$(free_port) S_H=$(free_port)
start_hub a "$A_M" "$A_H" --nats "nats://127.0.0.1:$NATS_PORT"
start_hub b "$B_M" "$B_H" --nats "nats://127.0.0.1:$NATS_PORT"
start_hub single "$S_M" "$S_H"
echo "ok: hubs A and B on the NATS, and a hub alone"
# one CASE_NAME HUBLOAD_ARGS...: runs each target in turn, $runs times,
# and prints one line per run: case target msg/s p50 p99 lost.
one() {
	local name=$1
	shift
	for r in $(seq "$runs"); do
		for t in single "a->a" "a->b"; do
			case $t in
			single) url=tcp://127.0.0.1:$S_M sub=$url ;;
			"a->a") url=tcp://127.0.0.1:$A_M sub=$url ;;
			"a->b") url=tcp://127.0.0.1:$A_M sub=tcp://127.0.0.1:$B_M ;;
			esac
			"$work/hubload" mqtt --url "$url" --sub-url "$sub" --json --duration 60s "$@" >"$work/out.json" 2>"$work/err" || true
			python3 - "$name" "$t" "$r" "$work/out.json" <<-'PY'
				import json, sys
				name, t, r, path = sys.argv[1:5]
				try:
				    d = json.load(open(path))
				except Exception as e:
				    print(f"{name}\t{t}\trun {r}\tno result ({e})"); sys.exit(0)
				lat = d.get("latency") or {}
				print(f"{name}\t{t}\trun {r}\t{d.get('receive_rate_msg_s', 0):.0f} msg/s\tp50 {lat.get('p50_ms', 0):.2f} ms\tp99 {lat.get('p99_ms', 0):.2f} ms\tlost {d.get('lost', '-')}")
			PY
		done
	done
}
one "QoS 0 1->1" --qos 0 --messages "$messages"
one "QoS 1 1->1" --qos 1 --messages "$messages"
one "QoS 1 1->1 at 1,000 msg/s" --qos 1 --messages 5000 --rate 1000
one "QoS 1 1->1 persistent" --qos 1 --messages "$messages" --persistent
