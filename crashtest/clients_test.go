package crashtest

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"mellium.im/sasl"
	"mellium.im/xmlstream"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// ackTimeout bounds one acknowledged publish.
const ackTimeout = 5 * time.Second

// publisher publishes at QoS 1 and returns nil only once the hub
// acknowledged the message the way its protocol does.
type publisher interface {
	send(ctx context.Context, payload string) error
	close()
}

// topicJID is the bare JID of a topic without dots inside its levels.
func topicJID(topic string) string {
	return strings.ReplaceAll(topic, "/", ".") + "@topics.localhost"
}

// --- MQTT ---

type mqttPub struct {
	c     paho.Client
	topic string
	qos   byte
}

func dialMQTTPub(h *hubProc, id, topic string, qos byte) (*mqttPub, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(ackTimeout).SetWriteTimeout(ackTimeout)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(ackTimeout) {
		return nil, errors.New("mqtt connect: timeout")
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect: %w", err)
	}
	return &mqttPub{c: c, topic: topic, qos: qos}, nil
}

func (p *mqttPub) send(ctx context.Context, payload string) error {
	tok := p.c.Publish(p.topic, p.qos, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *mqttPub) close() { p.c.Disconnect(50) }

// mqttSub is a paho 3.1.1 subscriber whose messages go to a channel.
type mqttSub struct {
	c    paho.Client
	msgs chan string
}

func dialMQTTSub(t testing.TB, h *hubProc, id string, clean bool) *mqttSub {
	t.Helper()
	s := &mqttSub{msgs: make(chan string, 20000)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectTimeout(ackTimeout).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			select {
			case s.msgs <- string(m.Payload()):
			default:
			}
		})
	s.c = paho.NewClient(opts)
	tok := s.c.Connect()
	if !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt subscriber %s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

func (s *mqttSub) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := s.c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe %s: %v", filter, tok.Error())
	}
}

// --- REST ---

type restPub struct {
	url    string
	client *http.Client
}

func newRESTPub(h *hubProc, topic string) *restPub {
	return &restPub{
		url:    "http://" + h.http + "/api/v1/topics/" + topic + "?qos=1",
		client: &http.Client{Timeout: ackTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
}

// restStatus is a non-2xx REST answer.
type restStatus struct {
	code int
	body string
}

func (e restStatus) Error() string { return fmt.Sprintf("http %d: %s", e.code, e.body) }

func (p *restPub) send(ctx context.Context, payload string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, strings.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return restStatus{resp.StatusCode, strings.TrimSpace(string(b))}
	}
	return nil
}

func (p *restPub) close() { p.client.CloseIdleConnections() }

// restPublish posts once at qos and returns the status code.
func restPublish(h *hubProc, topic string, qos int, payload string) (int, error) {
	c := &http.Client{Timeout: ackTimeout}
	resp, err := c.Post("http://"+h.http+"/api/v1/topics/"+topic+"?qos="+strconv.Itoa(qos), "text/plain", strings.NewReader(payload))
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// --- CoAP ---

type coapPub struct {
	cc   *udpClient.Conn
	path string
}

func dialCoAPPub(h *hubProc, topic string) (*coapPub, error) {
	cc, err := udp.Dial(h.coap, options.WithErrors(func(error) {}))
	if err != nil {
		return nil, fmt.Errorf("coap dial: %w", err)
	}
	return &coapPub{cc: cc, path: "/ps/" + topic}, nil
}

// coapCode is a CoAP answer other than 2.04.
type coapCode struct{ code codes.Code }

func (e coapCode) Error() string { return "coap " + e.code.String() }

func (p *coapPub) post(ctx context.Context, query, payload string) (codes.Code, error) {
	req, err := p.cc.NewPostRequest(ctx, p.path, message.TextPlain, strings.NewReader(payload))
	if err != nil {
		return 0, err
	}
	defer p.cc.ReleaseMessage(req)
	if query != "" {
		req.AddQuery(query)
	}
	if query == "qos=0" {
		req.SetType(message.NonConfirmable)
	}
	resp, err := p.cc.Do(req)
	if err != nil {
		return 0, err
	}
	defer p.cc.ReleaseMessage(resp)
	return resp.Code(), nil
}

func (p *coapPub) send(ctx context.Context, payload string) error {
	code, err := p.post(ctx, "", payload)
	if err != nil {
		return err
	}
	if code != codes.Changed {
		return coapCode{code}
	}
	return nil
}

func (p *coapPub) close() { _ = p.cc.Close() }

// --- XMPP ---

// xmppLogin logs user in with SCRAM-SHA-256 over STARTTLS and binds a
// resource.
func xmppLogin(ctx context.Context, h *hubProc, user, pass string) (*mxmpp.Session, error) {
	conn, err := net.DialTimeout("tcp", h.xmpp, ackTimeout)
	if err != nil {
		return nil, err
	}
	s, err := mxmpp.NewClientSession(ctx, jid.MustParse(user+"@localhost"), conn,
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}),
		mxmpp.SASL("", pass, sasl.ScramSha256),
		mxmpp.BindResource())
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("xmpp login %s: %w", user, err)
	}
	return s, nil
}

// xmppPub is a chat publisher with XEP-0198 acknowledgements: it enables
// stream management (the hub then publishes its messages at QoS 1) and
// counts a message acknowledged once an <a h='N'/> covers it.
type xmppPub struct {
	conn net.Conn
	to   string

	wmu  sync.Mutex // serialises writes and the stanza count
	sent uint64

	mu      sync.Mutex
	h       uint64
	changed chan struct{} // closed and replaced when h changes or the stream ends
	dead    error
	errs    map[string]string // message id -> error condition
	done    chan struct{}
}

