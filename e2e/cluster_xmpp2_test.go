package e2e

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"mellium.im/sasl"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/hubsmith/hub/broker/natsbus"
)

// fullJID is the JID the client was bound to.
func (c *xmppClient) fullJID() string { return c.s.LocalAddr().String() }

// seeEachOther waits until each of two resources of one user, on two
// hubs, saw the other's available presence.
func seeEachOther(t *testing.T, x, y *xmppClient) {
	t.Helper()
	x.expect(t, "the other resource's presence", func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "" && v.From == y.fullJID()
	})
	y.expect(t, "the other resource's presence", func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "" && v.From == x.fullJID()
	})
}

// TestXMPPTopicDeliveriesReachEveryHub: bob online on A and on B gets
// every topic delivery, QoS 0 and QoS 1, on both resources, once each,
// from one durable subscription; with one resource left he gets them
// there; with none they are kept and come at his next login.
func TestXMPPTopicDeliveriesReachEveryHub(t *testing.T) {
	a, b := twoHubs(t)
	const topicJID = "garden.soil@topics.localhost"
	onA := dialXMPP(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	onA.subscribeTopic(t, topicJID)
	onB := dialXMPP(t, b.Addr(t, "xmpp"), "bob", "bobpw")
	seeEachOther(t, onA, onB)
	eventually(t, "the subscription attached on both hubs", func() bool {
		return a.Bus.(*natsbus.Bus).Attached("xmpp:bob:garden/soil") && b.Bus.(*natsbus.Bus).Attached("xmpp:bob:garden/soil")
	})
	publish := func(on string, qos int, body string) {
		t.Helper()
		url := fmt.Sprintf("http://%s/api/v1/topics/garden/soil?qos=%d", on, qos)
		if code, resp, _ := httpDo(t, http.MethodPost, url, "text/plain", body); code/100 != 2 {
			t.Fatalf("publish %q: %d %s", body, code, resp)
		}
	}
	fromTopic := messageFrom(topicJID)
	var sent []string
	for i := range 10 {
		on := a.Addr(t, "rest")
		if i%2 == 1 {
			on = b.Addr(t, "rest")
		}
		body := fmt.Sprintf("q%d-%d", i%2, i)
		publish(on, i%2, body) // QoS 0 and 1, published on A and on B
		sent = append(sent, body)
	}
	for name, c := range map[string]*xmppClient{"on A": onA, "on B": onB} {
		got := map[string]int{}
		for range sent {
			got[c.expect(t, "a reading "+name, fromTopic).Body]++
		}
		for _, body := range sent {
			if got[body] != 1 {
				t.Errorf("bob %s: %q arrived %d times (all: %v)", name, body, got[body], got)
			}
		}
		c.noMore(t, 300*time.Millisecond, fromTopic)
	}

	// Subscriptions made and ended on A while bob is on B too attach and
	// detach on B.
	onBAttached := b.Bus.(*natsbus.Bus).Attached
	onA.subscribeTopic(t, "garden.rain@topics.localhost")
	onA.subscribeTopic(t, "garden.wind@topics.localhost")
	eventually(t, "the subscriptions made on A attached on B", func() bool {
		return onBAttached("xmpp:bob:garden/rain") && onBAttached("xmpp:bob:garden/wind")
	})
	onA.send(t, `<presence type='unsubscribe' to='garden.wind@topics.localhost'/>`)
	onA.expect(t, "unsubscribed", presenceOf("garden.wind@topics.localhost", "unsubscribed"))
	eventually(t, "the subscription ended on A detached on B", func() bool { return !onBAttached("xmpp:bob:garden/wind") })
	for _, qos := range []int{0, 1} {
		url := fmt.Sprintf("http://%s/api/v1/topics/garden/wind?qos=%d", b.Addr(t, "rest"), qos)
		if code, resp, _ := httpDo(t, http.MethodPost, url, "text/plain", "gust"); code/100 != 2 {
			t.Fatalf("publish: %d %s", code, resp)
		}
	}

	// PubSub (XEP-0060) events alike, for a node subscribed on A.
	onA.send(t, `<iq type='set' id='ps1' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='garden/leaf' jid='bob@localhost'/></pubsub></iq>`)
	if r := onA.expect(t, "the pubsub subscription", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "ps1" }); r.Type != "result" {
		t.Fatalf("pubsub subscribe: %+v", r)
	}
	eventually(t, "the pubsub subscription attached on B", func() bool { return onBAttached("xmpp-ps:bob:garden/leaf") })
	for _, qos := range []int{0, 1} {
		url := fmt.Sprintf("http://%s/api/v1/topics/garden/leaf?qos=%d", b.Addr(t, "rest"), qos)
		if code, resp, _ := httpDo(t, http.MethodPost, url, "text/plain", fmt.Sprint("leaf", qos)); code/100 != 2 {
			t.Fatalf("publish: %d %s", code, resp)
		}
	}
	event := func(v stanza) bool { return v.XMLName.Local == "message" && v.From == "pubsub.localhost" }
	for name, c := range map[string]*xmppClient{"on A": onA, "on B": onB} {
		c.expect(t, "a pubsub event "+name, event)
		c.expect(t, "a second pubsub event "+name, event)
		c.noMore(t, 300*time.Millisecond, event)
	}

	// One resource left (on B): the deliveries go there.
	_ = onA.s.Close()
	<-onA.done
	eventually(t, "the subscription detached on A", func() bool { return !a.Bus.(*natsbus.Bus).Attached("xmpp:bob:garden/soil") })
	publish(a.Addr(t, "rest"), 1, "left on B")
	onB.expect(t, "a reading with bob on B alone", chatBody("left on B"))
	url := "http://" + a.Addr(t, "rest") + "/api/v1/topics/garden/rain?qos=1"
	if code, resp, _ := httpDo(t, http.MethodPost, url, "text/plain", "drizzle"); code/100 != 2 {
		t.Fatalf("publish: %d %s", code, resp)
	}
	onB.expect(t, "a reading of the subscription made on A, with bob on B alone", chatBody("drizzle"))
	onB.noMore(t, 200*time.Millisecond, chatBody("gust"))

	// None: kept, and delivered at the next login (on A).
	_ = onB.s.Close()
	<-onB.done
	eventually(t, "the subscription detached on B", func() bool { return !b.Bus.(*natsbus.Bus).Attached("xmpp:bob:garden/soil") })
	publish(b.Addr(t, "rest"), 1, "while away")
	back := dialXMPP(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	back.expect(t, "the reading kept while bob was away", chatBody("while away"))
	back.noMore(t, 300*time.Millisecond, fromTopic)
}

// carbonOf matches an XEP-0280 carbon of kind ("sent", "received")
// wrapping a message with body.
func carbonOf(kind, body string) func(stanza) bool {
	return func(v stanza) bool {
		if v.XMLName.Local != "message" || len(v.Children) != 1 {
			return false
		}
		c := v.Children[0]
		if c.XMLName.Space != "urn:xmpp:carbons:2" || c.XMLName.Local != kind || len(c.Children) != 1 {
			return false
		}
		fw := c.Children[0]
		for _, m := range fw.Children {
			if m.XMLName.Local == "message" {
				for _, n := range m.Children {
					if n.XMLName.Local == "body" && n.Text == body {
						return true
					}
				}
			}
		}
		return false
	}
}

// enableCarbons enables XEP-0280 carbons for the client's resource.
func enableCarbons(t *testing.T, c *xmppClient) {
	t.Helper()
	c.send(t, `<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>`)
	if r := c.expect(t, "carbons enabled", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "carbons" }); r.Type != "result" {
		t.Fatalf("enable carbons: %+v", r)
	}
}

