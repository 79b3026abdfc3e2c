package mqtt

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

var now0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// wire encodes pk as MQTT 5 and decodes it again, as a subscriber would.
func wire(t testing.TB, pk packets.Packet) packets.Packet {
	t.Helper()
	pk.ProtocolVersion = 5
	pk.Mods.AllowResponseInfo = true // as mochi's Client.WritePacket does
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatalf("encode: %v", err)
	}
	b := buf.Bytes()
	var fh packets.FixedHeader
	if err := fh.Decode(b[0]); err != nil {
		t.Fatalf("decode header: %v", err)
	}
	// Skip the remaining-length bytes.
	i := 1
	for b[i]&0x80 != 0 {
		i++
	}
	out := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	if err := out.PublishDecode(b[i+1:]); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return out
}

func TestEnvelopePacketRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		e    broker.Envelope
	}{
		{"minimal", broker.Envelope{Topic: "a", Payload: []byte{}}},
		{"all fields", broker.Envelope{Topic: "a/b", Payload: []byte{0, 1, 2}, QoS: 2, Retain: true,
			ContentType: "application/senml+json", ResponseTopic: "r/1", CorrelationData: []byte("c"),
			Expiry:     now0.Add(90 * time.Second),
			Properties: []broker.Property{{Key: "k", Value: "v"}, {Key: "k", Value: "w"}, {Key: "", Value: ""}}}},
		{"qos 1 unicode", broker.Envelope{Topic: "räum/温度", Payload: []byte("20"), QoS: 1, ContentType: "text/plain; charset=utf-8"}},
		{"payload format indicator", broker.Envelope{Topic: "t", Payload: []byte("text"), QoS: 1,
			Properties: []broker.Property{{Key: "u", Value: "1"}, {Key: PayloadFormatProperty, Value: "utf-8"}}}},
		{"sub-second expiry rounds up", broker.Envelope{Topic: "x", Payload: []byte("1"), Expiry: now0.Add(1500 * time.Millisecond)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk, dropped, ok := packetFromEnvelope(&tc.e, now0)
			if !ok || dropped != 0 {
				t.Fatalf("ok %v dropped %d", ok, dropped)
			}
			got := envelopeFromPacket(new(wire(t, pk)), broker.Origin{Protocol: broker.ProtoMQTT}, now0)
			want := tc.e
			if !want.Expiry.IsZero() {
				want.Expiry = now0.Add(time.Duration(pk.Properties.MessageExpiryInterval) * time.Second)
				if want.Expiry.Before(tc.e.Expiry) {
					t.Fatalf("expiry shortened: %v < %v", want.Expiry, tc.e.Expiry)
				}
			}
			equalEnvelopes(t, got, &want)
		})
	}
}

func equalEnvelopes(t testing.TB, got, want *broker.Envelope) {
	t.Helper()
	if got.Topic != want.Topic || !bytes.Equal(got.Payload, want.Payload) || got.QoS != want.QoS || got.Retain != want.Retain ||
		got.ContentType != want.ContentType || got.ResponseTopic != want.ResponseTopic ||
		!bytes.Equal(got.CorrelationData, want.CorrelationData) || !got.Expiry.Equal(want.Expiry) ||
		!slices.Equal(got.Properties, want.Properties) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestPacketFromEnvelopeDropsWhatMQTTCannotCarry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		e       broker.Envelope
		dropped int
		ok      bool
	}{
		{"expired", broker.Envelope{Topic: "a", Expiry: now0.Add(-time.Second)}, 0, false},
		{"expires now", broker.Envelope{Topic: "a", Expiry: now0}, 0, false},
		{"content type not utf-8", broker.Envelope{Topic: "a", ContentType: "\xff"}, 1, true},
		{"property with NUL", broker.Envelope{Topic: "a", Properties: []broker.Property{{Key: "a\x00", Value: "b"}, {Key: "ok", Value: "ok"}}}, 1, true},
		{"wildcard response topic", broker.Envelope{Topic: "a", ResponseTopic: "r/#"}, 1, true},
		{"huge correlation data", broker.Envelope{Topic: "a", CorrelationData: make([]byte, 70000)}, 1, true},
		{"qos out of range", broker.Envelope{Topic: "a", QoS: 7}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk, dropped, ok := packetFromEnvelope(&tc.e, now0)
			if ok != tc.ok || dropped != tc.dropped {
				t.Fatalf("ok %v dropped %d, want %v %d", ok, dropped, tc.ok, tc.dropped)
			}
			if ok {
				if pk.FixedHeader.Qos > 2 {
					t.Fatalf("qos %d", pk.FixedHeader.Qos)
				}
				wire(t, pk)
			}
		})
	}
}

