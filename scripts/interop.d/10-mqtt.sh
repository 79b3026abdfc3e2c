#!/usr/bin/env bash
# MQTT interop with Mosquitto's own clients (Debian mosquitto-clients):
# QoS 0/1/2 round trips, a retained value for a late subscriber, a
# persistent session that gets what was published while it was away, a
# refused password, MQTT 5 with a content-type property, $-topics and
# wildcards, answers to refused publishes, and a returning session.
# Needs MQTT_PORT (the hub on 127.0.0.1); every wait is bounded.
set -euo pipefail

: "${MQTT_PORT:?MQTT_PORT is not set}"
H=(-h 127.0.0.1 -p "$MQTT_PORT")
ALICE=(-u alice -P alicepw)
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }

# sub_bg FILE FORMAT ARGS...: a mosquitto_sub in the background writing to
# FILE; returns once the broker has acknowledged the subscription: it also
# subscribes to the retained interop/ready, whose arrival proves the
# subscription is in place.
sub_bg() {
	local out=$1 fmt=$2
	shift 2
	timeout 15 mosquitto_sub "${H[@]}" "$@" -t interop/ready -F "$fmt" >"$out" 2>"$out.err" &
	pids+=($!)
	for _ in $(seq 100); do
		grep -q '^interop/ready|' "$out" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "subscriber $* did not come up: $(cat "$out.err")"
}

# wait_line FILE PATTERN: waits (bounded) for a line matching PATTERN.
wait_line() {
	for _ in $(seq 100); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "expected a line matching '$2' in: $(cat "$1")"
}

timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q 1 -r -t interop/ready -m ready || fail "connect as alice"

# 1. QoS 0/1/2 round trips between two Mosquitto clients.
for q in 0 1 2; do
	sub_bg "$tmp/q$q" '%t|%q|%p' "${ALICE[@]}" -q "$q" -t "interop/qos/$q" -C 2
	timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q "$q" -t "interop/qos/$q" -m "hello $q" ||
		fail "publish at QoS $q"
	wait_line "$tmp/q$q" "^interop/qos/$q|$q|hello $q\$"
	echo "ok: mqtt QoS $q round trip"
done

# 2. A retained value reaches a late subscriber, and clearing it works.
timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q 1 -r -t interop/retained -m "21.5" || fail "retained publish"
got=$(timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -q 1 -t interop/retained -C 1 -W 5 -F '%r|%p') ||
	fail "late subscriber got nothing"
[ "$got" = "1|21.5" ] || fail "late subscriber got '$got', want '1|21.5'"
echo "ok: mqtt retained message reaches a late subscriber"
timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q 1 -r -n -t interop/retained || fail "retained clear"
if got=$(timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -t interop/retained -C 1 -W 1 2>/dev/null); then
	fail "cleared retained message still delivered: '$got'"
fi
echo "ok: mqtt retained message cleared"

# 3. A persistent session gets what was published while it was away.
id="interop-persist-$$"
timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -c -i "$id" -q 1 -t interop/persist -E ||
	fail "persistent subscribe"
timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q 1 -t interop/persist -m "while you were away" ||
	fail "publish to the absent subscriber"
got=$(timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -c -i "$id" -q 1 -t interop/persist -C 1 -W 5 -F '%q|%p') ||
	fail "persistent session got nothing on reconnect"
[ "$got" = "1|while you were away" ] || fail "persistent session got '$got'"
# Leave no session behind.
timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -i "$id" -t interop/persist -E >/dev/null 2>&1 || true
echo "ok: mqtt persistent session receives the queued QoS 1 message"

# 4. A wrong password is refused.
if err=$(timeout 10 mosquitto_pub "${H[@]}" -u alice -P wrong -t interop/x -m x 2>&1); then
	fail "wrong password accepted"
fi
case "$err" in
*"bad user name or password"* | *"not authorised"*) ;;
*) fail "wrong password: unexpected error '$err'" ;;
esac
if err=$(timeout 10 mosquitto_pub "${H[@]}" -V mqttv5 -u alice -P wrong -t interop/x -m x 2>&1); then
	fail "wrong password accepted (MQTT 5)"
fi
echo "ok: mqtt wrong password refused (3.1.1 and 5)"