// TestXMPPCarbonsAcrossHubs: bob's resources on A and on B enabled
// carbons; what one of them sends or gets at its full JID is copied to
// the other, once, whichever hub alice is on.
func TestXMPPCarbonsAcrossHubs(t *testing.T) {
	a, b := twoHubs(t)
	onA := dialXMPP(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	onB := dialXMPP(t, b.Addr(t, "xmpp"), "bob", "bobpw")
	seeEachOther(t, onA, onB)
	enableCarbons(t, onA)
	enableCarbons(t, onB)
	aliceB := dialXMPP(t, b.Addr(t, "xmpp"), "alice", "alicepw")
	aliceA := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	for _, tc := range []struct {
		name        string
		from        *xmppClient
		to          string // "" : alice's bare JID
		gets, other *xmppClient
		kind        string
	}{
		{"alice on B to bob on A", aliceB, onA.fullJID(), onA, onB, "received"},
		{"alice on A to bob on A", aliceA, onA.fullJID(), onA, onB, "received"},
		{"alice on A to bob on B", aliceA, onB.fullJID(), onB, onA, "received"},
		{"bob on A to alice", onA, "", nil, onB, "sent"},
		{"bob on B to alice", onB, "", nil, onA, "sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			to := tc.to
			if to == "" {
				to = "alice@localhost"
			}
			body := "hi: " + tc.name
			start := time.Now()
			tc.from.send(t, `<message type='chat' to='`+to+`'><body>`+body+`</body></message>`)
			if tc.gets != nil {
				tc.gets.expect(t, "the message", chatBody(body))
			} else {
				aliceA.expect(t, "bob's message on A", chatBody(body))
				aliceB.expect(t, "bob's message on B", chatBody(body))
			}
			tc.other.expect(t, "the "+tc.kind+" carbon on the other hub", carbonOf(tc.kind, body))
			t.Logf("%s carbon on the other hub after %v", tc.kind, time.Since(start))
			for _, c := range []*xmppClient{onA, onB} {
				c.noMore(t, 200*time.Millisecond, func(v stanza) bool { return chatBody(body)(v) || carbonOf(tc.kind, body)(v) })
			}
		})
	}
	// A message to bob's bare JID reaches both resources and is not copied.
	aliceB.send(t, `<message type='chat' to='bob@localhost'><body>to both</body></message>`)
	for _, c := range []*xmppClient{onA, onB} {
		c.expect(t, "the message to the bare JID", chatBody("to both"))
		c.noMore(t, 200*time.Millisecond, func(v stanza) bool { return chatBody("to both")(v) || carbonOf("received", "to both")(v) })
	}
}

