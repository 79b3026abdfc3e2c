#!/usr/bin/env bash
# A terminal chat client and slixmpp against the hub's XMPP features.
# mcabber (Debian mcabber, under tmux, scripted through its FIFO) logs in as
# admin over STARTTLS (certificate checks off: the hub's certificate is
# self-signed), adds a topic JID to its roster (a presence subscription),
# receives what mosquitto_pub publishes there, lists a device's ad-hoc
# commands and runs one (mcabber has no XEP-0050 client of its own: the
# iqs go out with its /rawxml command and the answers are read from its
# XML trace). Then slixmpp: disco, XEP-0050 command forms (xep_0050),
# XEP-0280 carbons (xep_0280) and XEP-0203 stamps (xep_0203).
set -euo pipefail
: "${XMPP_PORT:?}" "${MQTT_PORT:?}" "${HTTP_PORT:?}" "${XMPP_DOMAIN:=localhost}"

run=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d)
responder=""
session="hub-mcabber-$run"
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
fail() { echo "FAIL: $*"; [ -f "$work/trace.log" ] && tail -n 40 "$work/trace.log"; exit 1; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
	local n=$(($1 * 10)) what=$2; shift 2
	for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
	fail "$what"
}
api="http://127.0.0.1:$HTTP_PORT/api/v1"

# The device sensor1 declares two commands; a mosquitto responder answers
# them as sensor1 (one reply per command).
curl -fsS -u admin:adminpw -X PUT -H 'Content-Type: application/json' "$api/devices/sensor1/commands" -d '[
 {"name": "reboot", "description": "Restart the sensor"},
 {"name": "set", "description": "Set the interval",
  "params": {"type": "object", "properties": {
   "interval": {"type": "integer", "description": "seconds", "default": 60},
   "unit": {"type": "string", "enum": ["s", "min"]},
   "fast": {"type": "boolean"}}, "required": ["unit"]}}]' >/dev/null
