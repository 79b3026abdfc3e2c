#!/usr/bin/env bash
# XMPP interop with slixmpp (Debian python3-slixmpp) and mosquitto clients:
# alice logs in with SCRAM-SHA-256 over STARTTLS, subscribes to a topic JID,
# receives what mosquitto_pub publishes, and a chat message she sends to a
# topic JID reaches mosquitto_sub. Then component mode (XEP-0114): a Prosody
# started here and a second hub connected to it as a component, reached by a
# slixmpp user of that Prosody.
set -euo pipefail
: "${XMPP_PORT:?}" "${MQTT_PORT:?}" "${XMPP_DOMAIN:=localhost}"

for mech in SCRAM-SHA-256 SCRAM-SHA-1; do
	timeout 60 /usr/bin/python3 - "$XMPP_PORT" "$MQTT_PORT" "$XMPP_DOMAIN" "$mech" <<'PY'
import asyncio, logging, ssl, subprocess, sys, time, uuid
import slixmpp

xmpp_port, mqtt_port, domain, mech = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
run = uuid.uuid4().hex[:8]
topic_in, topic_out = f"interop/xmpp/{run}/in", f"interop/xmpp/{run}/out"
jid_in = topic_in.replace("/", ".") + "@topics." + domain
jid_out = topic_out.replace("/", ".") + "@topics." + domain
logging.basicConfig(level=logging.ERROR)


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class Alice(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__("alice@" + domain, "alicepw", sasl_mech=mech)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self["feature_mechanisms"].unencrypted_plain = False
        self.messages = asyncio.Queue()
        self.started = asyncio.get_event_loop().create_future()
        self.subscribed = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda e: fail("authentication with " + mech + " failed"))
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence_subscribed", self.on_subscribed)
        self.add_event_handler("presence_unsubscribed", lambda p: fail("subscription to " + jid_in + " refused"))

    async def on_start(self, _):
        self.send_presence()
        await self.get_roster()
        if not self.started.done():
            self.started.set_result(True)

    def on_subscribed(self, p):
        if p["from"].bare == jid_in and not self.subscribed.done():
            self.subscribed.set_result(True)


async def main():
    alice = Alice()
    alice.connect(("127.0.0.1", xmpp_port))
    await asyncio.wait_for(alice.started, 20)
    if not alice.is_connected() or alice.transport.get_extra_info("sslcontext") is None:
        fail("not on a TLS connection")
    print(f"ok: xmpp login as alice with {mech} over STARTTLS", flush=True)

    alice.send_presence_subscription(pto=jid_in)
    await asyncio.wait_for(alice.subscribed, 10)
    print("ok: xmpp subscription to topic JID approved", flush=True)

    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", mqtt_port, "-q", "1", "-t", topic_in, "-m", "hello-from-mqtt"],
                   check=True, timeout=10)
    deadline = time.monotonic() + 10
    while True:
        m = await asyncio.wait_for(alice.messages.get(), max(0.1, deadline - time.monotonic()))
        if m["from"].bare == jid_in and m["body"]:
            if m["body"] != "hello-from-mqtt":
                fail("unexpected body " + repr(m["body"]))
            break
    print("ok: mosquitto_pub -> topic JID chat message", flush=True)

    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", mqtt_port, "-q", "1", "-t", topic_out, "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, text=True)
    await asyncio.sleep(1)  # let mosquitto_sub subscribe
    alice.send_message(mto=jid_out, mbody="hello-from-xmpp", mtype="chat")
    out, _ = await asyncio.get_event_loop().run_in_executor(None, sub.communicate)
    if out.strip() != "hello-from-xmpp":
        fail("mosquitto_sub got " + repr(out))
    print("ok: chat message to topic JID -> mosquitto_sub", flush=True)
    alice.disconnect()


asyncio.get_event_loop().run_until_complete(main())
PY
done

