#!/usr/bin/env bash
# Files over XMPP with slixmpp (Debian python3-slixmpp), curl and mosquitto
# clients: a 1 MiB XEP-0363 upload fetched back with curl (same sha256) and
# its descriptor seen by mosquitto_sub; XEP-0096 offers to a topic JID over
# XEP-0047 IBB and over XEP-0065 SOCKS5 through the hub's proxy
# (proxy.{domain}), and to a device JID (the device gets the command
# "file" over MQTT); refusals with their stanza errors.
set -euo pipefail
: "${XMPP_PORT:?}" "${MQTT_PORT:?}" "${HTTP_PORT:?}" "${XMPP_DOMAIN:=localhost}"

timeout 120 /usr/bin/python3 - "$XMPP_PORT" "$MQTT_PORT" "$HTTP_PORT" "$XMPP_DOMAIN" <<'PY'
import asyncio, hashlib, io, json, logging, os, ssl, subprocess, sys, time, uuid
import slixmpp
from slixmpp.exceptions import IqError

xmpp_port, mqtt_port, http_port, domain = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
run = uuid.uuid4().hex[:8]
logging.basicConfig(level=logging.ERROR)
logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # slixmpp leaves its filter task pending at exit
IBB, S5B = "http://jabber.org/protocol/ibb", "http://jabber.org/protocol/bytestreams"


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


def sha(b):
    return hashlib.sha256(b).hexdigest()


stored_names = []  # deleted at the end: alice's quota is shared with the other cases


def delete_all():
    for name, user in stored_names:
        subprocess.run(["curl", "-fsS", "--max-time", "20", "-u", user, "-X", "DELETE",
                        f"http://127.0.0.1:{http_port}/api/v1/files/{name}"], check=True, capture_output=True, timeout=30)


def curl(url, user=None):
    cmd = ["curl", "-fsS", "--max-time", "20", url]
    if user:
        cmd[1:1] = ["-u", user]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout


def mqtt_one(topic, user=None):
    """Starts mosquitto_sub for one message on topic."""
    cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", mqtt_port, "-q", "1", "-t", topic, "-C", "1", "-W", "20"]
    if user:
        cmd += ["-u", user[0], "-P", user[1], "-i", user[0]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, pw):
        super().__init__(user + "@" + domain, pw)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for p in ["xep_0030", "xep_0047", "xep_0065", "xep_0095", "xep_0096", "xep_0363"]:
            self.register_plugin(p)
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)

    async def on_start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)


async def offer(c, to, name, data, method):
    # slixmpp 1.8.3 wants the stream methods as form options (dicts).
    sid = uuid.uuid4().hex
    res = await c["xep_0096"].request_file_transfer(to, sid=sid, name=name, size=len(data),
                                                    mime_type="application/octet-stream", methods=[{"value": method}], timeout=10)
    chosen = res["si"]["feature_neg"]["form"]["values"]["stream-method"]
    if chosen != method:
        fail(f"the hub chose {chosen} for an offer of {method}")
    return sid


async def send_ibb(c, to, name, data):
    sid = await offer(c, to, name, data, IBB)
    stream = await c["xep_0047"].open_stream(to, sid=sid, block_size=4096, timeout=10)
    await stream.sendall(data, timeout=10)
    await stream.close(timeout=20)


async def send_socks5(c, to, name, data):
    sid = await offer(c, to, name, data, S5B)
    sock = await c["xep_0065"].handshake(to, sid=sid, timeout=10)
    if sock is None:
        fail("SOCKS5 handshake through the hub's proxy failed")
    closed = asyncio.get_event_loop().create_future()
    c.add_event_handler("socks5_closed", lambda exc: closed.done() or closed.set_result(True), disposable=True)
    await sock.write(data)
    sock.transport.close()  # flushed by the event loop, then closed
    await asyncio.wait_for(closed, 30)


def wait_file(name, data, user="alice:alicepw"):
    deadline = time.monotonic() + 20
    while True:
        try:
            got = curl(f"http://127.0.0.1:{http_port}/api/v1/files/{name}", user)
            if sha(got) != sha(data):
                fail(f"{name}: curl got sha256 {sha(got)}, sent {sha(data)}")
            stored_names.append((name, user))
            return
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                fail(f"{name} was not stored")
            time.sleep(0.2)


def descriptor(sub, name, data):
    out, _ = sub.communicate(timeout=30)
    try:
        d = json.loads(out)
    except ValueError:
        fail(f"mosquitto_sub got {out!r} for {name}")
    if d.get("name") != name or d.get("sha256") != sha(data) or d.get("size") != len(data):
        fail(f"descriptor {d}, want {name} of {len(data)} bytes, sha256 {sha(data)}")