// smConn speaks XEP-0198 by hand over a stream mellium negotiated (TLS,
// SASL and, for a new session, binding).
type smConn struct {
	conn net.Conn
	d    *xml.Decoder
	jid  string
	h    int // stanzas received
}

// smResume ends mellium's negotiation at the <sm/> feature after SASL,
// so that the client sends <resume/> instead of binding.
var smResume = mxmpp.StreamFeature{
	Name:       xml.Name{Space: "urn:xmpp:sm:3", Local: "sm"},
	Necessary:  mxmpp.Authn,
	Prohibited: mxmpp.Ready,
	Parse: func(_ context.Context, d *xml.Decoder, _ *xml.StartElement) (bool, interface{}, error) {
		return true, nil, d.Skip()
	},
	Negotiate: func(context.Context, *mxmpp.Session, interface{}) (mxmpp.SessionState, io.ReadWriter, error) {
		return mxmpp.Ready, nil, nil
	},
}

func dialSM(t *testing.T, addr, user, pass string, bind bool) *smConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	feats := []mxmpp.StreamFeature{
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}),
		mxmpp.SASL("", pass, sasl.ScramSha256),
		smResume,
	}
	if bind {
		feats[2] = mxmpp.BindResource()
	}
	s, err := mxmpp.NewClientSession(ctx(t), jid.MustParse(user+"@localhost"), conn, feats...)
	if err != nil {
		_ = conn.Close()
		t.Fatalf("xmpp login %s: %v", user, err)
	}
	c := &smConn{conn: s.Conn(), jid: s.LocalAddr().String()}
	c.d = xml.NewDecoder(c.conn)
	t.Cleanup(func() { _ = c.conn.Close() })
	return c
}

