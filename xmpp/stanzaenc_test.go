package xmpp

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// builtStanza is what the element builder makes of a delivery: the
// reference appendEnvelopeMessage and appendEventMessage must equal.
func builtStanza(pubsub bool, from, to, node string, e *broker.Envelope, delayed bool) []byte {
	var m *element
	if pubsub {
		m = eventMessage(from, to, node, e)
	} else {
		m = envelopeMessage(from, to, e)
	}
	if delayed {
		m.Add(delayElement(m.AttrValue("from"), e.Time))
	}
	return m.Bytes(nsClient)
}

func appendedStanza(pubsub bool, from, to, node string, e *broker.Envelope, delayed bool) []byte {
	if pubsub {
		return appendEventMessage([]byte("garbage before"), from, to, node, e, delayed)[len("garbage before"):]
	}
	return appendEnvelopeMessage([]byte("garbage before"), from, to, e, delayed)[len("garbage before"):]
}

// TestStanzaEncoderMatchesBuilder: the direct encoders write the builder's
// bytes for payloads of every kind (JSON, text, XML, binary, invalid
// UTF-8, characters XML cannot carry), content types with parameters or
// none or unparsable, markup in ids and JIDs, with and without a delay.
func TestStanzaEncoderMatchesBuilder(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 17, 4, 5, 123456789, time.FixedZone("CET", 3600))
	payloads := []struct{ ctype, payload string }{
		{"application/json", `{"t":21.5,"unit":"C","room":"attic"}`},
		{"application/json; charset=utf-8", `[1, 2, "<&>'\""]`},
		{"application/senml+json", `[{"n":"t","v":1}]`},
		{"application/json", `{not json`},
		{"", `{"a":1}`},
		{"", `  [1]  `},
		{"", "21.5"},
		{"", ""},
		{"text/plain", "hi <&> 'q' \"d\"\ttab\nnl\rcr"},
		{"text/plain", "ctl \x01\x7f\x1f end"},
		{"text/plain; charset=utf-8", "ünïcødé ✓ 𝄞 \uFFFD \uFFFE"},
		{"text/plain", "bad utf8 \xff\xfe"},
		{"application/xml", "<a b='c'>d</a>"},
		{"application/atom+xml", "<feed/>"},
		{"TEXT/Plain", "upper"},
		{"image/png", "\x89PNG\r\n\x1a\n\x00\x00"},
		{"", "\x00\x01\x02"},
		{"", "\xff"},
		{"application/octet-stream", ""},
		{";;bad", "x"},
		{";;bad", "\x00"},
		{"a/b; q='<&>'", "\x00bin"},
		{"text/plain; x=\"\xff\"", "t"},
	}
	topics := []string{"house/attic/temp", "a", "$SYS/x y", "t/<&>'\"", "ü/\xff"}
	jids := [][2]string{
		{"house.attic.temp@topics.localhost", "alice@localhost/phone"},
		{"", "bob@localhost"},
		{"x'y\"<z>&@topics.localhost", "a\tb\nc\rd@localhost/r"},
		{"pubsub.localhost", ""},
	}
	ids := []string{broker.NewID(), "", "<id & 'x'>"}
	times := []time.Time{at, {}, time.Unix(0, 0)}
	n := 0
	for _, p := range payloads {
		for i, topic := range topics {
			for _, pubsub := range []bool{false, true} {
				for _, delayed := range []bool{false, true} {
					js := jids[(n+i)%len(jids)]
					e := &broker.Envelope{ID: ids[n%len(ids)], Topic: topic, Payload: []byte(p.payload),
						ContentType: p.ctype, Time: times[n%len(times)]}
					node := []string{topic, "a/+/#", "n<&>"}[n%3]
					n++
					want := builtStanza(pubsub, js[0], js[1], node, e, delayed)
					got := appendedStanza(pubsub, js[0], js[1], node, e, delayed)
					if !bytes.Equal(got, want) {
						t.Errorf("pubsub %v delayed %v %q %q on %q:\n got %s\nwant %s", pubsub, delayed, p.ctype, p.payload, topic, got, want)
					}
				}
			}
		}
	}
	if n < 400 {
		t.Fatalf("only %d cases", n)
	}
}

