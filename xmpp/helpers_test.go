package xmpp

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// testHub is a store, an in-process bus and a started XMPP adapter.
type testHub struct {
	a    *Adapter
	bus  *broker.Memory
	st   *store.Store
	addr string
	dir  string
}

func startHub(t testing.TB, mod func(*Config)) *testHub {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, dir)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	for _, u := range [][3]string{{"alice", "alicepw", "user"}, {"bob", "bobpw", "user"}, {"sensor1", "sensor1pw", "device"}} {
		if err := st.AddUser(ctx, u[0], u[1], u[2]); err != nil {
			t.Fatalf("add user %s: %v", u[0], err)
		}
	}
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("bus: %v", err)
	}
	cfg := Config{
		Addr: "127.0.0.1:0", Bus: bus, Auth: adapters.NewAuth(st, nil), Store: st, DataDir: dir,
		Logger: testLogger(), ResumeTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	h := &testHub{a: a, bus: bus, st: st, addr: a.Addrs()["xmpp"], dir: dir}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		_ = bus.Close()
		_ = st.Close()
	})
	return h
}

// rx is a stanza a test client received.
type rx struct {
	XMLName xml.Name
	From    string `xml:"from,attr"`
	To      string `xml:"to,attr"`
	Type    string `xml:"type,attr"`
	ID      string `xml:"id,attr"`
	Body    string `xml:"body"`
	Payload struct {
		Type string `xml:"type,attr"`
		Data string `xml:",chardata"`
	} `xml:"urn:hub:payload:0 payload"`
	Inner string `xml:",innerxml"`
}

// client is a mellium client session with its received stanzas.
type client struct {
	s   *mxmpp.Session
	in  chan rx
	jid string
}

func dialSession(ctx context.Context, addr, user, pass string, mech sasl.Mechanism, bind bool) (*mxmpp.Session, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return loginOn(ctx, conn, user, pass, mech, bind)
}

// loginOn is dialSession on a connection already made.
func loginOn(ctx context.Context, conn net.Conn, user, pass string, mech sasl.Mechanism, bind bool) (*mxmpp.Session, error) {
	feats := []mxmpp.StreamFeature{
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}),
		mxmpp.SASL("", pass, mech),
	}
	if bind {
		feats = append(feats, mxmpp.BindResource())
	} else {
		feats = append(feats, smResumeFeature)
	}
	s, err := mxmpp.NewClientSession(ctx, jid.MustParse(user+"@localhost"), conn, feats...)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

// connect logs user in with SCRAM-SHA-256, starts serving and sends
// initial presence.
func connect(t testing.TB, h *testHub, user, pass string) *client {
	t.Helper()
	return connectWith(t, h, user, pass, nil)
}

// connectWith is connect with an answering function for the iqs the client
// receives: it returns the raw reply ("" for none).
func connectWith(t testing.TB, h *testHub, user, pass string, answer func(rx) string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := dialSession(ctx, h.addr, user, pass, sasl.ScramSha256, true)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	c := &client{s: s, in: make(chan rx, 100), jid: s.LocalAddr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := s.Serve(mxmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			var v rx
			var b strings.Builder
			enc := xml.NewEncoder(&b)
			if _, err := xmlstream.Copy(enc, xmlstream.MultiReader(xmlstream.Token(*start), xmlstream.Inner(r), xmlstream.Token(start.End()))); err != nil {
				return err
			}
			if err := enc.Flush(); err != nil {
				return err
			}
			if err := xml.Unmarshal([]byte(b.String()), &v); err != nil {
				return err
			}
			if answer != nil && v.XMLName.Local == "iq" {
				if reply := answer(v); reply != "" {
					_, err := xmlstream.Copy(r, xml.NewDecoder(strings.NewReader(reply)))
					return err
				}
			}
			c.in <- v
			return nil
		}))
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("client %s: %v", user, err)
		}
	}()
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("client %s did not stop", user)
		}
	})
	c.send(t, `<presence/>`)
	return c
}

// send sends a raw stanza.
func (c *client) send(t testing.TB, raw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.s.Send(ctx, xml.NewDecoder(strings.NewReader(raw))); err != nil {
		t.Fatalf("send %s: %v", raw, err)
	}
}

// iq sends an iq and returns the reply's inner XML and type.
func (c *client) iq(t testing.TB, raw string) (typ, inner string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.s.SendIQ(ctx, xml.NewDecoder(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("iq %s: %v", raw, err)
	}
	defer r.Close()
	var b strings.Builder
	enc := xml.NewEncoder(&b)
	typ = ""
	for {
		tok, err := r.Token()
		if err != nil {
			break
		}
		if st, ok := tok.(xml.StartElement); ok && typ == "" {
			for _, a := range st.Attr {
				if a.Name.Local == "type" {
					typ = a.Value
				}
			}
		}
		_ = enc.EncodeToken(xml.CopyToken(tok))
	}
	_ = enc.Flush()
	return typ, b.String()
}

// expect waits for a stanza accepted by match, skipping others.
func (c *client) expect(t testing.TB, what string, match func(rx) bool) rx {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case v := <-c.in:
			if match(v) {
				return v
			}
		case <-deadline:
			t.Fatalf("%s: nothing arrived", what)
			return rx{}
		}
	}
}

func isMessageFrom(from string) func(rx) bool {
	return func(v rx) bool { return v.XMLName.Local == "message" && v.From == from && v.Body != "" }
}

// rawConn is a plain TCP client for the limit tests.
func rawStream(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readAll reads until the server closes the connection.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// smResumeFeature ends mellium's negotiation at the <sm/> feature after
// SASL, so that a test can resume a XEP-0198 session by hand instead of
// binding a new one.
var smResumeFeature = mxmpp.StreamFeature{
	Name:       xml.Name{Space: nsSM, Local: "sm"},
	Necessary:  mxmpp.Authn,
	Prohibited: mxmpp.Ready,
	Parse: func(_ context.Context, d *xml.Decoder, _ *xml.StartElement) (bool, interface{}, error) {
		return true, nil, d.Skip()
	},
	Negotiate: func(context.Context, *mxmpp.Session, interface{}) (mxmpp.SessionState, io.ReadWriter, error) {
		return mxmpp.Ready, nil, nil
	},
}

func testLogger() *slog.Logger {
	if os.Getenv("XMPP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
