package mqtt

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/mqttwire"
	"github.com/mochi-mqtt/server/v2/packets"
)

// readConnack reads a CONNACK and returns its reason code and, for MQTT
// 5, its properties.
func readConnack(t *testing.T, r *rawConn, version byte) (byte, packets.Properties) {
	t.Helper()
	b := make([]byte, 2)
	if _, err := io.ReadFull(r, b); err != nil || b[0] != 0x20 {
		t.Fatalf("connack: % x %v", b, err)
	}
	body := make([]byte, b[1])
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("connack body: %v", err)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack, Remaining: int(b[1])}, ProtocolVersion: version}
	if err := pk.ConnackDecode(body); err != nil {
		t.Fatalf("connack % x: %v", body, err)
	}
	return pk.ReasonCode, pk.Properties
}

func TestWillTopicWithWildcardRefused(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	for _, topic := range []string{"home/#", "a/+/b"} {
		// MQTT 5: CONNACK 0x90.
		r := dialRaw(t, h.addr)
		r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "w5",
				WillFlag: true, WillTopic: topic, WillPayload: []byte("gone")}})
		if code, _ := readConnack(t, r, 5); code != packets.ErrTopicNameInvalid.Code {
			t.Errorf("v5 will %q: CONNACK 0x%02x, want 0x90", topic, code)
		}
		r.rest()
		// MQTT 3.1.1: closed without a CONNACK.
		r = dialRaw(t, h.addr)
		r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "w3",
				WillFlag: true, WillTopic: topic, WillPayload: []byte("gone")}})
		if got := r.rest(); len(got) != 0 {
			t.Errorf("v3 will %q: got % x, want the connection closed", topic, got)
		}
	}
	// A will on a topic name is still fine.
	cp := &paho.Connect{ClientID: "wok", CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "home/gone", Payload: []byte("x")}}
	if _, ca, err := dialV5(t, h.addr, cp); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("good will: %+v %v", ca, err)
	}
}

func TestV3EmptyClientIDPersistentRejected(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	r := dialRaw(t, h.addr)
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 30}})
	if code, _ := readConnack(t, r, 4); code != v3BadIdentifier {
		t.Errorf("CONNACK return code %d, want 2 (identifier rejected)", code)
	}
	// With clean session 1 an empty id is fine (the server assigns one).
	r = dialRaw(t, h.addr)
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30}})
	if code, _ := readConnack(t, r, 4); code != 0 {
		t.Errorf("clean, empty id: CONNACK %d, want 0", code)
	}
}

func TestConnackMaximumPacketSize(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.MaxPacketSize = 4096 })
	r := dialRaw(t, h.addr)
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "mps"}})
	code, props := readConnack(t, r, 5)
	if code != 0 || props.MaximumPacketSize != 4096 {
		t.Fatalf("CONNACK 0x%02x, Maximum Packet Size %d, want 4096", code, props.MaximumPacketSize)
	}
}

// disconnectOf reads what the server sends until it closes and returns
// the reason code of the DISCONNECT in it.
func disconnectOf(t *testing.T, r *rawConn) (byte, []byte) {
	t.Helper()
	got := r.rest()
	if len(got) >= 3 && got[0] == 0xe0 {
		return got[2], got
	}
	return 0, got
}

func TestOversizePacketGetsDisconnect95(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.MaxPacketSize = 1024 })
	big := append([]byte{0x30, 0x80, 0x40}, make([]byte, 8192)...) // PUBLISH, 8 KiB announced and sent
	r := dialRaw(t, h.addr)
	r.connect(5)
	if _, err := r.Write(big); err != nil {
		t.Fatal(err)
	}
	if code, got := disconnectOf(t, r); code != packets.ErrPacketTooLarge.Code {
		t.Fatalf("v5: got % x, want DISCONNECT 0x95", got)
	}
	// MQTT 3.1.1 has no DISCONNECT from the server: just closed.
	r = dialRaw(t, h.addr)
	r.connect(4)
	_, _ = r.Write(big) // the server may cut it off while it writes
	if got := r.rest(); len(got) != 0 {
		t.Fatalf("v3: got % x, want the connection closed", got)
	}
	// A packet under the bound goes through.
	c := mustV5(t, h.addr, "small", "", "")
	c.sub(t, "small", 0)
}

func TestMalformedTopicGetsReason(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	// The framing is sound; only the topic's bytes are wrong.
	publish := func(version byte, topic []byte) []byte {
		return mqttwire.AppendPublish(nil, mqttwire.PublishHeader{Version: version, Topic: string(topic)}, []byte("x"))
	}
	for name, topic := range map[string][]byte{"bad utf-8": {'a', '/', 0xff, 0xfe}, "nul": {'a', 0, 'b'}} {
		r := dialRaw(t, h.addr)
		r.connect(5)
		if _, err := r.Write(publish(mqttwire.V5, topic)); err != nil {
			t.Fatal(err)
		}
		if code, got := disconnectOf(t, r); code != packets.ErrMalformedPacket.Code {
			t.Errorf("%s: got % x, want DISCONNECT 0x81 (malformed packet)", name, got)
		}
	}
	// The same in MQTT 3.1.1 just closes.
	r := dialRaw(t, h.addr)
	r.connect(4)
	if _, err := r.Write(publish(mqttwire.V311, []byte{'a', 0xff})); err != nil {
		t.Fatal(err)
	}
	if got := r.rest(); len(got) != 0 {
		t.Errorf("v3: got % x, want the connection closed", got)
	}
}

// TestDeepFilterRefused: a filter of more levels than the bus takes
// (broker.MaxTopicLevels) gets SUBACK 0x8F, beside a good one granted in
// the same SUBSCRIBE; a publish to a topic that deep gets 0x90.
func TestDeepFilterRefused(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV5(t, h.addr, "deep", "", "")
	deep := strings.Repeat("a/", broker.MaxTopicLevels) + "#"
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: deep, QoS: 1}, {Topic: "ok/#", QoS: 1}}})
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	if len(sa.Reasons) != 2 || sa.Reasons[0] != packets.ErrTopicFilterInvalid.Code || sa.Reasons[1] != 1 {
		t.Fatalf("SUBACK reasons % x, want 8f 01", sa.Reasons)
	}
	pr, err := c.c.Publish(ctx, &paho.Publish{Topic: strings.Repeat("a/", broker.MaxTopicLevels) + "a", QoS: 1, Payload: []byte("x")})
	if pr == nil || pr.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("PUBACK %+v %v, want 0x90", pr, err)
	}
}
