package xmpp

import (
	"encoding/base64"
	"strings"
	"testing"
)

// readStanza reads one stanza from s.
func readStanza(s string) (*element, error) {
	r := newStanzaReader(strings.NewReader(testHeader+s), DefaultMaxStanza, DefaultMaxDepth, nil)
	if _, err := r.header(); err != nil {
		return nil, err
	}
	return r.next()
}

func TestParseSIOffer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, si string
		want     string // file name, or part of the error
		size     int64
	}{
		{"ok", siOfferXML("i", "x@topics.localhost", "s1", "a.txt", 12, nsIBB), "a.txt", 12},
		{"path stripped", siOfferXML("i", "x", "s1", `C:\Users\me\b.txt`, 1, nsIBB), "b.txt", 1},
		{"dot dot", siOfferXML("i", "x", "s1", "..", 1, nsIBB), "not usable", 0},
		{"wildcard", siOfferXML("i", "x", "s1", "a#b", 1, nsIBB), "not usable", 0},
		{"negative size", siOfferXML("i", "x", "s1", "a", -1, nsIBB), "file size", 0},
		{"no methods", siOfferXML("i", "x", "s1", "a", 1), "without stream methods", 0},
		{"no sid", strings.Replace(siOfferXML("i", "x", "s1", "a", 1, nsIBB), "id='s1'", "", 1), "without id", 0},
		{"other profile", strings.Replace(siOfferXML("i", "x", "s1", "a", 1, nsIBB), "profile/file-transfer'", "profile/x'", 1), "profile", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			el, err := readStanza(tc.si)
			if err != nil {
				t.Fatal(err)
			}
			o, err := parseSIOffer(el.Child(nsSI, "si"))
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if o.name != tc.want || o.size != tc.size {
				t.Fatalf("offer %+v, want name %q size %d", o, tc.want, tc.size)
			}
		})
	}
}

func TestParseIBB(t *testing.T) {
	t.Parallel()
	data := base64.StdEncoding.EncodeToString([]byte("hello, world"))
	tests := []struct {
		name, el string
		max      int
		want     string // "" for success
	}{
		{"open", `<open xmlns='http://jabber.org/protocol/ibb' sid='s' block-size='4096'/>`, 0, ""},
		{"open message", `<open xmlns='http://jabber.org/protocol/ibb' sid='s' block-size='4096' stanza='message'/>`, 0, ""},
		{"open bad stanza", `<open xmlns='http://jabber.org/protocol/ibb' sid='s' block-size='4096' stanza='presence'/>`, 0, "stanza"},
		{"open no block size", `<open xmlns='http://jabber.org/protocol/ibb' sid='s'/>`, 0, "block-size"},
		{"data", `<data xmlns='http://jabber.org/protocol/ibb' sid='s' seq='65535'>` + data + `</data>`, 16, ""},
		{"data with newlines", `<data xmlns='http://jabber.org/protocol/ibb' sid='s' seq='1'>` + data[:8] + "\n" + data[8:] + `</data>`, 16, ""},
		{"data over block", `<data xmlns='http://jabber.org/protocol/ibb' sid='s' seq='1'>` + data + `</data>`, 4, "over the block size"},
		{"data bad seq", `<data xmlns='http://jabber.org/protocol/ibb' sid='s' seq='65536'>` + data + `</data>`, 0, "seq"},
		{"data not base64", `<data xmlns='http://jabber.org/protocol/ibb' sid='s' seq='1'>!!!!</data>`, 0, "base64"},
		{"no sid", `<close xmlns='http://jabber.org/protocol/ibb'/>`, 0, "without sid"},
		{"unknown", `<shut xmlns='http://jabber.org/protocol/ibb' sid='s'/>`, 0, "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			el, err := readStanza(`<iq type='set'>` + tc.el + `</iq>`)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parseIBB(ibbChild(el), tc.max)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			case tc.want == "" && f.op == "data" && string(f.data) != "hello, world":
				t.Fatalf("data %q", f.data)
			}
		})
	}
}

func FuzzParseIBB(f *testing.F) {
	f.Add(`<data xmlns='http://jabber.org/protocol/ibb' sid='s' seq='1'>aGVsbG8=</data>`, 16)
	f.Add(`<open xmlns='http://jabber.org/protocol/ibb' sid='s' block-size='4096'/>`, 0)
	f.Add(`<close xmlns='http://jabber.org/protocol/ibb' sid='s'/>`, 0)
	f.Fuzz(func(t *testing.T, s string, max int) {
		el, err := readStanza(`<iq>` + s + `</iq>`)
		if err != nil {
			return
		}
		c := ibbChild(el)
		if c == nil {
			return
		}
		fr, err := parseIBB(c, max)
		if err == nil && max > 0 && len(fr.data) > max {
			t.Fatalf("block of %d bytes over %d accepted", len(fr.data), max)
		}
	})
}

func FuzzParseSIOffer(f *testing.F) {
	f.Add(siOfferXML("i", "x", "s1", "a.txt", 12, nsIBB, nsBytestreams))
	f.Add(siOfferXML("i", "x", "s1", "../../etc/passwd", 1, nsIBB))
	f.Fuzz(func(t *testing.T, s string) {
		el, err := readStanza(s)
		if err != nil {
			return
		}
		si := el.Child(nsSI, "si")
		if si == nil {
			return
		}
		o, err := parseSIOffer(si)
		if err != nil {
			return
		}
		if o.name == "" || strings.ContainsAny(o.name, "/\\#+") || o.name == ".." || o.size < 0 || len(o.methods) == 0 {
			t.Fatalf("accepted offer %+v", o)
		}
	})
}