timeout 60 /usr/bin/python3 - "$XMPP_PORT" "$XMPP_DOMAIN" <<'PY'
import asyncio, logging, ssl, sys
import slixmpp

port, domain = int(sys.argv[1]), sys.argv[2]
logging.basicConfig(level=logging.CRITICAL)


async def main():
    bad = slixmpp.ClientXMPP("alice@" + domain, "wrong-password", sasl_mech="SCRAM-SHA-256")
    bad.ssl_context.check_hostname = False
    bad.ssl_context.verify_mode = ssl.CERT_NONE
    failed = asyncio.get_event_loop().create_future()
    bad.add_event_handler("failed_all_auth", lambda e: failed.done() or failed.set_result(True))
    bad.add_event_handler("session_start", lambda e: failed.done() or failed.set_result(False))
    bad.connect(("127.0.0.1", port))
    if not await asyncio.wait_for(failed, 20):
        print("FAIL: login with a wrong password succeeded", flush=True)
        sys.exit(1)
    bad.disconnect()
    print("ok: xmpp login with a wrong password refused", flush=True)


asyncio.get_event_loop().run_until_complete(main())
PY

# --- Component mode with Prosody ------------------------------------------
if ! command -v prosody >/dev/null; then
	echo "skip: prosody is not installed (component mode)"
	exit 0
fi
work=$(mktemp -d)
pros_pid="" hub2_pid=""
cleanup() {
	for p in $hub2_pid $pros_pid; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in $hub2_pid $pros_pid; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=../lib/ports.sh
. "$(dirname "$0")/../lib/ports.sh"
wait_port() { # wait until something listens on 127.0.0.1:$1
	timeout 20 bash -c "until (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; do sleep 0.2; done"
}
pros_c2s=$(free_port) pros_comp=$(free_port) hub2_mqtt=$(free_port) hub2_http=$(free_port)
comp_domain="hubtopics.$XMPP_DOMAIN"
mkdir -p "$work/prosody"
cat >"$work/prosody/prosody.cfg.lua" <<CFG
pidfile = "$work/prosody/prosody.pid"
data_path = "$work/prosody"
run_as_root = true
log = { { levels = { min = "info" }, to = "file", filename = "$work/prosody/prosody.log" } }
interfaces = { "127.0.0.1" }
c2s_ports = { $pros_c2s }
s2s_ports = { }
component_ports = { $pros_comp }
component_interface = "127.0.0.1"
http_ports = { }
https_ports = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "offline"; "posix" }
modules_disabled = { "s2s"; "tls" }
authentication = "internal_hashed"
c2s_require_encryption = false
VirtualHost "$XMPP_DOMAIN"
Component "$comp_domain"
    component_secret = "interop-secret"
CFG
prosodyctl --config "$work/prosody/prosody.cfg.lua" register alice "$XMPP_DOMAIN" alicepw >/dev/null 2>&1
prosody --config "$work/prosody/prosody.cfg.lua" -F >"$work/prosody/out.log" 2>&1 &
pros_pid=$!
wait_port "$pros_comp" || { echo "FAIL: prosody did not start"; cat "$work/prosody/"*.log; exit 1; }
echo "ok: prosody started (c2s $pros_c2s, component $pros_comp)"

# Prosody's users may publish and subscribe as users without rules do
# (the default, deny, would refuse them).
printf 'xmpp:\n  component_peers: user\n' >"$work/hub2.yaml"
"$HUB_BIN" serve --config "$work/hub2.yaml" --data-dir "$work/hub2" --mqtt-addr "127.0.0.1:$hub2_mqtt" --coap-addr off \
	--http-addr "127.0.0.1:$hub2_http" --xmpp-addr off --xmpp-domain "$XMPP_DOMAIN" \
	--xmpp-component-addr "127.0.0.1:$pros_comp" --xmpp-component-domain "$comp_domain" \
	--xmpp-component-secret interop-secret >"$work/hub2.log" 2>&1 &
