package rest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkEnvelopeJSON: a bus envelope as the JSON of an SSE event or a
// WebSocket message (text payload as is, binary payload base64), written
// into a reused buffer as the streams do (appendEnvelopeJSON); "marshal"
// is json.Marshal of the EnvelopeJSON struct, which it replaced there.
func BenchmarkEnvelopeJSON(b *testing.B) {
	for _, tc := range []struct {
		name    string
		payload []byte
		ctype   string
	}{
		{"text", []byte(`{"t":21.5,"unit":"C"}`), "application/json"},
		{"binary", make([]byte, 64), "application/octet-stream"},
	} {
		e := &broker.Envelope{ID: broker.NewID(), Topic: "house/attic/temp", Payload: tc.payload, ContentType: tc.ctype,
			QoS: 1, Origin: broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "sensor-17"}, Time: time.Now()}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				var err error
				if buf, err = appendEnvelopeJSON(buf[:0], e, 1, false); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("marshal/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(envelopeJSON(e, 1, false)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
