package xmpp

import (
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkEnvelopeMessage: a bus envelope becoming the chat message from
// its topic JID, serialised for the stream: text payload (the body) and
// binary payload (base64 in a <payload/> element). The delivery path
// writes it straight into a reused buffer (appendEnvelopeMessage; "event"
// is the PubSub notification, appendEventMessage); "builder" is the
// element tree and its Bytes, which the direct encoders replaced there.
func BenchmarkEnvelopeMessage(b *testing.B) {
	for _, tc := range []struct {
		name    string
		payload []byte
		ctype   string
	}{
		{"text", []byte(`{"t":21.5,"unit":"C","battery":87,"seq":123456,"room":"attic"}`), "application/json"},
		{"binary", make([]byte, 64), "application/octet-stream"},
	} {
		e := &broker.Envelope{ID: broker.NewID(), Topic: "house/attic/temp", Payload: tc.payload, ContentType: tc.ctype, Time: time.Now()}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = appendEnvelopeMessage(buf[:0], "house.attic.temp@topics.localhost", "alice@localhost/phone", e, false)
			}
		})
		b.Run("event/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = appendEventMessage(buf[:0], "pubsub.localhost", "alice@localhost/phone", "house/+/temp", e, false)
			}
		})
		b.Run("builder/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(envelopeMessage("house.attic.temp@topics.localhost", "alice@localhost/phone", e).Bytes(nsClient)) == 0 {
					b.Fatal("empty")
				}
			}
		})
	}
}

// BenchmarkMessagePayload: what a chat message to a topic JID publishes.
func BenchmarkMessagePayload(b *testing.B) {
	m := newElement(nsClient, "message", "type", "chat", "to", "house.attic.temp@topics.localhost")
	m.Add(newElement(nsClient, "body").AddText("21.5"))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok, err := messagePayload(m); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