// FuzzEnvelopeToPacket checks that any envelope becomes a PUBLISH that
// encodes, decodes, and comes back as the same envelope (minus what MQTT
// cannot carry).
func FuzzEnvelopeToPacket(f *testing.F) {
	f.Add("a/b", []byte("x"), "text/plain", byte(1), true, "r", []byte("c"), "k", "v", uint32(10))
	f.Add("t", []byte{}, "", byte(0), false, "", []byte(nil), "", "", uint32(0))
	f.Add("\xff", []byte{0}, "\x00", byte(9), false, "#", []byte{1}, "\xfe", "\x00", uint32(1<<31))
	f.Fuzz(func(t *testing.T, topic string, payload []byte, ct string, qos byte, retain bool, rt string, corr []byte, k, v string, exp uint32) {
		if broker.ValidateTopic(topic) != nil {
			return // the bus never carries such an envelope
		}
		e := &broker.Envelope{Topic: topic, Payload: payload, ContentType: ct, QoS: qos % 3, Retain: retain,
			ResponseTopic: rt, CorrelationData: corr, Properties: []broker.Property{{Key: k, Value: v}}}
		if exp > 0 {
			e.Expiry = now0.Add(time.Duration(exp) * time.Second)
		}
		pk, _, ok := packetFromEnvelope(e, now0)
		if !ok {
			t.Fatal("not expired but refused")
		}
		got := envelopeFromPacket(new(wire(t, pk)), broker.Origin{}, now0)
		want := *e
		if !mqttString(ct) {
			want.ContentType = ""
		}
		if !mqttString(rt) || broker.ValidateTopic(rt) != nil {
			want.ResponseTopic = ""
		}
		if len(corr) == 0 {
			want.CorrelationData = nil
		}
		if !mqttString(k) || !mqttString(v) {
			want.Properties = nil
		}
		if want.Payload == nil {
			want.Payload = []byte{}
		}
		equalEnvelopes(t, got, &want)
	})
}

// FuzzPublishDecode feeds arbitrary PUBLISH bodies through mochi's decoder
// and the adapter's mapping: no panic, and what decodes maps back to an
// equivalent packet.
func FuzzPublishDecode(f *testing.F) {
	seed := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, TopicName: "a/b",
		PacketID: 3, Payload: []byte("p"), Properties: packets.Properties{ContentType: "x/y", User: []packets.UserProperty{{Key: "a", Val: "b"}}}}
	var buf bytes.Buffer
	_ = seed.PublishEncode(&buf)
	f.Add(byte(0x32), buf.Bytes()[2:])
	f.Add(byte(0x30), []byte{0, 1, 'a', 0})
	f.Fuzz(func(t *testing.T, first byte, body []byte) {
		var fh packets.FixedHeader
		if fh.Decode(first|0x30) != nil {
			return
		}
		fh.Type = packets.Publish
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
		if pk.PublishDecode(body) != nil {
			return
		}
		e := envelopeFromPacket(&pk, broker.Origin{}, now0)
		if broker.ValidateTopic(e.Topic) != nil {
			return // mochi refuses those before the hook
		}
		back, _, ok := packetFromEnvelope(e, now0)
		if !ok {
			t.Fatal("refused")
		}
		if back.TopicName != pk.TopicName || !bytes.Equal(back.Payload, pk.Payload) || back.FixedHeader.Qos != min(pk.FixedHeader.Qos, 2) {
			t.Fatalf("mapped back differently: %+v vs %+v", back, pk)
		}
		if strings.ContainsRune(back.Properties.ContentType, 0) {
			t.Fatal("NUL in content type")
		}
	})
}