func dialXMPPPub(h *hubProc, user, pass, topic string) (*xmppPub, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	s, err := xmppLogin(ctx, h, user, pass)
	if err != nil {
		return nil, err
	}
	p := &xmppPub{conn: s.Conn(), to: topicJID(topic), changed: make(chan struct{}), errs: map[string]string{}, done: make(chan struct{})}
	enabled := make(chan struct{})
	go p.read(enabled)
	if _, err := io.WriteString(p.conn, `<enable xmlns='urn:xmpp:sm:3'/>`); err != nil {
		p.close()
		return nil, fmt.Errorf("xmpp enable: %w", err)
	}
	select {
	case <-enabled:
	case <-time.After(ackTimeout):
		p.close()
		return nil, errors.New("xmpp: no <enabled/>")
	}
	return p, nil
}

func (p *xmppPub) read(enabled chan struct{}) {
	defer close(p.done)
	d := xml.NewDecoder(p.conn)
	var once sync.Once
	for {
		tok, err := d.Token()
		if err != nil {
			p.fail(err)
			return
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch start.Name.Local {
		case "enabled":
			once.Do(func() { close(enabled) })
		case "a":
			for _, a := range start.Attr {
				if a.Name.Local == "h" {
					n, _ := strconv.ParseUint(a.Value, 10, 32)
					p.mu.Lock()
					p.h = n
					close(p.changed)
					p.changed = make(chan struct{})
					p.mu.Unlock()
				}
			}
		case "message":
			var v struct {
				ID    string `xml:"id,attr"`
				Type  string `xml:"type,attr"`
				Error struct {
					Inner []struct{ XMLName xml.Name } `xml:",any"`
				} `xml:"error"`
			}
			if err := d.DecodeElement(&v, &start); err != nil {
				p.fail(err)
				return
			}
			if v.Type == "error" && len(v.Error.Inner) > 0 {
				p.mu.Lock()
				p.errs[v.ID] = v.Error.Inner[0].XMLName.Local
				p.mu.Unlock()
			}
			continue
		}
		if err := d.Skip(); err != nil {
			p.fail(err)
			return
		}
	}
}

func (p *xmppPub) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead == nil {
		p.dead = fmt.Errorf("xmpp stream: %w", err)
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// errorFor returns the error condition the hub answered for message id.
func (p *xmppPub) errorFor(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs[id]
}

func (p *xmppPub) send(ctx context.Context, payload string) error {
	p.wmu.Lock()
	p.sent++
	n := p.sent
	id := "m" + strconv.FormatUint(n, 10)
	_ = p.conn.SetWriteDeadline(time.Now().Add(ackTimeout))
	_, err := io.WriteString(p.conn, `<message type='chat' id='`+id+`' to='`+p.to+`'><body>`+payload+`</body></message><r xmlns='urn:xmpp:sm:3'/>`)
	p.wmu.Unlock()
	if err != nil {
		return err
	}
	for {
		p.mu.Lock()
		h, dead, ch := p.h, p.dead, p.changed
		p.mu.Unlock()
		if h >= n {
			// h counts handled stanzas, refused ones too: wait briefly for
			// an error answer, which comes before the <a/> that covers it.
			if cond := p.errorFor(id); cond != "" {
				return fmt.Errorf("xmpp: %s", cond)
			}
			return nil
		}
		if dead != nil {
			return dead
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *xmppPub) close() {
	_ = p.conn.Close()
	<-p.done
}

// xmppSub is a chat user whose message bodies go to a channel.
type xmppSub struct {
	s    *mxmpp.Session
	msgs chan string
	pres chan string // "type from" of presences
	wg   sync.WaitGroup
}

func dialXMPPSub(t testing.TB, h *hubProc, user, pass string) *xmppSub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	s, err := xmppLogin(ctx, h, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	c := &xmppSub{s: s, msgs: make(chan string, 20000), pres: make(chan string, 100)}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = s.Serve(mxmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			var v struct {
				XMLName xml.Name
				From    string `xml:"from,attr"`
				Type    string `xml:"type,attr"`
				Body    string `xml:"body"`
			}
			d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), xmlstream.Inner(r), xmlstream.Token(start.End())))
			if err := d.Decode(&v); err != nil {
				return err
			}
			switch {
			case v.XMLName.Local == "message" && v.Body != "":
				select {
				case c.msgs <- v.Body:
				default:
				}
			case v.XMLName.Local == "presence":
				select {
				case c.pres <- v.Type + " " + v.From:
				default:
				}
			}
			return nil
		}))
	}()
	t.Cleanup(c.close)
	c.send(t, `<presence/>`)
	return c
}

func (c *xmppSub) send(t testing.TB, raw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if err := c.s.Send(ctx, xml.NewDecoder(strings.NewReader(raw))); err != nil {
		t.Fatalf("xmpp send: %v", err)
	}
}

// subscribeTopic subscribes to a topic JID and waits for the approval.
func (c *xmppSub) subscribeTopic(t testing.TB, topic string) {
	t.Helper()
	j := topicJID(topic)
	c.send(t, `<presence type='subscribe' to='`+j+`'/>`)
	deadline := time.After(ackTimeout)
	for {
		select {
		case p := <-c.pres:
			if p == "subscribed "+j {
				return
			}
		case <-deadline:
			t.Fatalf("xmpp: no subscription approval from %s", j)
		}
	}
}

func (c *xmppSub) close() {
	_ = c.s.Close()
	_ = c.s.Conn().Close()
	c.wg.Wait()
}
