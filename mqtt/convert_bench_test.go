package mqtt

import (
	"bytes"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkEnvelopeFromPacket: an incoming PUBLISH becoming a bus
// envelope (the payload is shared, not copied).
func BenchmarkEnvelopeFromPacket(b *testing.B) {
	pk := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "house/attic/temp", Payload: make([]byte, 64), PacketID: 7,
	}
	origin := broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "sensor-17"}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if e := envelopeFromPacket(pk, origin, now); e.Topic == "" {
			b.Fatal("no topic")
		}
	}
}

// BenchmarkPacketFromEnvelope: a bus envelope becoming an outgoing PUBLISH,
// then encoded as mochi writes it to the socket.
func BenchmarkPacketFromEnvelope(b *testing.B) {
	e := &broker.Envelope{ID: broker.NewID(), Topic: "house/attic/temp", Payload: make([]byte, 64), QoS: 1, Time: time.Now()}
	now := time.Now()
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		pk, _, ok := packetFromEnvelope(e, now)
		if !ok {
			b.Fatal("not converted")
		}
		pk.PacketID = 7
		pk.ProtocolVersion = 4
		buf.Reset()
		if err := pk.PublishEncode(&buf); err != nil {
			b.Fatal(err)
		}
	}
}
