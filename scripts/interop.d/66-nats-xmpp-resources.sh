#!/usr/bin/env bash
# One XMPP user on two hubs of a cluster (Debian's nats-server with
# JetStream): slixmpp bob with a resource on hub A and one on hub B, both
# with message carbons (XEP-0280) enabled, and alice on A. A chat from
# alice to bob's full JID on A is carbon-copied to his resource on B; one
# bob sends from B is copied to A. bob subscribes on A to a topic JID; QoS
# 0 and QoS 1 publishes over REST (curl) on B reach both resources, each
# once. Needs HUB_BIN, nats-server, python3-slixmpp, curl.
set -euo pipefail
# shellcheck source=../lib/nats.sh
. "$(dirname "$0")/../lib/nats.sh"

need_bins nats-server curl python3

work=$(mktemp -d)
nats_pid="" a_pid="" b_pid=""
cleanup() {
	stop_pid "$a_pid"
	stop_pid "$b_pid"
	stop_pid "$nats_pid"
	rm -rf "$work"
}
trap cleanup EXIT

NATS_PORT=$(free_port) A_XMPP=$(free_port) A_HTTP=$(free_port) B_XMPP=$(free_port) B_HTTP=$(free_port)

start_nats "$NATS_PORT" "$work"

a_pid=$(start_xmpp_hub a "$A_XMPP" "$A_HTTP")
b_pid=$(start_xmpp_hub b "$B_XMPP" "$B_HTTP")
wait_healthy a "$A_HTTP" "$a_pid"
wait_healthy b "$B_HTTP" "$b_pid"
echo "ok: hubs A and B healthy on the NATS"

timeout 120 /usr/bin/python3 - "$A_XMPP" "$B_XMPP" "$B_HTTP" <<'PY'
import asyncio, logging, ssl, subprocess, sys
import slixmpp

a_port, b_port, b_http = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
logging.basicConfig(level=logging.ERROR)
TOPIC_JID = "garden.soil@topics.localhost"


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class User(slixmpp.ClientXMPP):
    def __init__(self, name):
        super().__init__(name + "@localhost", name + "pw", sasl_mech="SCRAM-SHA-256")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self["feature_mechanisms"].unencrypted_plain = False
        self.register_plugin("xep_0280")
        loop = asyncio.get_event_loop()
        self.messages = asyncio.Queue()
        self.carbons = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.started = loop.create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda e: fail("authentication of " + name + " failed"))
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m) if m["body"] else None)
        self.add_event_handler("carbon_received", lambda m: self.carbons.put_nowait(("received", m["carbon_received"]["body"])))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(("sent", m["carbon_sent"]["body"])))
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))

    async def on_start(self, _):
        await self.get_roster()
        await self["xep_0280"].enable()
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)


async def login(name, port):
    u = User(name)
    u.connect(("127.0.0.1", port))
    await asyncio.wait_for(u.started, 20)
    return u


async def presence_from(u, full, timeout=10):
    while True:
        p = await asyncio.wait_for(u.presences.get(), timeout)
        if p["from"].full == full:
            return p


async def message(u, body, timeout=10):
    while True:
        m = await asyncio.wait_for(u.messages.get(), timeout)
        if m["body"] == body:
            return m


async def carbon(u, kind, body, timeout=10):
    while True:
        k, b = await asyncio.wait_for(u.carbons.get(), timeout)
        if (k, b) == (kind, body):
            return


async def none_more(q, match, timeout=0.5):
    try:
        while True:
            item = await asyncio.wait_for(q.get(), timeout)
            if match(item):
                fail(f"came twice: {item}")
    except asyncio.TimeoutError:
        pass


async def main():
    alice = await login("alice", a_port)
    bob_a = await login("bob", a_port)
    bob_b = await login("bob", b_port)
    await presence_from(bob_a, bob_b.boundjid.full)
    await presence_from(bob_b, bob_a.boundjid.full)
    print("ok: bob on hub A and on hub B, carbons enabled on both, each sees the other", flush=True)

    alice.send_message(mto=bob_a.boundjid.full, mbody="to bob on A", mtype="chat")
    await message(bob_a, "to bob on A")
    await carbon(bob_b, "received", "to bob on A")
    await none_more(bob_b.carbons, lambda c: c[1] == "to bob on A")
    print("ok: alice's chat to bob's full JID on A is carbon-copied to bob on B", flush=True)

    bob_b.send_message(mto="alice@localhost", mbody="from bob on B", mtype="chat")
    await message(alice, "from bob on B")
    await carbon(bob_a, "sent", "from bob on B")
    print("ok: bob's chat sent from B is carbon-copied to bob on A", flush=True)

    subscribed = asyncio.get_event_loop().create_future()
    bob_a.add_event_handler("presence_subscribed", lambda p: subscribed.done() or subscribed.set_result(p))
    bob_a.send_presence_subscription(pto=TOPIC_JID)
    await asyncio.wait_for(subscribed, 10)
    sent = []
    for i, qos in enumerate([1, 0, 1, 0, 1]):
        body = f"reading {i} qos {qos}"
        r = await asyncio.to_thread(subprocess.run, ["curl", "-sS", "-u", "admin:adminpw", "-X", "POST", "-H", "Content-Type: text/plain",
                                                     "-d", body, "-w", " %{http_code}", f"http://127.0.0.1:{b_http}/api/v1/topics/garden/soil?qos={qos}"],
                                    capture_output=True, text=True, timeout=20)
        if not r.stdout[-4:-2] == " 2":
            fail("publish on B: " + r.stdout + r.stderr)
        sent.append(body)
    for name, u in (("A", bob_a), ("B", bob_b)):
        for body in sent:
            await message(u, body)
        await none_more(u.messages, lambda m: str(m["from"]) == TOPIC_JID)
    print(f"ok: {len(sent)} publishes (QoS 0 and 1) on B reach bob's topic subscription on A and on B, once each", flush=True)
    for u in (alice, bob_a, bob_b):
        u.disconnect()


try:
    asyncio.run(main())
except (asyncio.TimeoutError, TimeoutError):
    fail("timed out after the last ok step: a message, carbon or presence did not arrive")
PY
