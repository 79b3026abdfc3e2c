#!/usr/bin/env bash
# Cluster interop on a real three-server JetStream cluster (Debian's
# nats-server, one config file per server), two hubs on it with replicas
# 3. Principals are shared: a device added with the CLI to A's data dir
# before A starts logs in on B, a user added over REST on A logs in on B,
# its deletion on A refuses it on B. Node loss: kill -9 of one
# nats-server while mosquitto_pub sends QoS 1 to A loses nothing A
# acknowledged (the persistent session on B gets every one). Needs
# HUB_BIN, nats-server, mosquitto-clients, curl, python3.
set -euo pipefail
# shellcheck source=../lib/nats.sh
. "$(dirname "$0")/../lib/nats.sh"


for bin in nats-server mosquitto_pub mosquitto_sub curl python3; do
	command -v "$bin" >/dev/null || { echo "FAIL: $bin not installed"; exit 1; }
done

work=$(mktemp -d)
n_pids=("" "" "") a_pid="" b_pid=""
cleanup() {
	stop_pid "$a_pid"
	stop_pid "$b_pid"
	for p in "${n_pids[@]}"; do stop_pid "$p"; done
	rm -rf "$work"
}
trap cleanup EXIT

CP=() RP=()
for i in 0 1 2; do CP[$i]=$(free_port); RP[$i]=$(free_port); done
A_MQTT=$(free_port) A_HTTP=$(free_port) B_MQTT=$(free_port) B_HTTP=$(free_port)

for i in 0 1 2; do
	routes=""
	for j in 0 1 2; do [ "$j" = "$i" ] || routes="$routes nats-route://127.0.0.1:${RP[$j]}"; done
	cat >"$work/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${CP[$i]}
jetstream { store_dir: "$work/n$i" }
cluster {
  name: hubs
  listen: 127.0.0.1:${RP[$i]}
  routes: [$(echo $routes | sed 's/ /, /g')]
}
CONF
	nats-server -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
	n_pids[$i]=$!
	disown "${n_pids[$i]}" # no job notice when one is killed
done
for i in 0 1 2; do wait_port "${CP[$i]}" || true; done
echo "ok: $(nats-server --version): three servers in one JetStream cluster"

urls="nats://127.0.0.1:${CP[0]},nats://127.0.0.1:${CP[1]},nats://127.0.0.1:${CP[2]}"
cat >"$work/hub.yaml" <<YAML
nats:
  url: $urls
  replicas: 3
YAML
start_hub() { # name mqtt http: starts a hub on the NATS cluster, prints its pid
	"$HUB_BIN" serve --config "$work/hub.yaml" --data-dir "$work/$1" \
		--mqtt-addr "127.0.0.1:$2" --http-addr "127.0.0.1:$3" \
		--coap-addr off --coaps-addr off --xmpp-addr off >>"$work/$1.log" 2>&1 &
	echo $!
}
"$HUB_BIN" user add admin --password adminpw --role admin --data-dir "$work/a" >/dev/null
"$HUB_BIN" device add meter1 --protocol mqtt --password meter1pw --data-dir "$work/a" >/dev/null
a_pid=$(start_hub a "$A_MQTT" "$A_HTTP")
b_pid=$(start_hub b "$B_MQTT" "$B_HTTP")
wait_healthy a "$A_HTTP" "$a_pid" 900
wait_healthy b "$B_HTTP" "$b_pid" 900
echo "ok: hubs A and B healthy on the three-server cluster"

logs_in() { # port user password: 0 when mosquitto_pub is let in
	mosquitto_pub -h 127.0.0.1 -p "$1" -u "$2" -P "$3" -i "$2-probe" -q 1 -t "devices/$2/state" -m x >/dev/null 2>&1
}
retry() { # tries: runs the rest until it succeeds, 0.1 s apart
	local n=$1; shift
	for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
	return 1
}
retry 50 logs_in "$B_MQTT" meter1 meter1pw || { echo "FAIL: a device added with the CLI to A's store does not log in on B"; exit 1; }
! logs_in "$B_MQTT" meter1 wrong || { echo "FAIL: a wrong password let in on B"; exit 1; }
echo "ok: a device added with the CLI to A's data dir logs in on B (mosquitto_pub)"

curl -fsS -u admin:adminpw -H 'Content-Type: application/json' -d '{"name":"carol","password":"carolpw","role":"user"}' \
	"http://127.0.0.1:$A_HTTP/api/v1/users" >/dev/null
rest_ok() { # user:password code-pattern: a REST publish on B as the user answers that
	case "$(curl -s -o /dev/null -w '%{http_code}' -u "$1" -X POST -d v "http://127.0.0.1:$B_HTTP/api/v1/topics/t/x")" in
	$2) return 0 ;;
	esac
	return 1
}
retry 50 rest_ok carol:carolpw '2*' || { echo "FAIL: a user added over REST on A is refused on B"; exit 1; }
curl -fsS -u admin:adminpw -X DELETE "http://127.0.0.1:$A_HTTP/api/v1/users/carol" >/dev/null
retry 50 rest_ok carol:carolpw 401 || { echo "FAIL: a user deleted on A still let in on B"; exit 1; }
echo "ok: a user added over REST on A logs in on B (curl), and is refused there once deleted on A"

# kill -9 of one nats-server while A takes QoS 1 publishes: every one A
# acknowledged reaches the persistent session on B.
# The session is made, and routes from A, once a first message reached it.
timeout 30 mosquitto_sub -h 127.0.0.1 -p "$B_MQTT" -c -i keeper -q 1 -t 'load/#' -C 1 >/dev/null 2>&1 &
kp=$!
for _ in $(seq 100); do
	kill -0 "$kp" 2>/dev/null || break
	mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -t load/ready -m ready 2>/dev/null || true
	sleep 0.2
done
wait "$kp" || { echo "FAIL: the persistent session on B got nothing from A"; exit 1; }
acked="$work/acked"
: >"$acked"
(
	for i in $(seq 1 300); do
		if timeout 10 mosquitto_pub -h 127.0.0.1 -p "$A_MQTT" -q 1 -t load/x -m "n$i" 2>/dev/null; then echo "n$i" >>"$acked"; fi
	done
) &
loader=$!
sleep 1
kill -KILL "${n_pids[2]}"
n_pids[2]=""
before=$(wc -l <"$acked")
wait "$loader" || true
n=$(wc -l <"$acked")
[ "$n" -gt "$before" ] || { echo "FAIL: no publish acknowledged after the kill"; exit 1; }
# Read until every acknowledged one is in, reconnecting the session every
# 5 s for at most a minute: after the kill, the consumer's JetStream
# leader may be re-elected and B's NATS connection may move to another
# server before the queue flows again.
: >"$work/got"
for _ in $(seq 12); do
	timeout 10 mosquitto_sub -h 127.0.0.1 -p "$B_MQTT" -c -i keeper -q 1 -t 'load/#' -W 5 >>"$work/got" 2>/dev/null || true
	missing=$(sort "$acked" | comm -23 - <(sort -u "$work/got") | wc -l)
	[ "$missing" -gt 0 ] || break
done
[ "$missing" -eq 0 ] || { echo "FAIL: kill -9 of a nats-server lost $missing of $n acknowledged QoS 1 publishes"; exit 1; }
echo "ok: kill -9 of one of three nats-servers under QoS 1 load: all $n acknowledged publishes ($before before the kill) reach B, $((300 - n)) refused"