// FuzzStanzaEncoder: for any envelope the encoders write the builder's
// bytes; they parse as one stanza of a c2s stream, and the payload reads
// back: a chat body is the text (or the base64 <payload/> the bytes), a
// PubSub item's element what itemPayload publishes.
func FuzzStanzaEncoder(f *testing.F) {
	f.Add([]byte(`{"t":21.5}`), "application/json", "house/attic/temp", "id1", "a@topics.localhost", "alice@localhost/r", false, false)
	f.Add([]byte("hi <&>"), "text/plain", "a/b", "", "", "bob@localhost", true, false)
	f.Add([]byte{0, 1, 2, 0xff}, "", "x", "i'd", "p.localhost", "c@localhost", true, true)
	f.Add([]byte("ctl\x01"), "text/plain", "t", "id", "f", "t", false, true)
	f.Fuzz(func(t *testing.T, payload []byte, ctype, topic, id, from, to string, pubsub, delayed bool) {
		e := &broker.Envelope{ID: id, Topic: topic, Payload: payload, ContentType: ctype,
			Time: time.Unix(1764608645, 123456789)}
		got := appendedStanza(pubsub, from, to, topic, e, delayed)
		if want := builtStanza(pubsub, from, to, topic, e, delayed); !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
		if !xmlClean(from) || !xmlClean(to) || !xmlClean(id) || !xmlClean(topic) || !xmlClean(ctype) {
			return // attribute values are not cleaned: the hub's own ids, JIDs and types are valid
		}
		r := newStanzaReader(strings.NewReader(testHeader+string(got)), int64(len(testHeader)+len(got))+1<<20, DefaultMaxDepth, nil)
		if _, err := r.header(); err != nil {
			t.Fatal(err)
		}
		el, err := r.next()
		if err != nil {
			t.Fatalf("%s does not parse: %v", got, err)
		}
		if el.Name.Space != nsClient || el.Name.Local != "message" {
			t.Fatalf("parsed as %v", el.Name)
		}
		for _, a := range [][2]string{{"from", from}, {"to", to}, {"id", id}} {
			if el.AttrValue(a[0]) != a[1] {
				t.Fatalf("%s=%q read back as %q", a[0], a[1], el.AttrValue(a[0]))
			}
		}
		if delayed != (el.Child(nsDelay, "delay") != nil) {
			t.Fatalf("delay %v in %s", delayed, got)
		}
		if _, ok := adapters.MediaType(ctype); pubsub && (ok || ctype == "") {
			// (An unparsable type is written as it is, and publishing such
			// an item is refused: nothing to round-trip.)
			item := el.Child(nsPubSubEvt, "event").Child(nsPubSubEvt, "items").Child(nsPubSubEvt, "item")
			b, _, err := itemPayload(item)
			if err != nil {
				t.Fatalf("%s: %v", got, err)
			}
			if want := payload; item.Child(nsJSON, "json") != nil {
				want = bytes.TrimSpace(want)
				if !bytes.Equal(b, want) {
					t.Fatalf("JSON %q read back as %q", want, b)
				}
			} else if xmlClean(string(payload)) && !bytes.Equal(b, payload) {
				t.Fatalf("%q read back as %q", payload, b)
			}
			return
		}
		if pubsub {
			return
		}
		if pl := el.Child(nsPayload, "payload"); pl != nil {
			b, err := base64.StdEncoding.DecodeString(pl.Text())
			if err != nil || !bytes.Equal(b, payload) {
				t.Fatalf("payload %q read back as %q (%v)", payload, b, err)
			}
			return
		}
		if body := el.Child(nsClient, "body"); body == nil || xmlClean(string(payload)) && body.Text() != string(payload) {
			t.Fatalf("%q: body %v", payload, body)
		}
	})
}

// xmlClean reports whether s is valid UTF-8 made only of characters XML
// carries (the others are written as U+FFFD).
func xmlClean(s string) bool {
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && w == 1 || r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		i += w
	}
	return true
}
