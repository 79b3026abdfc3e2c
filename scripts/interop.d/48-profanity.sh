#!/usr/bin/env bash
# profanity (Debian 0.13, under tmux, in a private HOME/XDG dirs) against the
# hub's XMPP c2s with its own commands only: it logs in as admin over
# STARTTLS (/connect ... tls trust: the hub's certificate is self-signed),
# subscribes to a topic JID (/sub request) and receives what mosquitto_pub
# publishes there (read from its chat log), lists sensor1's ad-hoc commands
# (/cmd list), runs reboot (/cmd exec; the device gets it over MQTT, and
# profanity says "reboot completed"), then runs set, fills the required
# field of its form (/fieldN min) and submits it (/form submit): the device
# gets {"unit":"min","interval":60} and profanity says "set completed".
# The device's reply text is checked in profanity's own debug log (the
# stanza it received), not on screen: profanity 0.13 shows a result form's
# fields only when they carry a type attribute, which the hub's "result"
# field has had only since this case was written.
set -euo pipefail
: "${XMPP_PORT:?}" "${MQTT_PORT:?}" "${HTTP_PORT:?}" "${XMPP_DOMAIN:=localhost}"
if ! command -v profanity >/dev/null || ! command -v tmux >/dev/null; then
	echo "skip: profanity or tmux not installed"
	exit 0
fi

run=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d)
responder=""
session="hub-profanity-$run"
cleanup() {
	tmux kill-session -t "$session" 2>/dev/null || true
	if [ -n "$responder" ]; then
		[ -f "$work/sub.pid" ] && kill "$(cat "$work/sub.pid")" 2>/dev/null || true
		kill "$responder" 2>/dev/null || true
		wait "$responder" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
screen() { tmux capture-pane -p -J -S -1000 -t "$session" 2>/dev/null; }
fail() {
	echo "FAIL: $*"
	screen | grep -v '^ *$' | tail -n 30 || true
	exit 1
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
	local n=$(($1 * 10)) what=$2; shift 2
	for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
	fail "$what"
}
on_screen() { screen | grep -q -- "$1"; }
prof() { tmux send-keys -t "$session" -l "$*" && tmux send-keys -t "$session" Enter; }
api="http://127.0.0.1:$HTTP_PORT/api/v1"

# sensor1 declares reboot and set; a mosquitto responder answers as sensor1
# and keeps every request it got in $work/requests.
curl -fsS -u admin:adminpw -X PUT -H 'Content-Type: application/json' "$api/devices/sensor1/commands" -d '[
 {"name": "reboot", "description": "Restart the sensor"},
 {"name": "set", "description": "Set the interval",
  "params": {"type": "object", "properties": {
   "interval": {"type": "integer", "description": "seconds", "default": 60},
   "unit": {"type": "string", "enum": ["s", "min"]}}, "required": ["unit"]}}]' >/dev/null
: >"$work/requests"
(
	for _ in 1 2 3 4; do
		mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i sensor1 -u sensor1 -P sensor1pw -q 1 \
			-t 'devices/sensor1/commands/+' -C 1 -W 60 -v >"$work/req" 2>/dev/null &
		echo $! >"$work/sub.pid"
		wait $! || exit 0
		req=$(cat "$work/req")
		cat "$work/req" >>"$work/requests"
		topic=${req%% *} payload=${req#* }
		id=$(printf '%s' "$payload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
		mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i sensor1 -u sensor1 -P sensor1pw -q 1 \
			-t "devices/sensor1/responses/$id" -m "{\"done\":\"${topic##*/}-$run\"}"
	done
) &
responder=$!
wait_for 20 "sensor1 online" sh -c "curl -fsS -u admin:adminpw '$api/devices/sensor1' | grep -q '\"online\":true'"

home="$work/home"
mkdir -p "$home/config" "$home/data"
plog="$home/data/profanity/logs/profanity.log"
tmux new-session -d -s "$session" -x 200 -y 50 \
	"env HOME='$home' XDG_CONFIG_HOME='$home/config' XDG_DATA_HOME='$home/data' TERM=xterm profanity -l DEBUG"
wait_for 20 "profanity started" on_screen "Type '/help'"
prof "/connect admin@$XMPP_DOMAIN server 127.0.0.1 port $XMPP_PORT tls trust"
wait_for 10 "profanity's password prompt" on_screen "password"
prof "adminpw"
wait_for 20 "profanity logged in" on_screen "admin@$XMPP_DOMAIN/[^ ]* logged in successfully"
grep -q "SENT: <starttls" "$plog" || fail "profanity did not use STARTTLS"

topic="interop/profanity/$run"
tjid="interop.profanity.$run@topics.$XMPP_DOMAIN"
prof "/logging chat on"
prof "/sub request $tjid"
wait_for 20 "the topic JID's presence (subscription approved)" on_screen "++ $tjid is online"
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u admin -P adminpw -t "$topic" -m "hello profanity $run"
wait_for 20 "profanity received the MQTT message" sh -c "grep -rq '$tjid: hello profanity $run' '$home/data/profanity/chatlogs'"
echo "ok: profanity (STARTTLS) subscribed to $tjid with /sub request and received mosquitto_pub's message"

dev="sensor1@devices.$XMPP_DOMAIN"
prof "/cmd list $dev"
wait_for 20 "profanity listed the ad-hoc commands" sh -c "tmux capture-pane -p -J -S -1000 -t '$session' | grep -A2 'Ad hoc commands:' | tr -d '\n' | grep -q 'reboot.*set'"
prof "/cmd exec reboot $dev"
wait_for 20 "the device got reboot" grep -q '^devices/sensor1/commands/reboot ' "$work/requests"
wait_for 20 "profanity showed the result form of reboot" on_screen "Form title: reboot on sensor1"
prof "/win 1"
wait_for 10 "profanity said reboot completed" on_screen "reboot completed"
grep -q "RECV: <iq[^>]*from=\"$dev\".*status=\"completed\".*node=\"reboot\".*done&quot;:&quot;reboot-$run" "$plog" ||
	fail "profanity did not receive the device's reply to reboot"
echo "ok: profanity listed sensor1's commands with /cmd list and ran reboot with /cmd exec"

prof "/cmd exec set $dev"
wait_for 20 "profanity showed the form of set" on_screen "\[field[0-9]*\] unit (required)"
field=$(screen | grep -o '\[field[0-9]*\] unit (required)' | tail -n 1 | grep -o 'field[0-9]*')
prof "/$field min"
prof "/form submit"
wait_for 20 "the device got set with the form's values" sh -c "grep '^devices/sensor1/commands/set ' '$work/requests' | grep -q '\"interval\":60,\"unit\":\"min\"'"
wait_for 20 "profanity showed the result form of set" on_screen "Form title: set on sensor1"
prof "/win 1"
wait_for 10 "profanity said set completed" on_screen "set completed"
grep -q "RECV: <iq[^>]*from=\"$dev\".*status=\"completed\".*node=\"set\".*done&quot;:&quot;set-$run" "$plog" ||
	fail "profanity did not receive the device's reply to set"
echo "ok: profanity filled and submitted the form of set (/$field min, /form submit); the device got unit=min, interval=60"
prof "/quit"
