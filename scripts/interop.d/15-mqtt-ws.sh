#!/usr/bin/env bash
# MQTT over WebSocket (--mqtt-ws-addr) with python3-websockets: a client
# speaking MQTT 3.1.1 in binary frames (subprotocol "mqtt"), as MQTT.js in
# a browser does, publishes at QoS 1 and gets its PUBACK; mosquitto_sub on
# the TCP listener receives it; a wrong password gets CONNACK 4 (bad user name or password).
# Needs MQTT_PORT and MQTT_WS_PORT.
set -euo pipefail
: "${MQTT_PORT:?}" "${MQTT_WS_PORT:?}"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

timeout 15 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u alice -P alicepw -t ws/interop -C 1 -q 1 >"$tmp/got" 2>"$tmp/err" &
sub=$!
# The subscription is in place once a retained marker comes back.
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u alice -P alicepw -t ws/ready -r -m up
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u alice -P alicepw -t ws/ready -C 1 >/dev/null
sleep 0.2 # mosquitto_sub has no ready signal of its own; the marker above bounds the start-up

timeout 30 /usr/bin/python3 - "$MQTT_WS_PORT" <<'PY'
import asyncio, struct, sys
import websockets

port = int(sys.argv[1])

def s(b): return struct.pack("!H", len(b)) + b
def rl(n):
    out = b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n: return out
def connect(user, pw):
    var = s(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    pl = s(b"ws-interop") + s(user) + s(pw)
    return bytes([0x10]) + rl(len(var + pl)) + var + pl

async def main():
    async with websockets.connect(f"ws://127.0.0.1:{port}/mqtt", subprotocols=["mqtt"]) as ws:
        await ws.send(connect(b"alice", b"alicepw"))
        ack = await asyncio.wait_for(ws.recv(), 10)
        assert ack[0] == 0x20 and ack[3] == 0, f"CONNACK {ack!r}"
        topic, payload = b"ws/interop", b"from a websocket"
        await ws.send(bytes([0x32]) + rl(len(s(topic)) + 2 + len(payload)) + s(topic) + struct.pack("!H", 7) + payload)
        puback = await asyncio.wait_for(ws.recv(), 10)
        assert puback == bytes([0x40, 2, 0, 7]), f"PUBACK {puback!r}"
        await ws.send(bytes([0xE0, 0]))
    async with websockets.connect(f"ws://127.0.0.1:{port}/mqtt", subprotocols=["mqtt"]) as ws:
        await ws.send(connect(b"alice", b"wrong"))
        ack = await asyncio.wait_for(ws.recv(), 10)
        assert ack[0] == 0x20 and ack[3] == 4, f"wrong password: CONNACK {ack!r}"
    print("ok: MQTT over WebSocket (python3-websockets): CONNACK, QoS 1 PUBACK, wrong password refused (4)")

asyncio.run(main())
PY
wait "$sub" || fail "mosquitto_sub did not get the WebSocket publish: $(cat "$tmp/err")"
grep -qx "from a websocket" "$tmp/got" || fail "mosquitto_sub got $(cat "$tmp/got")"
echo "ok: a publish over WebSocket reached mosquitto_sub on TCP"
