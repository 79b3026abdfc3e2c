package xmpp

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"

	"github.com/hubsmith/hub/broker"
)

// smClient speaks XEP-0198 by hand over a connection that mellium
// negotiated (TLS, SASL and, for a new session, binding).
type smClient struct {
	conn net.Conn
	r    *stanzaReader
	h    int // stanzas received
}

func newSMClient(t *testing.T, h *testHub, bind bool) *smClient {
	t.Helper()
	return newRawClient(t, h, "alice", "alicepw", bind)
}

// newRawClient is newSMClient for another user.
func newRawClient(t *testing.T, h *testHub, user, pass string, bind bool) *smClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := dialSession(ctx, h.addr, user, pass, sasl.ScramSha256, bind)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	c := &smClient{conn: s.Conn()}
	c.r = newStanzaReader(c.conn, DefaultMaxStanza, DefaultMaxDepth, nil)
	c.r.started = true
	t.Cleanup(func() { _ = c.conn.Close() })
	return c
}

func (c *smClient) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// next returns the next element, counting stanzas.
func (c *smClient) next(t *testing.T) *element {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	el, err := c.r.next()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	// The stream header was read by mellium: stanzas come without a namespace.
	if el.Name.Space == "" || el.Name.Space == nsClient {
		c.h++
	}
	return el
}

// until reads until match.
func (c *smClient) until(t *testing.T, what string, match func(*element) bool) *element {
	t.Helper()
	for range 50 {
		if el := c.next(t); match(el) {
			return el
		}
	}
	t.Fatalf("%s: not received", what)
	return nil
}

func bodyIs(from, body string) func(*element) bool {
	return func(el *element) bool {
		return el.Name.Local == "message" && el.AttrValue("from") == from && el.childText("", "body") == body
	}
}

func TestStreamResumption(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	topicJID := "meter.power@topics.localhost"

	c := newSMClient(t, h, true)
	c.write(t, `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	enabled := c.until(t, "enabled", func(el *element) bool { return el.Name.Local == "enabled" })
	id := enabled.AttrValue("id")
	if id == "" || enabled.AttrValue("resume") != "true" {
		t.Fatalf("enabled: %s", enabled)
	}
	c.write(t, `<presence/><presence to='`+topicJID+`' type='subscribe'/>`)
	c.until(t, "subscribed", func(el *element) bool { return el.AttrValue("type") == "subscribed" })
	c.write(t, `<r xmlns='urn:xmpp:sm:3'/>`)
	a := c.until(t, "ack", func(el *element) bool { return el.Name.Local == "a" })
	if a.AttrValue("h") != "2" {
		t.Errorf("server handled %s stanzas, want 2", a.AttrValue("h"))
	}

	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "meter/power", Payload: []byte("100"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c.until(t, "first value", bodyIs(topicJID, "100"))
	before := c.h - 1 // acknowledge all but the value
	// The connection breaks before the client acknowledges.
	_ = c.conn.Close()
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "meter/power", Payload: []byte("200"), QoS: 1}); err != nil {
		t.Fatal(err)
	}

	c2 := newSMClient(t, h, false)
	c2.write(t, `<resume xmlns='urn:xmpp:sm:3' previd='`+id+`' h='`+strconv.Itoa(before)+`'/>`)
	resumed := c2.until(t, "resumed", func(el *element) bool { return el.Name.Space == nsSM && el.Name.Local != "r" })
	if resumed.Name.Local != "resumed" || resumed.AttrValue("h") != "2" {
		t.Fatalf("resume answer: %s", resumed)
	}
	c2.until(t, "resent value", bodyIs(topicJID, "100"))
	c2.write(t, `<a xmlns='urn:xmpp:sm:3' h='`+strconv.Itoa(before+1)+`'/>`)
	c2.until(t, "value published while away", bodyIs(topicJID, "200"))

	// A second resumption of a stale id fails cleanly.
	c3 := newSMClient(t, h, false)
	c3.write(t, `<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>`)
	failed := c3.until(t, "failed", func(el *element) bool { return el.Name.Space == nsSM })
	if failed.Name.Local != "failed" || !strings.Contains(failed.String(), "item-not-found") {
		t.Errorf("stale resume: %s", failed)
	}
}

// TestUnackedRequeued checks QoS 1 over XEP-0198 without resumption: a
// topic message the client never acknowledged is delivered again at the
// next login.
func TestUnackedRequeued(t *testing.T) {
	h := startHub(t, nil)
	topicJID := "pump.state@topics.localhost"
	c := newSMClient(t, h, true)
	c.write(t, `<enable xmlns='urn:xmpp:sm:3'/>`)
	c.until(t, "enabled", func(el *element) bool { return el.Name.Local == "enabled" })
	c.write(t, `<presence/><presence to='`+topicJID+`' type='subscribe'/>`)
	c.until(t, "subscribed", func(el *element) bool { return el.AttrValue("type") == "subscribed" })
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "pump/state", Payload: []byte("running"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c.until(t, "value", bodyIs(topicJID, "running"))
	_ = c.conn.Close() // never acknowledged

	alice := connect(t, h, "alice", "alicepw")
	if got := alice.expect(t, "unacknowledged value again", isMessageFrom(topicJID)); got.Body != "running" {
		t.Errorf("body %q", got.Body)
	}
}
