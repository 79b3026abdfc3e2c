package coap

import (
	"testing"
)

func TestContentFormat(t *testing.T) {
	t.Parallel()
	cases := []struct {
		mime string
		cf   uint16
		ok   bool
	}{
		{"text/plain", 0, true},
		{"text/plain;charset=utf-8", 0, true},
		{"Text/Plain; charset=UTF-8", 0, true},
		{"text/plain; charset=latin1", 0, false},
		{"application/link-format", 40, true},
		{"application/xml", 41, true},
		{"application/octet-stream", 42, true},
		{"application/exi", 47, true},
		{"application/json", 50, true},
		{"application/json; charset=utf-8", 50, true},
		{"application/cbor", 60, true},
		{"application/senml+json", 110, true},
		{"application/sensml+json", 111, true},
		{"application/senml+cbor", 112, true},
		{"application/sensml+cbor", 113, true},
		{"application/vnd.oma.lwm2m+tlv", 11542, true},
		{"application/vnd.oma.lwm2m+json", 11543, true},
		{"application/json; foo=bar", 0, false},
		{"image/png", 0, false},
		{"", 0, false},
		{"not a type", 0, false},
	}
	for _, c := range cases {
		cf, ok := ContentFormat(c.mime)
		if ok != c.ok || (ok && cf != c.cf) {
			t.Errorf("ContentFormat(%q) = %d, %v; want %d, %v", c.mime, cf, ok, c.cf, c.ok)
		}
	}
	if _, ok := MIMEType(9999); ok {
		t.Error("MIMEType(9999) known")
	}
	for cf, mt := range contentFormats {
		if got, ok := ContentFormat(mt); !ok || got != cf {
			t.Errorf("round trip of %d %q gave %d %v", cf, mt, got, ok)
		}
	}
}

func FuzzContentFormat(f *testing.F) {
	f.Add(uint16(0), "text/plain")
	f.Add(uint16(50), "application/json; charset=utf-8")
	f.Add(uint16(11542), "APPLICATION/CBOR")
	f.Fuzz(func(t *testing.T, cf uint16, mt string) {
		if m, ok := MIMEType(cf); ok {
			back, ok := ContentFormat(m)
			if !ok || back != cf {
				t.Fatalf("%d -> %q -> %d %v", cf, m, back, ok)
			}
		}
		if n, ok := ContentFormat(mt); ok {
			m, ok := MIMEType(n)
			if !ok {
				t.Fatalf("%q -> %d has no MIME type", mt, n)
			}
			if again, _ := ContentFormat(m); again != n {
				t.Fatalf("%q -> %d -> %q -> %d", mt, n, m, again)
			}
		}
	})
}
