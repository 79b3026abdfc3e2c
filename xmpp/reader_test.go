package xmpp

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

const testHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`

func TestStreamLimits(t *testing.T) {
	h := startHub(t, func(c *Config) { c.MaxStanza = 8192 })
	tests := []struct {
		name, send, want string
	}{
		{"huge stanza", `<message to='bob@localhost'><body>` + strings.Repeat("x", 10000) + `</body></message>`, "policy-violation"},
		{"endless text", `<message>` + strings.Repeat("y", 9000), "policy-violation"},
		{"doctype", `<!DOCTYPE foo [<!ENTITY a "aaaaaaaaaa">]><message>&a;</message>`, "restricted-xml"},
		{"entity bomb in a stanza", `<message><!ENTITY lol "lol"></message>`, "restricted-xml"},
		{"undefined entity", `<message><body>&lol;</body></message>`, "not-well-formed"},
		{"deep nesting", strings.Repeat("<a>", 40), "policy-violation"},
		{"comment", `<!-- hi --><message/>`, "restricted-xml"},
		{"processing instruction", `<?evil stuff?>`, "restricted-xml"},
		{"mismatched tags", `<message></presence>`, "not-well-formed"},
		{"unknown stanza before auth", `<foo xmlns='bar'/>`, "not-authorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := rawStream(t, h.addr)
			go func() {
				_, _ = c.Write([]byte(testHeader))
				_, _ = c.Write([]byte(tt.send))
			}()
			out := readAll(t, c)
			if !strings.Contains(out, "<"+tt.want+" xmlns='urn:ietf:params:xml:ns:xmpp-streams'") || !strings.HasSuffix(out, "</stream:stream>") {
				t.Errorf("got %q, want a %s stream error", out, tt.want)
			}
		})
	}
}

func TestStreamHeaderErrors(t *testing.T) {
	h := startHub(t, nil)
	tests := []struct {
		name, header, want string
	}{
		{"wrong host", strings.Replace(testHeader, "to='localhost'", "to='example.org'", 1), "host-unknown"},
		{"wrong namespace", strings.Replace(testHeader, "jabber:client", "jabber:server", 1), "invalid-namespace"},
		{"not a stream", `<hello/>`, "invalid-namespace"},
		{"garbage", `<<<`, "not-well-formed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := rawStream(t, h.addr)
			_, _ = c.Write([]byte(tt.header))
			out := readAll(t, c)
			if !strings.Contains(out, "<"+tt.want+" ") {
				t.Errorf("got %q, want %s", out, tt.want)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	h := startHub(t, func(c *Config) { c.RateStanzas = 5 })
	c := rawStream(t, h.addr)
	go func() {
		_, _ = c.Write([]byte(testHeader + `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>`))
		time.Sleep(100 * time.Millisecond)
		_, _ = c.Write([]byte(testHeader + `<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>`))
		for range 50 {
			if _, err := c.Write([]byte(`<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>`)); err != nil {
				return
			}
		}
	}()
	out := readAll(t, c)
	if !strings.Contains(out, "policy-violation") || !strings.Contains(out, "rate limit") {
		t.Errorf("got %q, want a rate-limit policy-violation", out)
	}
}

// FuzzStanzaReader feeds arbitrary bytes after a stream header: the reader
// must never panic, and what it returns must respect the limits.
func FuzzStanzaReader(f *testing.F) {
	for _, s := range []string{
		`<message to='a@b'><body>hi</body></message>`,
		`<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>`,
		strings.Repeat("<a>", 50),
		`<iq type='get'><query xmlns='jabber:iq:roster'/></iq></stream:stream>`,
		`<a xml:lang='en' xmlns:p='urn:x' p:q='1'>t&amp;x</a>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		const maxStanza, maxDepth = 1024, 8
		r := newStanzaReader(strings.NewReader(testHeader+s), maxStanza, maxDepth, nil)
		if _, err := r.header(); err != nil {
			t.Fatalf("header: %v", err)
		}
		for range 100 {
			el, err := r.next()
			if err != nil {
				var se *streamError
				if !errors.As(err, &se) && !errors.Is(err, io.EOF) && !errors.Is(err, errStreamEnd) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if r.lr.n > maxStanza {
				t.Fatalf("stanza of %d bytes accepted", r.lr.n)
			}
			if d := depth(el); d > maxDepth {
				t.Fatalf("depth %d accepted", d)
			}
			// What the reader returns serializes to something it reads back.
			back, err := parseElement([]byte(el.String()))
			if err != nil {
				t.Fatalf("re-parse %q: %v", el.String(), err)
			}
			if back.String() != el.String() {
				t.Fatalf("round trip %q != %q", back.String(), el.String())
			}
		}
	})
}

func depth(el *element) int {
	d := 0
	for _, c := range el.Elements() {
		d = max(d, depth(c))
	}
	return d + 1
}
