package xmpp

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pipeRW is a reader of scripted client bytes and a writer collecting the
// server's answers.
type pipeRW struct {
	r io.Reader
	w bytes.Buffer
}

func (p *pipeRW) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeRW) Write(b []byte) (int, error) { return p.w.Write(b) }

func TestSOCKS5Handshake(t *testing.T) {
	t.Parallel()
	hash := socks5Addr("sid1", "alice@localhost/a", "bob@localhost/b")
	connect := func(atyp byte, addr string) []byte {
		return append(append([]byte{5, 1, 0, atyp, byte(len(addr))}, addr...), 0, 0)
	}
	tests := []struct {
		name  string
		in    []byte
		want  string // hash, or part of the error
		reply []byte // first bytes the server answers
	}{
		{"ok", append([]byte{5, 1, 0}, connect(3, hash)...), hash, []byte{5, 0, 5, 0, 0, 3, 40}},
		{"ok among methods", append([]byte{5, 3, 2, 1, 0}, connect(3, hash)...), hash, []byte{5, 0}},
		{"socks4", []byte{4, 1, 0}, "version 4", nil},
		{"no acceptable method", []byte{5, 1, 2}, "no 'no authentication'", []byte{5, 0xff}},
		{"bind command", append([]byte{5, 1, 0}, 5, 2, 0, 3, 40), "command 2", []byte{5, 0, 5, 7}},
		{"ipv4 address", append([]byte{5, 1, 0}, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0), "address type 1", []byte{5, 0, 5, 8}},
		{"short hash", append([]byte{5, 1, 0}, connect(3, "abc")...), "destination of 3 bytes", []byte{5, 0, 5, 4}},
		{"upper-case hash", append([]byte{5, 1, 0}, connect(3, strings.ToUpper(hash))...), "not a lower-case hex", []byte{5, 0, 5, 4}},
		{"truncated", []byte{5, 1, 0, 5, 1, 0, 3, 40, 'a'}, "request address", nil},
		{"empty", nil, "greeting", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rw := &pipeRW{r: bytes.NewReader(tc.in)}
			got, err := socks5Handshake(rw, func(string) error { return nil })
			if err != nil {
				if !errors.Is(err, errSOCKS5) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one with %q", err, tc.want)
				}
			} else if got != tc.want {
				t.Fatalf("dst = %q, want %q", got, tc.want)
			}
			if !bytes.HasPrefix(rw.w.Bytes(), tc.reply) {
				t.Errorf("answer % x, want it to begin with % x", rw.w.Bytes(), tc.reply)
			}
		})
	}
}

func FuzzSOCKS5Handshake(f *testing.F) {
	hash := socks5Addr("s", "a@h/r", "b@h/r")
	f.Add(append([]byte{5, 1, 0, 5, 1, 0, 3, 40}, append([]byte(hash), 0, 0)...))
	f.Add([]byte{5, 0})
	f.Add([]byte{5, 255, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		rw := &pipeRW{r: bytes.NewReader(in)}
		dst, err := socks5Handshake(rw, func(string) error { return nil })
		if err == nil && len(dst) != 40 {
			t.Fatalf("accepted destination %q", dst)
		}
	})
}

// dialProxy connects to the proxy and asks for dst.
func dialProxy(t testing.TB, addr, dst string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := socks5Connect(c, dst); err != nil {
		t.Fatalf("socks5 connect: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestProxyRelay: two chat users meet at proxy.localhost; the requester
// discovers the streamhost, both connect, the requester activates, and the
// bytes arrive; activating a pair that is not there is item-not-found.
func TestProxyRelay(t *testing.T) {
	t.Parallel()
	h := startHub(t, func(c *Config) { c.ProxyAddr = "127.0.0.1:0" })
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")

	typ, inner := alice.iq(t, `<iq type='get' to='localhost' id='i1'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if typ != "result" || !strings.Contains(inner, "proxy.localhost") {
		t.Fatalf("server items: %s %s", typ, inner)
	}
	typ, inner = alice.iq(t, `<iq type='get' to='proxy.localhost' id='i2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if typ != "result" || !strings.Contains(inner, nsBytestreams) || !strings.Contains(inner, `category="proxy"`) {
		t.Fatalf("proxy info: %s %s", typ, inner)
	}
	typ, inner = alice.iq(t, `<iq type='get' to='proxy.localhost' id='i3'><query xmlns='http://jabber.org/protocol/bytestreams'/></iq>`)
	_, port, _ := net.SplitHostPort(h.a.Addrs()["xmpp-proxy"])
	if typ != "result" || !strings.Contains(inner, `host="127.0.0.1"`) || !strings.Contains(inner, `port="`+port+`"`) || !strings.Contains(inner, `jid="proxy.localhost"`) {
		t.Fatalf("streamhost: %s %s", typ, inner)
	}

	names := map[string]bool{}
	for _, l := range h.a.Listeners() {
		names[l.Name] = true
	}
	if !names["xmpp"] || !names["xmpp-proxy"] || h.a.Healthy() != nil {
		t.Fatalf("listeners %v, healthy %v: want xmpp and xmpp-proxy", names, h.a.Healthy())
	}

	dst := socks5Addr("s1", alice.jid, bob.jid)
	target := dialProxy(t, h.a.Addrs()["xmpp-proxy"], dst)
	// Activation before the requester connected: no pair.
	typ, inner = alice.iq(t, `<iq type='set' to='proxy.localhost' id='i4'><query xmlns='http://jabber.org/protocol/bytestreams' sid='s1'><activate>`+bob.jid+`</activate></query></iq>`)
	if typ != "error" || !strings.Contains(inner, "item-not-found") {
		t.Fatalf("early activation: %s %s", typ, inner)
	}
	requester := dialProxy(t, h.a.Addrs()["xmpp-proxy"], dst)
	// Bob may not activate Alice's stream: the hash has his JID as requester.
	typ, _ = bob.iq(t, `<iq type='set' to='proxy.localhost' id='i5'><query xmlns='http://jabber.org/protocol/bytestreams' sid='s1'><activate>`+bob.jid+`</activate></query></iq>`)
	if typ != "error" {
		t.Fatalf("activation by the target: %s", typ)
	}
	typ, inner = alice.iq(t, `<iq type='set' to='proxy.localhost' id='i6'><query xmlns='http://jabber.org/protocol/bytestreams' sid='s1'><activate>`+bob.jid+`</activate></query></iq>`)
	if typ != "result" {
		t.Fatalf("activation: %s %s", typ, inner)
	}
	data := make([]byte, 300<<10)
	_, _ = rand.Read(data)
	go func() {
		_, _ = requester.Write(data)
		_ = requester.(*net.TCPConn).CloseWrite()
	}()
	_ = target.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(target)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("relayed %d bytes, want the %d sent", len(got), len(data))
	}
}

// TestProxyThirdParty: a third connection to a destination both parties
// already hold is closed by the proxy.
func TestProxyThirdParty(t *testing.T) {
	t.Parallel()
	h := startHub(t, func(c *Config) { c.ProxyAddr = "127.0.0.1:0" })
	addr := h.a.Addrs()["xmpp-proxy"]
	dst := socks5Addr("s", "a@localhost/x", "b@localhost/y")
	dialProxy(t, addr, dst)
	dialProxy(t, addr, dst)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := socks5Connect(c, dst); err == nil || !strings.Contains(err.Error(), "answered 2") {
		t.Fatalf("third connection: %v, want the streamhost's refusal 2", err)
	}
}