async def main():
    alice = Client("alice", "alicepw")
    alice.connect(("127.0.0.1", xmpp_port))
    await asyncio.wait_for(alice.started, 20)

    # XEP-0363 discovery as clients do it: the server's disco items, then
    # the service's info with its size limit. (slixmpp 1.8.3's own
    # find_upload_service trips over Python 3.11's asyncio.wait, so the
    # service is handed to the plugin.)
    items = await alice["xep_0030"].get_items(domain, timeout=10)
    jids = {i[0] for i in items["disco_items"]["items"]}
    if "upload." + domain not in jids or "proxy." + domain not in jids:
        fail(f"server disco items {jids} lack upload/proxy")
    info = await alice["xep_0030"].get_info("upload." + domain, timeout=10)
    if "urn:xmpp:http:upload:0" not in info["disco_info"]["features"]:
        fail("upload service without urn:xmpp:http:upload:0")
    limit = None
    for form in info["disco_info"].iterables:
        values = form["values"]
        if values.get("FORM_TYPE") == ["urn:xmpp:http:upload:0"]:
            limit = int(values["max-file-size"])
    if not limit:
        fail("upload service announces no max-file-size")
    alice["xep_0363"].upload_service = slixmpp.JID("upload." + domain)
    alice["xep_0363"].max_file_size = limit
    print(f"ok: disco finds upload.{domain} (max-file-size {limit}) and proxy.{domain}", flush=True)

    # XEP-0363: 1 MiB, fetched back by curl from the slot's GET URL.
    data = os.urandom(1 << 20)
    url = await alice["xep_0363"].upload_file(f"up-{run}.bin", size=len(data), input_file=io.BytesIO(data),
                                              content_type="application/octet-stream", timeout=20)
    if sha(curl(url)) != sha(data):
        fail("curl fetched different bytes from " + url)
    print("ok: xep-0363 upload of 1 MiB by slixmpp, fetched by curl with the same sha256", flush=True)
    sub = mqtt_one(f"files/uploads/alice/+/up-{run}.bin")
    out, _ = sub.communicate(timeout=30)
    d = json.loads(out)
    if d["sha256"] != sha(data) or d["size"] != len(data) or not d["name"].startswith("uploads/alice/"):
        fail(f"upload descriptor {d}")
    stored_names.append((d["name"], "alice:alicepw"))
    print("ok: mosquitto_sub sees the upload's descriptor on files/" + d["name"], flush=True)

    # XEP-0363 refusal: over the size limit.
    try:
        await alice["xep_0363"].request_slot("upload." + domain, "huge.bin", 1 << 40, timeout=10)
        fail("a slot for 1 TiB was granted")
    except IqError as e:
        if e.condition != "not-acceptable" or "file-too-large" not in str(e.iq):
            fail(f"slot refusal: {e.condition} {e.iq}")
    print("ok: xep-0363 slot over the limit refused with not-acceptable + file-too-large", flush=True)

    # XEP-0096 to a topic JID over IBB and over SOCKS5.
    topic = f"interop/xfer/{run}"
    tjid = topic.replace("/", ".") + "@topics." + domain
    for method, send, size in (("ibb", send_ibb, 256 << 10), ("socks5", send_socks5, 4 << 20)):
        data = os.urandom(size)
        name = f"{topic}/{method}.bin"
        t0 = time.monotonic()
        await send(alice, tjid, f"{method}.bin", data)
        wait_file(name, data)
        secs = time.monotonic() - t0  # from the offer to the file served over REST
        sub = mqtt_one("files/" + name)
        descriptor(sub, name, data)
        print(f"ok: xep-0096 over {method} to a topic JID: stored, curl sha256 equal, descriptor on MQTT "
              f"({size / secs / 1e6:.2f} MB/s)", flush=True)

    # Refusal: an offer over the size limit.
    try:
        await alice["xep_0096"].request_file_transfer(tjid, sid=uuid.uuid4().hex, name="big.bin", size=1 << 40,
                                                      methods=[{"value": IBB}], timeout=10)
        fail("an offer of 1 TiB was accepted")
    except IqError as e:
        if e.condition != "not-acceptable":
            fail(f"offer refusal: {e.condition}")
    print("ok: xep-0096 offer over the size limit refused with not-acceptable", flush=True)
    await alice.disconnect()

    # To a device JID: stored, and the device (MQTT) gets the command "file".
    admin = Client("admin", "adminpw")
    admin.connect(("127.0.0.1", xmpp_port))
    await asyncio.wait_for(admin.started, 20)
    cmd = mqtt_one("devices/sensor1/commands/file", ("sensor1", "sensor1pw"))
    await asyncio.sleep(1)  # let mosquitto_sub subscribe
    data = os.urandom(64 << 10)
    await send_ibb(admin, "sensor1@devices." + domain, f"fw-{run}.bin", data)
    out, _ = cmd.communicate(timeout=30)
    c = json.loads(out)
    params = c.get("params", {})
    if params.get("name") != f"devices/sensor1/fw-{run}.bin" or params.get("sha256") != sha(data):
        fail(f"device command {c}")
    wait_file(f"devices/sensor1/fw-{run}.bin", data, "admin:adminpw")
    if sha(curl(params["shared_url"])) != sha(data):
        fail("the device's shared link serves other bytes")
    print("ok: xep-0096 over ibb to a device JID: stored, the MQTT device got the file command, "
          "its shared link serves the bytes without credentials", flush=True)
    await admin.disconnect()
    delete_all()
    print(f"ok: the {len(stored_names)} files deleted again over REST", flush=True)


asyncio.get_event_loop().run_until_complete(main())
PY
