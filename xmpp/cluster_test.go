package xmpp

import (
	"strings"
	"testing"
)

// TestDecodeFrame: frames of other hubs are taken or refused with a reason.
func TestDecodeFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"deliver", `{"kind":"deliver","node":"a","stanza":"<message xmlns='jabber:client' to='bob@localhost'><body>x</body></message>"}`, ""},
		{"probe", `{"kind":"probe","node":"a","from":"alice@localhost/r"}`, ""},
		{"push", `{"kind":"push","node":"a","item":{"jid":"bob@localhost","subscription":"both"}}`, ""},
		{"command", `{"kind":"command","node":"a","command":{"id":"1","device":"d","name":"n","params":null}}`, ""},
		{"ping", `{"kind":"ping","node":"a"}`, ""},
		{"topic", `{"kind":"topic","node":"a","stanza":"<message xmlns='jabber:client'><body>x</body></message>"}`, ""},
		{"carbon", `{"kind":"carbon","node":"a","from":"bob@localhost/r1","stanza":"<message xmlns='jabber:client'/>"}`, ""},
		{"not JSON", `<x/>`, "cluster frame"},
		{"unknown kind", `{"kind":"gossip"}`, "unknown kind"},
		{"push without item", `{"kind":"push"}`, "missing payload"},
		{"command without command", `{"kind":"command"}`, "missing payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeFrame([]byte(tc.in))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("decodeFrame(%s) = %v, want %q", tc.in, err, tc.err)
			}
		})
	}
	for _, tc := range []struct{ stanza, err string }{
		{"<message xmlns='jabber:client'/>", ""},
		{"", "no stanza"},
		{"<message xmlns='jabber:server'/>", "namespace"},
		{"<message", "stanza"},
	} {
		_, err := frame{Kind: frameDeliver, Stanza: tc.stanza}.stanza()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("stanza %q: %v, want %q", tc.stanza, err, tc.err)
		}
	}
}

// FuzzClusterFrame: any bytes from NATS are a frame or an error, never a
// panic, and a frame's stanza parses or fails cleanly.
func FuzzClusterFrame(f *testing.F) {
	f.Add([]byte(`{"kind":"deliver","stanza":"<message xmlns='jabber:client'/>"}`))
	f.Add([]byte(`{"kind":"push","item":{"jid":"x"}}`))
	f.Add([]byte(`{"kind":"command","command":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		_, _ = fr.stanza()
	})
}

// TestDecodeResume: a resume request and a handover of another hub are
// taken or refused with a reason.
func TestDecodeResume(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"request", `{"kind":"resume","node":"b","reply":{"id":"x","bare":"bob@localhost","h":3}}`, ""},
		{"request, not JSON", `<resume/>`, "resume request"},
		{"request of another kind", `{"kind":"deliver","reply":{"id":"x","bare":"b"}}`, `a "deliver" frame`},
		{"request without payload", `{"kind":"resume"}`, `a "resume" frame`},
		{"request without id", `{"kind":"resume","reply":{"bare":"bob@localhost"}}`, "no session id"},
		{"request, h not a number", `{"kind":"resume","reply":{"id":"x","bare":"b","h":"3"}}`, "resume request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeResumeRequest([]byte(tc.in))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("decodeResumeRequest(%s) = %v, want %q", tc.in, err, tc.err)
			}
		})
	}
	for _, tc := range []struct {
		name, in, err string
	}{
		{"handover", `{"kind":"resume","node":"a","reply":{"resource":"r","in":2,"unacked":["<message/>"]}}`, ""},
		{"refused", `{"kind":"resume","node":"a","error":"xmpp: no such session"}`, "hub a: xmpp: no such session"},
		{"no resource", `{"kind":"resume","reply":{"in":2}}`, "no resource"},
		{"no payload", `{"kind":"resume"}`, "handover"},
		{"another kind", `{"kind":"probe"}`, `a "probe" frame`},
		{"not JSON", `nope`, "handover"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeHandover([]byte(tc.in))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("decodeHandover(%s) = %v, want %q", tc.in, err, tc.err)
			}
		})
	}
}

// FuzzClusterResume: any bytes from NATS are a resume request, a handover
// or an error, never a panic.
func FuzzClusterResume(f *testing.F) {
	f.Add([]byte(`{"kind":"resume","reply":{"id":"x","bare":"bob@localhost","h":3}}`))
	f.Add([]byte(`{"kind":"resume","reply":{"resource":"r","in":2,"unacked":["<message/>"],"presence":"<presence/>"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeResumeRequest(b)
		if hv, err := decodeHandover(b); err == nil && hv.Presence != "" {
			_, _ = parseElement([]byte(hv.Presence))
		}
	})
}