(
	for _ in 1 2 3 4 5 6; do
		mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i sensor1 -u sensor1 -P sensor1pw -q 1 \
			-t 'devices/sensor1/commands/reboot' -t 'devices/sensor1/commands/set' -C 1 -W 60 -v >"$work/req" 2>/dev/null &
		echo $! >"$work/sub.pid"
		wait $! || exit 0
		req=$(cat "$work/req")
		topic=${req%% *} payload=${req#* }
		id=$(printf '%s' "$payload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
		params=$(printf '%s' "$payload" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["params"]))')
		mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i sensor1 -u sensor1 -P sensor1pw -q 1 \
			-t "devices/sensor1/responses/$id" -m "{\"done\": \"${topic##*/}\", \"params\": $params}"
	done
) &
responder=$!
wait_for 20 "sensor1 online" sh -c "curl -fsS -u admin:adminpw '$api/devices/sensor1' | grep -q '\"online\":true'"

if command -v mcabber >/dev/null && command -v tmux >/dev/null; then
	topic="interop/mcabber/$run"
	tjid="interop.mcabber.$run@topics.$XMPP_DOMAIN"
	mkdir -p "$work/histo"
	cat >"$work/mcabberrc" <<RC
set jid = admin@$XMPP_DOMAIN
set password = adminpw
set resource = mcabber
set server = 127.0.0.1
set port = $XMPP_PORT
set tls = 1
set ssl_ignore_checks = 1
set logging = 1
set logging_dir = $work/histo
set tracelog_file = $work/trace.log
set tracelog_level = 3
set fifo_name = $work/mcabber.fifo
module load fifo
RC
	chmod 600 "$work/mcabberrc"
	HOME=$work TERM=xterm tmux new-session -d -s "$session" -x 200 -y 50 "mcabber -f $work/mcabberrc"
	wait_for 20 "mcabber's FIFO" test -p "$work/mcabber.fifo"
	wait_for 30 "mcabber logged in (its roster arrived)" grep -q "<iq[^>]*type=.result.[^>]*><query xmlns=.jabber:iq:roster" "$work/trace.log"
	grep -qi "starttls" "$work/trace.log" || fail "mcabber did not use STARTTLS"
	mc() { printf '%s\n' "$*" >"$work/mcabber.fifo"; }

	mc "/add $tjid"
	wait_for 20 "topic subscription approved for mcabber" grep -q "subscribed.*$tjid\|$tjid.*subscribed" "$work/trace.log"
	mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u admin -P adminpw -t "$topic" -m "hello mcabber $run"
	wait_for 20 "mcabber received the MQTT message" sh -c "grep -rq 'hello mcabber $run' '$work/histo'"
	echo "ok: mcabber (STARTTLS) subscribed to $tjid and received mosquitto_pub's message"

	dev="sensor1@devices.$XMPP_DOMAIN"
	mc "/rawxml send <iq type='get' id='mc-list-$run' to='$dev'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>"
	wait_for 20 "mcabber got the command list" grep -q "mc-list-$run.*node=.reboot." "$work/trace.log"
	mc "/rawxml send <iq type='set' id='mc-run-$run' to='$dev'><command xmlns='http://jabber.org/protocol/commands' node='reboot' action='execute'/></iq>"
	wait_for 20 "mcabber's reboot completed" grep -q "mc-run-$run.*status=.completed.*done.*reboot" "$work/trace.log"
	mc "/rawxml send <iq type='set' id='mc-form-$run' to='$dev'><command xmlns='http://jabber.org/protocol/commands' node='set' action='execute'/></iq>"
	wait_for 20 "mcabber got the form of set" grep -q "mc-form-$run.*status=.executing.*type=.form.*var=.unit.*list-single" "$work/trace.log"
	echo "ok: mcabber listed sensor1's ad-hoc commands, ran reboot and got the form of set"
	mc "/quit"
else
	echo "skip: mcabber or tmux not installed"
fi

timeout 90 /usr/bin/python3 - "$XMPP_PORT" "$MQTT_PORT" "$HTTP_PORT" "$XMPP_DOMAIN" "$run" <<'PY'
import asyncio, base64, json, logging, ssl, subprocess, sys, urllib.error, urllib.request
import slixmpp

xmpp_port, mqtt_port, http_port, domain, run = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
logging.basicConfig(level=logging.ERROR)
dev = "sensor1@devices." + domain


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, pw, resource):
        super().__init__(f"{user}@{domain}/{resource}", pw)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for p in ("xep_0030", "xep_0004", "xep_0050", "xep_0203", "xep_0280", "xep_0297"):
            self.register_plugin(p)
        self.messages = asyncio.Queue()
        self.carbons = asyncio.Queue()
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(("sent", m)))
        self.add_event_handler("carbon_received", lambda m: self.carbons.put_nowait(("received", m)))

    async def on_start(self, _):
        self.send_presence()
        await self.get_roster()
        if not self.started.done():
            self.started.set_result(True)


async def connect(user, pw, resource):
    c = Client(user, pw, resource)
    c.connect(("127.0.0.1", xmpp_port))
    await asyncio.wait_for(c.started, 20)
    return c


async def next_message(c, match, what):
    async def loop():
        while True:
            m = await c.messages.get()
            if match(m):
                return m
    try:
        return await asyncio.wait_for(loop(), 15)
    except asyncio.TimeoutError:
        fail("nothing arrived: " + what)


