package rest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hubsmith/hub/broker"
)

// TestEnvelopeJSONMatchesMarshal: appendEnvelopeJSON writes what
// json.Marshal(envelopeJSON(...)) wrote, byte for byte, for text and
// binary payloads, characters JSON and HTML escape, invalid UTF-8, every
// optional field present or not, admin or not, every QoS pair; and an
// SSE event is what the Fprintf of serveSSE wrote.
func TestEnvelopeJSONMatchesMarshal(t *testing.T) {
	t.Parallel()
	times := []time.Time{
		time.Date(2026, 12, 1, 17, 4, 5, 123456789, time.FixedZone("CET", 3600)),
		{}, time.Unix(1764608645, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
	payloads := []struct{ ctype, payload string }{
		{"application/json", `{"t":21.5,"unit":"C"}`},
		{"", "21.5"},
		{"", ""},
		{"text/plain", "<script>&amp;</script> \"q\" \\ \b\f\n\r\t \x00\x1f\x7f"},
		{"text/plain; charset=utf-8", "ünï ✓ 𝄞 \u2028 \u2029 \uFFFD"},
		{"text/plain", "bad \xff\xfe utf8"},
		{"application/x-www-form-urlencoded", "a=1&b=2"},
		{"application/octet-stream", "\x00\x01\x02"},
		{"", "\xff"},
		{";;bad", "x"},
		{"image/png", ""},
	}
	origins := []broker.Origin{
		{Protocol: broker.ProtoMQTT, ClientID: "sensor-17", Principal: "dev1"},
		{Protocol: broker.ProtoREST},
		{Protocol: "", ClientID: "<c&>", Principal: "\u2028"},
	}
	n := 0
	for _, p := range payloads {
		for _, tm := range times {
			for _, o := range origins {
				for _, admin := range []bool{false, true} {
					e := &broker.Envelope{ID: broker.NewID(), Topic: []string{"house/attic/temp", "a/<b>/&", "ü/\xff"}[n%3],
						Payload: []byte(p.payload), ContentType: p.ctype, QoS: byte(n % 3), Retain: n%2 == 0, Origin: o, Time: tm}
					if n%4 == 1 {
						e.ResponseTopic, e.CorrelationData = "resp/<x>", []byte{0, 1, 0xff}
					}
					if n%5 == 2 {
						e.Properties = []broker.Property{{Key: "k", Value: "v"}, {Key: "<&>", Value: "\n"}}
					}
					subQoS := byte(n / 3 % 3)
					n++
					want, err := json.Marshal(envelopeJSON(e, subQoS, admin))
					if err != nil {
						t.Fatal(err)
					}
					got, err := appendEnvelopeJSON([]byte("before"), e, subQoS, admin)
					if err != nil || !bytes.Equal(got[len("before"):], want) {
						t.Errorf("%v:\n got %s\nwant %s", err, got, want)
					}
					if ev, old := appendSSEEvent(nil, e.ID, want), fmt.Sprintf("event: message\nid: %s\ndata: %s\n\n", e.ID, want); string(ev) != old {
						t.Errorf("SSE event %q, was %q", ev, old)
					}
				}
			}
		}
	}
	if n < 200 {
		t.Fatalf("only %d cases", n)
	}
	// A year json.Marshal refuses is refused too.
	e := &broker.Envelope{ID: "x", Topic: "a", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := json.Marshal(envelopeJSON(e, 1, false)); err == nil {
		t.Fatal("json.Marshal took year 10000")
	}
	if _, err := appendEnvelopeJSON(nil, e, 1, false); err == nil {
		t.Error("year 10000 encoded")
	}
}

// FuzzEnvelopeJSON: for any envelope appendEnvelopeJSON writes what
// json.Marshal wrote; it parses as JSON, and the payload reads back
// (as text, or base64 with payload_encoding).
func FuzzEnvelopeJSON(f *testing.F) {
	f.Add([]byte(`{"t":1}`), "application/json", "a/b", "id", "mqtt", "c", "p", "r", []byte{1}, "k", "v", int64(1764608645123456789), byte(1), byte(1), true, true)
	f.Add([]byte{0, 0xff}, "", "<&>", "", "", "", "", "", []byte(nil), "", "", int64(0), byte(0), byte(2), false, false)
	f.Fuzz(func(t *testing.T, payload []byte, ctype, topic, id, proto, client, princ, resp string, corr []byte,
		key, value string, ns int64, qos, subQoS byte, retain, admin bool) {
		e := &broker.Envelope{ID: id, Topic: topic, Payload: payload, ContentType: ctype, QoS: qos, Retain: retain,
			Origin: broker.Origin{Protocol: proto, ClientID: client, Principal: princ}, Time: time.Unix(0, ns),
			ResponseTopic: resp, CorrelationData: corr}
		if key != "" || value != "" {
			e.Properties = []broker.Property{{Key: key, Value: value}}
		}
		want, werr := json.Marshal(envelopeJSON(e, subQoS, admin))
		got, err := appendEnvelopeJSON(nil, e, subQoS, admin)
		if (err != nil) != (werr != nil) {
			t.Fatalf("error %v, json.Marshal's %v", err, werr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
		var j EnvelopeJSON
		if err := json.Unmarshal(got, &j); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		back := []byte(j.Payload)
		if j.PayloadEncoding == "base64" {
			if back, err = base64.StdEncoding.DecodeString(j.Payload); err != nil {
				t.Fatal(err)
			}
		}
		if utf8.Valid(payload) && !bytes.Equal(back, payload) {
			t.Fatalf("payload %q read back as %q", payload, back)
		}
		if j.QoS != min(qos, subQoS) || j.Retain != retain || !j.Time.Equal(e.Time) {
			t.Fatalf("read back %+v", j)
		}
	})
}