hub2_pid=$!
connected=""
for _ in $(seq 100); do
	if grep -qs "component connected" "$work/hub2.log"; then connected=1; break; fi
	kill -0 "$hub2_pid" 2>/dev/null || break
	sleep 0.1
done
[ -n "$connected" ] || { echo "FAIL: hub did not connect to prosody as a component"; cat "$work/hub2.log"; exit 1; }
echo "ok: hub connected to prosody as component $comp_domain"

component_case() {
	timeout 60 /usr/bin/python3 - "$pros_c2s" "$hub2_mqtt" "$comp_domain" "$XMPP_DOMAIN" <<'PY'
import asyncio, logging, subprocess, sys, uuid
import slixmpp

xmpp_port, mqtt_port, comp_domain, domain = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
run = uuid.uuid4().hex[:8]
topic_in, topic_out = f"interop/comp/{run}/in", f"interop/comp/{run}/out"
jid_in = topic_in.replace("/", ".") + "@" + comp_domain
jid_out = topic_out.replace("/", ".") + "@" + comp_domain
logging.basicConfig(level=logging.ERROR)


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class Alice(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__("alice@" + domain, "alicepw")
        self.messages = asyncio.Queue()
        self.started = asyncio.get_event_loop().create_future()
        self.subscribed = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda e: fail("prosody login failed"))
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence_subscribed", self.on_subscribed)

    async def on_start(self, _):
        self.send_presence()
        await self.get_roster()
        self.started.set_result(True)

    def on_subscribed(self, p):
        if p["from"].bare == jid_in and not self.subscribed.done():
            self.subscribed.set_result(True)


async def main():
    alice = Alice()
    alice.connect(("127.0.0.1", xmpp_port), disable_starttls=True)
    await asyncio.wait_for(alice.started, 20)
    alice.send_presence_subscription(pto=jid_in)
    await asyncio.wait_for(alice.subscribed, 10)
    print("ok: component mode: prosody user subscribed to " + jid_in, flush=True)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", mqtt_port, "-q", "1", "-t", topic_in, "-m", "via-component"],
                   check=True, timeout=10)
    while True:
        m = await asyncio.wait_for(alice.messages.get(), 10)
        if m["from"].bare == jid_in and m["body"]:
            if m["body"] != "via-component":
                fail("unexpected body " + repr(m["body"]))
            break
    print("ok: component mode: mosquitto_pub -> prosody user", flush=True)
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", mqtt_port, "-q", "1", "-t", topic_out, "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, text=True)
    await asyncio.sleep(1)
    alice.send_message(mto=jid_out, mbody="from-prosody", mtype="chat")
    out, _ = await asyncio.get_event_loop().run_in_executor(None, sub.communicate)
    if out.strip() != "from-prosody":
        fail("mosquitto_sub got " + repr(out))
    print("ok: component mode: prosody user chat -> mosquitto_sub", flush=True)
    alice.disconnect()


asyncio.get_event_loop().run_until_complete(main())
PY
}
component_case

# Prosody restarts: the hub reconnects with back-off and serves again.
kill -TERM "$pros_pid"
for _ in $(seq 50); do kill -0 "$pros_pid" 2>/dev/null || break; sleep 0.1; done
before=$(grep -c "component connected" "$work/hub2.log")
prosody --config "$work/prosody/prosody.cfg.lua" -F >>"$work/prosody/out.log" 2>&1 &
pros_pid=$!
reconnected=""
for _ in $(seq 300); do
	if [ "$(grep -c "component connected" "$work/hub2.log")" -gt "$before" ]; then reconnected=1; break; fi
	sleep 0.1
done
[ -n "$reconnected" ] || { echo "FAIL: hub did not reconnect after prosody restarted"; tail -20 "$work/hub2.log"; exit 1; }
echo "ok: component reconnected after prosody restart"
component_case