async def main():
    admin = await connect("admin", "adminpw", "phone")
    laptop = await connect("admin", "adminpw", "laptop")

    # Disco: the server announces carbons and ad-hoc commands.
    info = await admin["xep_0030"].get_info(jid=domain, timeout=10)
    feats = info["disco_info"]["features"]
    for f in ("urn:xmpp:carbons:2", "http://jabber.org/protocol/commands"):
        if f not in feats:
            fail(f"server disco#info lacks {f}: {feats}")

    # XEP-0050: the command list, a command form and its completion.
    items = await admin["xep_0050"].get_commands(jid=dev, timeout=10)
    nodes = [i[1] for i in items["disco_items"]["items"]]
    if set(nodes) != {"reboot", "set"}:
        fail(f"command list of {dev}: {nodes}")
    r = await admin["xep_0050"].send_command(dev, "set", timeout=10)
    cmd = r["command"]
    form = cmd["form"]
    if cmd["status"] != "executing" or form["type"] != "form":
        fail(f"set did not answer with a form: {r}")
    fields = form.get_fields()
    if fields["unit"]["type"] != "list-single" or not fields["unit"]["required"] or fields["fast"]["type"] != "boolean" \
            or fields["interval"]["value"] != "60" or fields["interval"]["desc"] != "seconds":
        fail(f"form fields: {fields}")
    sub = admin["xep_0004"].make_form(ftype="submit")
    sub.add_field(var="FORM_TYPE", value="urn:hub:command:0", ftype="hidden")
    sub.add_field(var="unit", value="min")
    sub.add_field(var="fast", value=True, ftype="boolean")
    iq = admin.Iq(stype="set", sto=dev)
    iq["command"]["node"] = "set"
    iq["command"]["sessionid"] = cmd["sessionid"]
    iq["command"]["action"] = "complete"
    iq["command"].append(sub)
    done = await iq.send(timeout=20)
    if done["command"]["status"] != "completed":
        fail(f"submitted form: {done}")
    result = json.loads(done["command"]["form"].get_fields()["result"]["value"])
    if result != {"done": "set", "params": {"unit": "min", "fast": True, "interval": 60}}:
        fail(f"device reply: {result}")
    print("ok: slixmpp xep_0050 listed the commands, got the form of set and completed it with typed params", flush=True)

    # A bad value is a bad-request naming the parameter.
    r = await admin["xep_0050"].send_command(dev, "set", timeout=10)
    bad = admin["xep_0004"].make_form(ftype="submit")
    bad.add_field(var="unit", value="hours")
    iq = admin.Iq(stype="set", sto=dev)
    iq["command"]["node"], iq["command"]["sessionid"], iq["command"]["action"] = "set", r["command"]["sessionid"], "complete"
    iq["command"].append(bad)
    try:
        await iq.send(timeout=10)
        fail("a bad enum value was accepted")
    except slixmpp.exceptions.IqError as e:
        if e.condition != "bad-request" or "unit" not in e.text:
            fail(f"bad value: {e.condition} {e.text}")

    # XEP-0280: the laptop enables carbons and sees what the phone sends.
    await laptop["xep_0280"].enable(timeout=10)
    topic_jid = f"interop.carbons.{run}@topics.{domain}"
    admin.send_message(mto=topic_jid, mbody="from the phone " + run, mtype="chat")
    kind, m = await asyncio.wait_for(laptop.carbons.get(), 15)
    if kind != "sent" or m["carbon_sent"]["body"] != "from the phone " + run or m["from"].bare != f"admin@{domain}":
        fail(f"carbon: {kind} {m}")
    print("ok: slixmpp xep_0280 sent carbon", flush=True)

    # XEP-0203: a retained value arrives on subscription with a stamp.
    topic = f"interop/delay/{run}"
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", mqtt_port, "-u", "admin", "-P", "adminpw",
                    "-t", topic, "-m", "21.5", "-r"], check=True)
    # mosquitto_pub returns once it sent: wait until the hub retains it, so
    # that what comes is the retained value and not a live message.
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/topics/{topic}",
                                 headers={"Authorization": "Basic " + base64.b64encode(b"admin:adminpw").decode()})
    for _ in range(100):
        try:
            if urllib.request.urlopen(req, timeout=5).read() == b"21.5":
                break
        except urllib.error.HTTPError:
            pass
        await asyncio.sleep(0.1)
    else:
        fail("the retained value did not reach the hub")
    tjid = topic.replace("/", ".") + "@topics." + domain
    laptop.send_presence(pto=tjid, ptype="subscribe")
    m = await next_message(laptop, lambda m: m["from"].bare == tjid and m["body"] == "21.5", "retained value")
    stamp = m["delay"]["stamp"]
    if stamp is None or m["delay"]["from"] != tjid:
        fail(f"retained value without an XEP-0203 stamp: {m}")
    print(f"ok: slixmpp xep_0203 stamp {stamp.isoformat()} on the retained value", flush=True)

    admin.disconnect()
    laptop.disconnect()


asyncio.run(main())
PY
