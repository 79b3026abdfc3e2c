package main

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// xmppAddr returns host:port of an xmpp://host[:port] URL (port 5222 by
// default).
func xmppAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "xmpp" || u.Host == "" {
		return "", fmt.Errorf("url %q: want xmpp://host:port", raw)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5222"), nil
	}
	return u.Host, nil
}

// xmppUser returns the user name of XMPP client k: the first "%d" of
// pattern becomes k (publishers are 0..P-1, subscribers P..P+S-1).
func xmppUser(pattern string, k int) string {
	return strings.Replace(pattern, "%d", strconv.Itoa(k), 1)
}

// xmppMechanisms are tried in this order among those the server offers:
// the hub offers SCRAM-SHA-256, Prosody's and ejabberd's default stores
// SCRAM-SHA-1.
var xmppMechanisms = []sasl.Mechanism{sasl.ScramSha256, sasl.ScramSha1, sasl.Plain}

// xmppSession is a logged-in c2s session: STARTTLS (certificate not
// checked: loopback test servers have self-signed ones), SASL, resource
// binding.
type xmppSession struct {
	s    *mxmpp.Session
	done chan struct{} // closed when Serve has returned
	mu   sync.Mutex    // serialises Send, as mellium wants one writer at a time
}

// loginXMPP logs user in at addr under domain. It does not send presence.
func loginXMPP(ctx context.Context, addr, domain, user, password string) (*mxmpp.Session, error) {
	origin, err := jid.New(user, domain, "")
	if err != nil {
		return nil, fmt.Errorf("xmpp: user %q at %q: %w", user, domain, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("xmpp: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	s, err := mxmpp.NewClientSession(ctx, origin, conn,
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: domain}), // #nosec G402 -- loopback test servers
		mxmpp.SASL("", password, xmppMechanisms...),
		mxmpp.BindResource())
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("xmpp: login %s: %w", origin, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return s, nil
}

// xmppStanza is the part of an incoming stanza the load clients look at.
type xmppStanza struct {
	XMLName xml.Name
	From    string `xml:"from,attr"`
	Type    string `xml:"type,attr"`
	Body    string `xml:"body"`
}

// serveXMPP logs in and serves the session, handing every stanza to
// handle; onError hears about a stream that ends with an error.
func serveXMPP(ctx context.Context, c *config, addr, user string, handle func(xmppStanza), onError func(error)) (*xmppSession, error) {
	s, err := loginXMPP(ctx, addr, c.domain, user, c.xmppPassword)
	if err != nil {
		return nil, err
	}
	x := &xmppSession{s: s, done: make(chan struct{})}
	go func() {
		defer close(x.done)
		err := s.Serve(mxmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local != "message" && start.Name.Local != "presence" {
				return nil
			}
			var v xmppStanza
			d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), xmlstream.Inner(r), xmlstream.Token(start.End())))
			if err := d.Decode(&v); err != nil {
				return fmt.Errorf("xmpp: decode %s: %w", start.Name.Local, err)
			}
			handle(v)
			return nil
		}))
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			onError(fmt.Errorf("xmpp stream: %w", err))
		}
	}()
	return x, nil
}

// send writes one stanza given as XML text.
func (x *xmppSession) send(ctx context.Context, raw string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.s.Send(ctx, xml.NewDecoder(strings.NewReader(raw))); err != nil {
		return fmt.Errorf("xmpp send: %w", err)
	}
	return nil
}

// sendChat writes <message type='chat' to=to><body>body</body></message>.
func (x *xmppSession) sendChat(ctx context.Context, to string, body []byte) error {
	msg := xmlstream.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData(body)), xml.StartElement{Name: xml.Name{Local: "body"}}),
		xml.StartElement{Name: xml.Name{Local: "message"}, Attr: []xml.Attr{
			{Name: xml.Name{Local: "to"}, Value: to},
			{Name: xml.Name{Local: "type"}, Value: "chat"},
		}})
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.s.Send(ctx, msg); err != nil {
		return fmt.Errorf("xmpp send chat: %w", err)
	}
	return nil
}

// close ends the stream and waits for the reader.
func (x *xmppSession) close() {
	_ = x.s.Close()
	_ = x.s.Conn().Close()
	<-x.done
}

// topicJID returns the hub's JID of topic: levels joined by '.', a '.'
// inside a level written \2e and the other characters XEP-0106 escapes
// escaped as it says.
func topicJID(topic, domain string) string {
	var b strings.Builder
	for i, level := range strings.Split(topic, "/") {
		if i > 0 {
			b.WriteByte('.')
		}
		for _, r := range level {
			switch r {
			case '.':
				b.WriteString(`\2e`)
			case ' ':
				b.WriteString(`\20`)
			case '"':
				b.WriteString(`\22`)
			case '&':
				b.WriteString(`\26`)
			case '\'':
				b.WriteString(`\27`)
			case ':':
				b.WriteString(`\3a`)
			case '<':
				b.WriteString(`\3c`)
			case '>':
				b.WriteString(`\3e`)
			case '@':
				b.WriteString(`\40`)
			case '\\':
				b.WriteString(`\5c`)
			default:
				b.WriteRune(r)
			}
		}
	}
	return b.String() + "@topics." + domain
}

