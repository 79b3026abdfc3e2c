package xmpp

import (
	"bytes"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// TestPayloadRoundTrip: what payloadElement writes, itemPayload reads back
// with the same bytes, for JSON, text and binary payloads.
func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ctype, payload, elem, readType string
	}{
		{"application/json", `{"a":[1,2]}`, "json", "application/json"},
		{"", `[1, 2]`, "json", "application/json"},
		{"application/senml+json", `[{"n":"t","v":1}]`, "json", "application/json"},
		{"text/plain", "hi <&>", "text", "text/plain"},
		{"", "21.5", "text", "text/plain; charset=utf-8"},
		{"application/xml", "<a/>", "text", "application/xml"},
		{"application/json", `{not json`, "text", "application/json"}, // JSON by type, not by bytes: text
		{"image/png", "\x89PNG\x00", "payload", "image/png"},
		{"", "\x00\x01", "payload", "application/octet-stream"},
	} {
		e := &broker.Envelope{Topic: "a/b", Payload: []byte(tt.payload), ContentType: tt.ctype}
		el := payloadElement(e)
		if el.Name.Local != tt.elem || el.AttrValue("topic") != "a/b" {
			t.Errorf("%q %q: <%s topic=%q>", tt.ctype, tt.payload, el.Name.Local, el.AttrValue("topic"))
			continue
		}
		item, err := parseElement([]byte(`<item xmlns='http://jabber.org/protocol/pubsub'>` + el.String() + `</item>`))
		if err != nil {
			t.Fatalf("%s: %v", el, err)
		}
		got, ct, err := itemPayload(item)
		if err != nil || !bytes.Equal(got, e.Payload) || ct != tt.readType {
			t.Errorf("%s read back as %q %q %v", el, got, ct, err)
		}
	}
}

// An item never panics itemPayload, and what it reads as JSON is JSON.
func FuzzItemPayload(f *testing.F) {
	for _, s := range []string{
		`<item><json xmlns='urn:xmpp:json:0'>{"a":1}</json></item>`,
		`<item><text xmlns='urn:hub:payload:0' type='text/plain'>x</text></item>`,
		`<item><payload xmlns='urn:hub:payload:0' type='a/b'>AAE=</payload></item>`,
		`<item><text xmlns='urn:hub:payload:0' type=';;'>x</text></item>`,
		`<item><foo xmlns='x'/></item>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		item, err := parseElement([]byte(s))
		if err != nil {
			return
		}
		b, ct, err := itemPayload(item)
		if err == nil && ct == "application/json" && !isJSON(&broker.Envelope{Payload: b, ContentType: ct}) {
			t.Fatalf("%s: not JSON %q", s, b)
		}
	})
}
