#!/usr/bin/env bash
# XMPP interop with slixmpp (Debian python3-slixmpp) and mosquitto clients:
# alice logs in with SCRAM-SHA-256 over STARTTLS, subscribes to a topic JID,
# receives what mosquitto_pub publishes, and a chat message she sends to a
# topic JID reaches mosquitto_sub.
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
