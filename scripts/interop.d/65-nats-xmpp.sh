#!/usr/bin/env bash
# XMPP across a cluster: two hubs on an external NATS (Debian's
# nats-server with JetStream), slixmpp users alice on hub A and bob on hub
# B (same domain). They subscribe to each other's presence and see each
# other available, chat both ways; bob leaves (alice sees him go), alice
# writes to him while he is on no hub, and he gets it once when he logs in
# on B again. An XMPP device on B (slixmpp answering XEP-0050 ad-hoc
# commands) is commanded over REST on A and its answer comes back. Then
# kill -9 of hub B: alice sees bob unavailable (hub A notices his JID is
# held nowhere, xmpp.cluster_liveness, two checks). Needs
# HUB_BIN, nats-server, python3-slixmpp, curl.
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

hub_setup() { # the XMPP device the REST command case drives
	"$HUB_BIN" device add valve1 --protocol xmpp --password valve1pw --data-dir "$1" >/dev/null
}
a_pid=$(start_xmpp_hub a "$A_XMPP" "$A_HTTP")
b_pid=$(start_xmpp_hub b "$B_XMPP" "$B_HTTP")
wait_healthy a "$A_HTTP" "$a_pid"
wait_healthy b "$B_HTTP" "$b_pid"
echo "ok: hubs A and B healthy on the NATS"

timeout 150 /usr/bin/python3 - "$A_XMPP" "$B_XMPP" "$A_HTTP" "$b_pid" <<'PY'
import asyncio, json, logging, os, signal, ssl, subprocess, sys
import slixmpp

a_port, b_port, a_http, b_pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
logging.basicConfig(level=logging.ERROR)


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class User(slixmpp.ClientXMPP):
    def __init__(self, name):
        super().__init__(name + "@localhost", name + "pw", sasl_mech="SCRAM-SHA-256")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self["feature_mechanisms"].unencrypted_plain = False
        loop = asyncio.get_event_loop()
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.started = loop.create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda e: fail("authentication of " + name + " failed"))
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m) if m["body"] else None)
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(("available", p)))
        self.add_event_handler("presence_unavailable", lambda p: self.presences.put_nowait(("unavailable", p)))

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)


async def login(name, port):
    u = User(name)
    u.connect(("127.0.0.1", port))
    await asyncio.wait_for(u.started, 20)
    return u


async def presence_of(u, bare, kind, timeout=10):
    while True:
        k, p = await asyncio.wait_for(u.presences.get(), timeout)
        if k == kind and p["from"].bare == bare:
            return p


async def message(u, body, timeout=10):
    while True:
        m = await asyncio.wait_for(u.messages.get(), timeout)
        if m["body"] == body:
            return m


async def main():
    alice = await login("alice", a_port)
    bob = await login("bob", b_port)
    print("ok: alice logged in on hub A, bob on hub B", flush=True)

    # slixmpp approves subscription requests and subscribes back.
    alice.send_presence_subscription(pto="bob@localhost")
    await presence_of(alice, "bob@localhost", "available")
    await presence_of(bob, "alice@localhost", "available")
    print("ok: presence subscription across hubs: each sees the other available", flush=True)

    alice.send_message(mto="bob@localhost", mbody="hello from A", mtype="chat")
    m = await message(bob, "hello from A")
    bob.send_message(mto=m["from"], mbody="hello from B", mtype="chat")
    await message(alice, "hello from B")
    print("ok: chat alice@A -> bob@B (bare JID) and back (full JID)", flush=True)

    bob.disconnect()
    await presence_of(alice, "bob@localhost", "unavailable")
    print("ok: alice on A sees bob leave B", flush=True)

    alice.send_message(mto="bob@localhost", mbody="while you were away", mtype="chat")
    await asyncio.sleep(0.5)
    bob = await login("bob", b_port)
    await message(bob, "while you were away")
    try:
        await message(bob, "while you were away", timeout=1)
        fail("the offline message came twice")
    except asyncio.TimeoutError:
        pass
    print("ok: an offline message for bob delivered once when he logs in on B", flush=True)
    alice.disconnect()
    bob.disconnect()

    valve = User("valve1")
    for p in ("xep_0004", "xep_0030", "xep_0050"):
        valve.register_plugin(p)

    def on_set(iq, session):
        form = valve["xep_0004"].make_form(ftype="result")
        form.add_field(var="result", value=json.dumps({"valve": "open"}))
        session["payload"] = form
        session["next"] = None
        session["has_next"] = False
        return session

    valve.add_event_handler("session_start", lambda _: valve["xep_0050"].add_command(node="set", name="Set", handler=on_set))
    valve.connect(("127.0.0.1", b_port))
    await asyncio.wait_for(valve.started, 20)
    url = f"http://127.0.0.1:{a_http}/api/v1/devices/valve1/commands/set?timeout=5s"
    out = ""
    for _ in range(50):
        r = await asyncio.to_thread(subprocess.run, ["curl", "-sS", "-u", "admin:adminpw", "-X", "POST", "-H", "Content-Type: application/json",
                                                     "-d", '{"to":"open"}', "-w", " %{http_code}", url], capture_output=True, text=True, timeout=20)
        out = r.stdout
        if out.endswith(" 200"):
            break
        await asyncio.sleep(0.2)  # until the device's presence reached A
    if not out.endswith(" 200") or '"valve":"open"' not in out.replace(" ", ""):
        fail("REST command on A to the XMPP device on B: " + out)
    print("ok: a REST command on A reaches an XMPP device (XEP-0050) on B and its answer comes back", flush=True)
    valve.disconnect()

    alice = await login("alice", a_port)
    bob = await login("bob", b_port)
    await presence_of(alice, "bob@localhost", "available")
    os.kill(b_pid, signal.SIGKILL)
    t0 = asyncio.get_event_loop().time()
    await presence_of(alice, "bob@localhost", "unavailable", timeout=45)
    print(f"ok: kill -9 of hub B: alice on A sees bob unavailable after {asyncio.get_event_loop().time() - t0:.0f} s", flush=True)
    alice.disconnect()


asyncio.run(main())
PY
