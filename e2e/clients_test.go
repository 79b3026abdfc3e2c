package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"mellium.im/sasl"
	"mellium.im/xmlstream"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// dialCoAP returns a go-coap UDP client closed when the test ends.
func dialCoAP(t *testing.T, addr string) *udpClient.Conn {
	t.Helper()
	cc, err := udp.Dial(addr, options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	return cc
}

// observeInto returns a go-coap observe callback sending payloads to a channel.
func observeInto(ch chan<- string) func(*pool.Message) {
	return func(m *pool.Message) {
		var buf bytes.Buffer
		if m.Body() != nil {
			_, _ = buf.ReadFrom(m.Body())
		}
		select {
		case ch <- buf.String():
		default:
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// stanza is the part of a received stanza the tests look at.
type stanza struct {
	XMLName xml.Name
	From    string `xml:"from,attr"`
	Type    string `xml:"type,attr"`
	ID      string `xml:"id,attr"`
	Body    string `xml:"body"`
	// Children are the other child elements (PubSub events, iq payloads).
	Children []xmlNode `xml:",any"`
}

// xmlNode is any element, kept whole.
type xmlNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []xmlNode  `xml:",any"`
}

// xmppClient is a mellium client session logged in with SCRAM-SHA-256
// over STARTTLS; received stanzas go to a channel.
type xmppClient struct {
	s  *mxmpp.Session
	in chan stanza
	// done is closed when the stream has ended.
	done chan struct{}
}

func dialXMPP(t *testing.T, addr, user, pass string) *xmppClient {
	t.Helper()
	c := dialXMPPSilent(t, addr, user, pass)
	c.send(t, `<presence/>`)
	return c
}

// dialXMPPSilent logs in without sending initial presence (a device's
// XMPP presence would make it an XMPP device).
func dialXMPPSilent(t *testing.T, addr, user, pass string) *xmppClient {
	t.Helper()
	return dialXMPPAnswering(t, addr, user, pass, nil)
}

// dialXMPPAnswering is dialXMPPSilent with answer writing the reply to
// each iq get or set it receives (raw XML; "" : the client library's
// service-unavailable), as a device answering ad-hoc commands does.
func dialXMPPAnswering(t *testing.T, addr, user, pass string, answer func(stanza) string) *xmppClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mxmpp.NewClientSession(ctx(t), jid.MustParse(user+"@localhost"), conn,
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}),
		mxmpp.SASL("", pass, sasl.ScramSha256),
		mxmpp.BindResource())
	if err != nil {
		_ = conn.Close()
		t.Fatalf("xmpp login %s: %v", user, err)
	}
	c := &xmppClient{s: s, in: make(chan stanza, 100), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.done)
		err := s.Serve(mxmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			var v stanza
			d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), xmlstream.Inner(r), xmlstream.Token(start.End())))
			if err := d.Decode(&v); err != nil {
				return err
			}
			if answer != nil && v.XMLName.Local == "iq" && (v.Type == "get" || v.Type == "set") {
				if raw := answer(v); raw != "" {
					if _, err := xmlstream.Copy(r, xml.NewDecoder(strings.NewReader(raw))); err != nil {
						return err
					}
				}
			}
			c.in <- v
			return nil
		}))
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("xmpp client %s: %v", user, err)
		}
	}()
	t.Cleanup(func() { _ = s.Close(); wg.Wait() })
	return c
}

func (c *xmppClient) send(t *testing.T, raw string) {
	t.Helper()
	if err := c.s.Send(ctx(t), xml.NewDecoder(strings.NewReader(raw))); err != nil {
		t.Fatalf("xmpp send %s: %v", raw, err)
	}
}

// expect waits for a stanza that match accepts, skipping others.
func (c *xmppClient) expect(t *testing.T, what string, match func(stanza) bool) stanza {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case v := <-c.in:
			if match(v) {
				return v
			}
		case <-deadline:
			t.Fatalf("xmpp: %s: nothing arrived", what)
		}
	}
}

func messageFrom(from string) func(stanza) bool {
	return func(v stanza) bool { return v.XMLName.Local == "message" && v.From == from && v.Body != "" }
}

// subscribeTopic subscribes to a topic JID's presence and waits for the approval.
func (c *xmppClient) subscribeTopic(t *testing.T, topicJID string) {
	t.Helper()
	c.send(t, `<presence type='subscribe' to='`+topicJID+`'/>`)
	c.expect(t, "subscription approval from "+topicJID, func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == topicJID
	})
}
