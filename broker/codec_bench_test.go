package broker

import (
	"fmt"
	"testing"
	"time"
)

// benchEnvelope is a typical sensor reading: 64-byte payload, QoS 1.
func benchEnvelope() *Envelope {
	return &Envelope{
		ID: NewID(), Topic: "house/attic/temp", Payload: make([]byte, 64), ContentType: "application/json",
		QoS: 1, Origin: Origin{Protocol: ProtoMQTT, ClientID: "sensor-17", Principal: "sensor17"},
		Time: time.Unix(1_700_000_000, 0),
	}
}

// BenchmarkEnvelopeMarshal: the store and cluster encoding of one envelope.
func BenchmarkEnvelopeMarshal(b *testing.B) {
	e := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnvelopeUnmarshal: decoding it again (durable queue reads).
func BenchmarkEnvelopeUnmarshal(b *testing.B) {
	raw, err := benchEnvelope().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnmarshalEnvelope(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatch: one filter against one topic.
func BenchmarkMatch(b *testing.B) {
	for _, tc := range []struct{ filter, topic string }{
		{"house/attic/temp", "house/attic/temp"},
		{"house/+/temp", "house/attic/temp"},
		{"house/#", "house/attic/temp/raw"},
		{"garden/+/hum", "house/attic/temp"},
	} {
		b.Run(tc.filter, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Match(tc.filter, tc.topic)
			}
		})
	}
}

// BenchmarkIndexMatch: the subscription index finding the one subscriber
// of a topic among n filters (exact names, one-level and multi-level
// wildcards; 100 sites share the first levels).
func BenchmarkIndexMatch(b *testing.B) {
	for _, n := range []int{10, 1000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ix := newIndex()
			for i := range n {
				var f string
				switch i % 4 {
				case 0, 1:
					f = fmt.Sprintf("site/%d/dev%d/temp", i%100, i)
				case 2:
					f = fmt.Sprintf("site/%d/+/temp", i)
				default:
					f = fmt.Sprintf("site/%d/#", i)
				}
				ix.add(&fentry{f: Filter{Topic: f}})
			}
			topic := "site/2/dev2/temp" // matches "site/2/+/temp" only
			b.ReportAllocs()
			matched := 0
			for b.Loop() {
				ix.match(topic, func(*fentry) { matched++ })
			}
			if matched == 0 {
				b.Fatal("nothing matched")
			}
			b.ReportMetric(float64(matched)/float64(b.N), "matches/op")
		})
	}
}
