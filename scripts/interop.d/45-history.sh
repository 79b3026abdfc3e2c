#!/usr/bin/env bash
# History interop: mosquitto_pub publishes readings (numbers, a JSON
# object), curl reads them back from GET /api/v1/history as JSON and CSV,
# and slixmpp (plugin xep_0313) scrolls back through the topic JID's
# XEP-0313 archive page by page (XEP-0059), as a chat client does. The
# hub writes history every 5 s (history.flush_interval): the reads poll.
set -euo pipefail
: "${XMPP_PORT:?}" "${MQTT_PORT:?}" "${HTTP_PORT:?}" "${XMPP_DOMAIN:=localhost}"

run=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
topic="interop/history/$run/t"
for v in 20 21 22 23 24; do
	mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t "$topic" -m "$v"
done
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t "interop/history/$run/env" -m '{"temp":21.5,"air":{"co2":415}}'

url="http://127.0.0.1:$HTTP_PORT/api/v1/history/$topic"
body=""
for _ in $(seq 200); do
	body=$(curl -fsS -u alice:alicepw "$url" 2>/dev/null || true)
	[ "$(grep -o '"value":[0-9]' <<<"$body" | wc -l)" -eq 5 ] && break
	sleep 0.1
done
if [ "$(grep -o '"value":[0-9]' <<<"$body" | wc -l)" -ne 5 ]; then
	echo "FAIL: history of $topic over REST: $body"; exit 1
fi
echo "ok: mosquitto_pub readings -> GET /api/v1/history (JSON)"

csv=$(curl -fsS -u alice:alicepw -H 'Accept: text/csv' "$url?limit=2")
if [ "$(head -1 <<<"$csv")" != "time,field,value" ] || [ "$(tail -1 <<<"$csv" | cut -d, -f2-)" != "value,24" ]; then
	echo "FAIL: CSV history: $csv"; exit 1
fi
echo "ok: GET /api/v1/history with Accept: text/csv"

env=""
for _ in $(seq 200); do
	env=$(curl -fsS -u alice:alicepw "http://127.0.0.1:$HTTP_PORT/api/v1/history/interop/history/$run/env?field=air.co2" 2>/dev/null || true)
	grep -q '"value":415' <<<"$env" && break
	sleep 0.1
done
grep -q '"value":415' <<<"$env" || { echo "FAIL: JSON field air.co2: $env"; exit 1; }
echo "ok: a JSON object's nested field is a series (air.co2)"

timeout 60 /usr/bin/python3 - "$XMPP_PORT" "$XMPP_DOMAIN" "$topic" <<'PY'
import asyncio, logging, ssl, sys
import slixmpp
from slixmpp import JID

port, domain, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
archive = JID(topic.replace("/", ".") + "@topics." + domain)
logging.basicConfig(level=logging.ERROR)


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


def bodies(results):
    return [m["mam_result"]["forwarded"]["stanza"]["body"] for m in results]


async def main():
    c = slixmpp.ClientXMPP("alice@" + domain, "alicepw", sasl_mech="SCRAM-SHA-256")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ("xep_0030", "xep_0059", "xep_0297", "xep_0313"):
        c.register_plugin(p)
    started = asyncio.get_event_loop().create_future()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    c.add_event_handler("failed_auth", lambda _: fail("login failed"))
    c.connect(("127.0.0.1", port))
    await asyncio.wait_for(started, 20)
    c.send_presence()

    info = await c["xep_0030"].get_info(jid=archive, timeout=10)
    if "urn:xmpp:mam:2" not in info["disco_info"]["features"]:
        fail("disco#info of %s lacks urn:xmpp:mam:2: %s" % (archive, info["disco_info"]["features"]))
    print("ok: the topic JID advertises urn:xmpp:mam:2", flush=True)

    first = await c["xep_0313"].retrieve(jid=archive, rsm={"max": 2}, timeout=10)
    got = bodies(first["mam"]["results"])
    if got != ["20", "21"] or first["mam_fin"]["rsm"]["count"] != "5":
        fail("first MAM page %s (count %s)" % (got, first["mam_fin"]["rsm"]["count"]))
    print("ok: slixmpp MAM query of the topic JID: first page", got, flush=True)

    pages, seen = 0, []
    async for page in c["xep_0313"].retrieve(jid=archive, iterator=True, rsm={"max": 2}):
        pages += 1
        seen += bodies(page["mam"]["results"])
        if pages > 5:
            break
    if seen != ["20", "21", "22", "23", "24"] or pages != 3:
        fail("paging through the archive: %s in %d pages" % (seen, pages))
    print("ok: slixmpp RSM paging through the archive: %s in %d pages" % (seen, pages), flush=True)

    stamp = first["mam"]["results"][1]["mam_result"]["forwarded"]["delay"]["stamp"]
    later = await c["xep_0313"].retrieve(jid=archive, start=stamp, timeout=10)
    if bodies(later["mam"]["results"]) != ["21", "22", "23", "24"]:
        fail("start filter: %s" % bodies(later["mam"]["results"]))
    print("ok: MAM start filter", flush=True)
    c.disconnect()


asyncio.get_event_loop().run_until_complete(main())
PY