func (c *smConn) write(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(c.conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// until reads elements until match accepts one, counting stanzas.
func (c *smConn) until(t *testing.T, what string, match func(xmlNode) bool) xmlNode {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		tok, err := c.d.Token()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		var n xmlNode
		if err := c.d.DecodeElement(&n, &start); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n.XMLName.Space != "urn:xmpp:sm:3" {
			c.h++
		}
		if match(n) {
			return n
		}
	}
}

func smElement(local string) func(xmlNode) bool {
	return func(n xmlNode) bool { return n.XMLName.Space == "urn:xmpp:sm:3" && n.XMLName.Local == local }
}

func messageBody(body string) func(xmlNode) bool {
	return func(n xmlNode) bool {
		if n.XMLName.Local != "message" {
			return false
		}
		for _, c := range n.Children {
			if c.XMLName.Local == "body" && c.Text == body {
				return true
			}
		}
		return false
	}
}

// TestXMPPResumeOnAnotherHub: bob's XEP-0198 stream on A breaks and he
// resumes it on B: B takes the session from A with what bob had not
// acknowledged, and messages to his full JID follow him. When the hub
// holding the session is gone, resuming fails with item-not-found and
// bob binds anew, finding what was sent meanwhile.
func TestXMPPResumeOnAnotherHub(t *testing.T) {
	a, b := twoHubs(t)
	alice := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	// routed waits until A routed what alice sent before.
	routed := func(id string) {
		t.Helper()
		alice.send(t, `<iq type='get' id='`+id+`'><ping xmlns='urn:xmpp:ping'/></iq>`)
		alice.expect(t, "ping answer", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == id })
	}
	chat := func(to, body string) {
		t.Helper()
		alice.send(t, `<message type='chat' to='`+to+`'><body>`+body+`</body></message>`)
	}

	bob := dialSM(t, a.Addr(t, "xmpp"), "bob", "bobpw", true)
	bob.write(t, `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	id := attr(bob.until(t, "enabled", smElement("enabled")), "id")
	bob.write(t, `<presence/><presence type='subscribe' to='garden.soil@topics.localhost'/>`)
	bob.until(t, "the topic subscription", func(n xmlNode) bool { return n.XMLName.Local == "presence" && attr(n, "type") == "subscribed" })
	// bob's other resource, on A, sees the first one come and, when the
	// session moves to B, not go.
	other := dialXMPP(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	other.expect(t, "the presence of the resource that moves", func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "" && v.From == bob.jid
	})
	chat(bob.jid, "m1")
	bob.until(t, "m1", messageBody("m1"))
	acked := bob.h
	chat(bob.jid, "m2")
	bob.until(t, "m2", messageBody("m2"))
	_ = bob.conn.Close() // m2 not acknowledged
	chat(bob.jid, "m3")  // kept by the session on A, for resending
	routed("p1")

	onB := dialSM(t, b.Addr(t, "xmpp"), "bob", "bobpw", false)
	start := time.Now()
	onB.write(t, fmt.Sprintf(`<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>`, id, acked))
	resumed := onB.until(t, "the answer to resume on B", func(n xmlNode) bool { return n.XMLName.Space == "urn:xmpp:sm:3" })
	t.Logf("resumed on B from A in %v", time.Since(start))
	if resumed.XMLName.Local != "resumed" || attr(resumed, "h") != "2" || attr(resumed, "previd") != id {
		t.Fatalf("resume on B: %+v", resumed)
	}
	onB.h = acked
	onB.until(t, "m2 resent on B", messageBody("m2"))
	onB.until(t, "m3 resent on B", messageBody("m3"))
	onB.write(t, fmt.Sprintf(`<a xmlns='urn:xmpp:sm:3' h='%d'/>`, onB.h))
	chat(bob.jid, "m4")
	onB.until(t, "m4 to bob's full JID, now on B", messageBody("m4"))
	onB.write(t, `<r xmlns='urn:xmpp:sm:3'/>`)
	if got := attr(onB.until(t, "ack", smElement("a")), "h"); got != "2" {
		t.Errorf("B counts %s stanzas from bob, want 2 (A's count carried over)", got)
	}
	// Topic deliveries reach both of bob's resources, whichever hub takes
	// them from the queue.
	for i := range 4 {
		body := fmt.Sprint("reading ", i)
		url := "http://" + a.Addr(t, "rest") + "/api/v1/topics/garden/soil?qos=1"
		if code, resp, _ := httpDo(t, http.MethodPost, url, "text/plain", body); code/100 != 2 {
			t.Fatalf("publish: %d %s", code, resp)
		}
		onB.until(t, body+" on B", messageBody(body))
		onB.write(t, fmt.Sprintf(`<a xmlns='urn:xmpp:sm:3' h='%d'/>`, onB.h)) // as a client answers the hub's <r/>
		other.expect(t, body+" on A", chatBody(body))
	}
	other.noMore(t, 200*time.Millisecond, func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "unavailable" || chatBody("reading")(v)
	})
	_ = other.s.Close()
	<-other.done

	// B dies with the session: resuming on A fails, bob binds anew.
	b.Close(t)
	again := dialSM(t, a.Addr(t, "xmpp"), "bob", "bobpw", false)
	again.write(t, fmt.Sprintf(`<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>`, id, onB.h))
	failed := again.until(t, "the answer to resume on A", func(n xmlNode) bool { return n.XMLName.Space == "urn:xmpp:sm:3" })
	if failed.XMLName.Local != "failed" || len(failed.Children) != 1 || failed.Children[0].XMLName.Local != "item-not-found" {
		t.Fatalf("resume of a session of a dead hub: %+v", failed)
	}
	chat("bob@localhost", "m5") // bob is nowhere: kept offline
	routed("p2")
	fresh := dialXMPP(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	fresh.expect(t, "the message kept while bob was nowhere", chatBody("m5"))
}