# 5. MQTT 5 with content type and a user property, end to end.
sub_bg "$tmp/v5" '%t|%C|%P|%p' -V mqttv5 "${ALICE[@]}" -q 1 -t interop/v5 -C 2
timeout 10 mosquitto_pub "${H[@]}" -V mqttv5 "${ALICE[@]}" -q 1 -t interop/v5 -m '{"t":21.5}' \
	-D publish content-type application/json -D publish user-property unit C || fail "MQTT 5 publish"
wait_line "$tmp/v5" '^interop/v5|application/json|unit:C|{"t":21.5}$'
echo "ok: mqtt 5 content type and user property delivered"

# 6. $-topics are never matched by a leading wildcard, retained ones
# included [MQTT-4.7.2-1]; they are there for a subscriber who names them.
ADMIN=(-u admin -P adminpw)
timeout 10 mosquitto_sub "${H[@]}" "${ADMIN[@]}" -t '#' -W 2 -F '%t' >"$tmp/all" 2>/dev/null || true
grep -q '^interop/ready$' "$tmp/all" || fail "# did not deliver the retained interop/ready: $(cat "$tmp/all")"
if grep -q '^\$' "$tmp/all"; then fail "# delivered \$ topics: $(grep '^\$' "$tmp/all" | head -3)"; fi
timeout 10 mosquitto_sub "${H[@]}" "${ADMIN[@]}" -t '+/ready' -W 2 -F '%t' >"$tmp/plus" 2>/dev/null || true
if grep -q '^\$' "$tmp/plus"; then fail "+/ready delivered \$ topics"; fi
got=$(timeout 10 mosquitto_sub "${H[@]}" "${ADMIN[@]}" -t '$SYS/broker/version' -C 1 -W 5 -F '%r|%t') ||
	fail "\$SYS/broker/version not retained"
[ "$got" = '1|$SYS/broker/version' ] || fail "\$SYS/broker/version: '$got'"
echo "ok: mqtt \$ topics only for subscribers who name them, retained ones too"

# 7. Every QoS 1/2 publish is answered: a topic the client may not write
# ($SYS is the hub's) gets 0x87 in MQTT 5, and in 3.1.1 (no negative
# acknowledgement) an acknowledgement, nothing delivered.
for q in 1 2; do
	# mosquitto_pub reports a negative acknowledgement as a warning.
	err=$(timeout 10 mosquitto_pub "${H[@]}" "${ADMIN[@]}" -V mqttv5 -q "$q" -t '$SYS/interop' -m x 2>&1) ||
		fail "MQTT 5 QoS $q publish to \$SYS got no answer: '$err'"
	case "$err" in *"Not authorized"*) ;; *) fail "MQTT 5 QoS $q publish to \$SYS: '$err', want Not authorized" ;; esac
	timeout 10 mosquitto_pub "${H[@]}" "${ADMIN[@]}" -V mqttv311 -q "$q" -t '$SYS/interop' -m x ||
		fail "MQTT 3.1.1 QoS $q publish to \$SYS not acknowledged"
done
echo "ok: mqtt QoS 1/2 publishes to \$SYS answered (0x87 in MQTT 5, acknowledged and dropped in 3.1.1)"

# 8. A session that returns to queued messages has its SUBSCRIBE granted,
# and what it had never been sent arrives without DUP.
id="interop-return-$$"
timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -c -i "$id" -q 1 -t interop/return -E || fail "persistent subscribe"
for i in 1 2 3; do
	timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q 1 -t interop/return -m "m$i" || fail "publish m$i"
done
# (The queued messages may come before the SUBACK: -W, not -C.)
timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -c -i "$id" -q 1 -t interop/return -W 2 -d >"$tmp/ret" 2>&1 || true
grep -q 'Subscribed (mid: [0-9]*): 1$' "$tmp/ret" || fail "returning session's SUBSCRIBE not granted QoS 1: $(grep -i subscribed "$tmp/ret")"
[ "$(grep -c 'received PUBLISH (d0, q1' "$tmp/ret")" = 3 ] || fail "queued messages not delivered once each without DUP: $(grep PUBLISH "$tmp/ret")"
timeout 10 mosquitto_sub "${H[@]}" "${ALICE[@]}" -i "$id" -t interop/return -E >/dev/null 2>&1 || true
echo "ok: mqtt returning session: SUBSCRIBE granted, queued messages without DUP"

timeout 10 mosquitto_pub "${H[@]}" "${ALICE[@]}" -q 1 -r -n -t interop/ready || true