// xmppChatTransport: publishers and subscribers are XMPP users of one
// server; publisher i sends chat messages to the subscriber that has its
// topic (the plan gives each subscriber a topic of its own: pairs or
// fan-in).
func xmppChatTransport(c *config) (transport, error) {
	addr, err := xmppAddr(c.url)
	if err != nil {
		return transport{}, err
	}
	var mu sync.Mutex
	recipient := map[string]string{} // topic -> bare JID of its subscriber
	return transport{
		newSubscriber: func(ctx context.Context, idx int, topic string, deliver func([]byte), onError func(error)) (subscriber, error) {
			user := xmppUser(c.xmppUser, c.publishers+idx)
			x, err := serveXMPP(ctx, c, addr, user, func(v xmppStanza) {
				if v.XMLName.Local == "message" && v.Body != "" {
					deliver([]byte(v.Body))
				}
			}, onError)
			if err != nil {
				return nil, err
			}
			// Presence makes the session available: servers deliver chat
			// to a resource that has sent it (and offline otherwise).
			if err := x.send(ctx, `<presence/>`); err != nil {
				x.close()
				return nil, err
			}
			mu.Lock()
			recipient[topic] = user + "@" + c.domain
			mu.Unlock()
			return x, nil
		},
		newPublisher: func(ctx context.Context, idx int, onError func(error)) (publisher, error) {
			x, err := serveXMPP(ctx, c, addr, xmppUser(c.xmppUser, idx), func(xmppStanza) {}, onError)
			if err != nil {
				return nil, err
			}
			return &xmppChatPublisher{x: x, to: func(topic string) string {
				mu.Lock()
				defer mu.Unlock()
				return recipient[topic]
			}}, nil
		},
	}, nil
}

// xmppChatPublisher sends each payload as a chat body.
type xmppChatPublisher struct {
	x  *xmppSession
	to func(topic string) string
}

func (p *xmppChatPublisher) publish(ctx context.Context, topic string, payload []byte) (func(context.Context) error, error) {
	to := p.to(topic)
	if to == "" {
		return nil, fmt.Errorf("xmpp: no subscriber for topic %q", topic)
	}
	return nil, p.x.sendChat(ctx, to, payload)
}

func (p *xmppChatPublisher) close() { p.x.close() }

// xmppTopicTransport: MQTT publishers on c.mqttURL, XMPP subscribers on
// c.url that subscribe to the topic's JID (a presence subscription).
func xmppTopicTransport(c *config) (transport, error) {
	addr, err := xmppAddr(c.url)
	if err != nil {
		return transport{}, err
	}
	mq := mqttTransport(&config{
		url: c.mqttURL, connectTimeout: c.connectTimeout, qos: c.qos,
		username: c.username, password: c.password, clientPrefix: c.clientPrefix,
		mqttClient: c.mqttClient, inflight: c.inflight, size: c.size, textPayload: c.textPayload,
	})
	return transport{
		newPublisher: mq.newPublisher,
		newSubscriber: func(ctx context.Context, idx int, topic string, deliver func([]byte), onError func(error)) (subscriber, error) {
			tj := topicJID(topic, c.domain)
			approved := make(chan struct{})
			var once sync.Once
			x, err := serveXMPP(ctx, c, addr, xmppUser(c.xmppUser, c.publishers+idx), func(v xmppStanza) {
				if bare, _, _ := strings.Cut(v.From, "/"); bare != tj {
					return
				}
				switch {
				case v.XMLName.Local == "presence" && v.Type == "subscribed":
					once.Do(func() { close(approved) })
				case v.XMLName.Local == "message" && v.Body != "":
					deliver([]byte(v.Body))
				}
			}, onError)
			if err != nil {
				return nil, err
			}
			sub := &xmppTopicSub{x: x, jid: tj}
			if err := x.send(ctx, `<presence/>`); err != nil {
				x.close()
				return nil, err
			}
			if err := x.send(ctx, `<presence type='subscribe' to='`+tj+`'/>`); err != nil {
				x.close()
				return nil, err
			}
			select {
			case <-approved:
				return sub, nil
			case <-x.done:
				return nil, fmt.Errorf("xmpp: stream ended before %s approved the subscription", tj)
			case <-ctx.Done():
				x.close()
				return nil, fmt.Errorf("xmpp: waiting for %s to approve the subscription: %w", tj, ctx.Err())
			}
		},
	}, nil
}

// xmppTopicSub is an XMPP user subscribed to a topic JID; close
// unsubscribes, so that runs leave no subscriptions behind.
type xmppTopicSub struct {
	x   *xmppSession
	jid string
}

func (s *xmppTopicSub) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.x.send(ctx, `<presence type='unsubscribe' to='`+s.jid+`'/>`)
	s.x.close()
}
