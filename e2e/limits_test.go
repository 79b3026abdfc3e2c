package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"mellium.im/sasl"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	xstanza "mellium.im/xmpp/stanza"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
	"github.com/hubsmith/hub/mqttwire"
	"github.com/hubsmith/hub/mqttwire/wiretest"
)

// The limits (issue 13), each in every protocol it applies to, on a hub
// in public mode: listeners on 0.0.0.0, clients through 127.0.0.1 (and
// 127.0.0.2 for a second source address), loopback not exempt. Each test
// asserts the refusal with the protocol's own code and that a good
// client of every protocol (MQTT, XMPP, REST, CoAP) is served after.

// startLimitsHub starts a public-mode hub with limits lim.
func startLimitsHub(t *testing.T, lim adapters.LimitsConfig, more ...hubtest.Option) *hubtest.Hub {
	t.Helper()
	opts := append([]hubtest.Option{func(c *gateway.Config) {
		c.MQTT.Addr, c.CoAP.Addr, c.HTTP.Addr, c.XMPP.Addr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"
		c.Limits.LimitsConfig = lim
	}}, more...)
	h := hubtest.Start(t, opts...)
	for _, u := range []string{"bob", "carol"} {
		if err := h.Store.AddUser(t.Context(), u, u+"pw", adapters.RoleUser); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// source is a dialer from a loopback address of its own (127.0.0.2: the
// per-address bound counts IPs).
func source(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: wait}
}

// noKeepAlive is an HTTP client whose connections end with their request,
// so that none is held against a bound between requests.
func noKeepAlive(d *net.Dialer) *http.Client {
	return &http.Client{Timeout: 2 * wait, Transport: &http.Transport{DisableKeepAlives: true, DialContext: d.DialContext}}
}

// rawMQTT is an MQTT connection written and read by hand (wiretest): it
// holds a place without a goroutine or a keepalive, and shows the exact
// codes.
type rawMQTT struct{ *wiretest.Client }

// mqttOpts is a CONNECT of rawConnect.
type mqttOpts struct {
	version    byte // 4 (3.1.1) or 5
	id         string
	user, pass string
	persistent bool // 3.1.1 clean session 0; 5: session expiry 3600
	clean      bool // MQTT 5 clean start
}

// rawConnect connects from d and returns the CONNACK code (and the
// session present flag); the connection is closed unless the code is 0.
func rawConnect(t *testing.T, d *net.Dialer, addr string, o mqttOpts) (*rawMQTT, byte, bool) {
	t.Helper()
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("mqtt dial: %v", err)
	}
	return rawConnectOn(t, conn, o)
}

// rawConnectOn is rawConnect over conn (TLS, WebSocket).
func rawConnectOn(t *testing.T, conn net.Conn, o mqttOpts) (*rawMQTT, byte, bool) {
	t.Helper()
	s := mqttwire.ConnectSpec{Version: o.version, ClientID: o.id, Username: o.user, Password: o.pass,
		Clean: !o.persistent && o.version == mqttwire.V311 || o.version == mqttwire.V5 && o.clean}
	if o.version == mqttwire.V5 && o.persistent {
		s.Properties = []byte{0x11, 0, 0, 0x0e, 0x10} // session expiry 3600
	}
	c, ack := wiretest.Connect(t, conn, s)
	return &rawMQTT{c}, ack.Code, ack.SessionPresent
}

// publish sends a PUBLISH (packet id 1 at QoS 1) and, at QoS 1, returns
// the PUBACK code (0 for a 3.1.1 PUBACK); ok false when the connection was
// closed instead.
func (c *rawMQTT) publish(t *testing.T, version byte, topic string, qos byte, payload []byte) (code byte, ok bool) {
	t.Helper()
	c.Send(t, mqttwire.AppendPublish(nil, mqttwire.PublishHeader{Version: version, Topic: topic, QoS: qos, ID: 1}, payload))
	if qos == 0 {
		return 0, true
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	for {
		p, err := c.ReadPacket()
		if err != nil {
			return 0, false
		}
		if p.Type == mqttwire.Puback {
			a, err := mqttwire.ParseAck(p, version)
			if err != nil {
				t.Fatalf("mqtt: %v", err)
			}
			return a.Code, true
		}
	}
}

// xmppOn logs in as user/resource over conn (STARTTLS, SCRAM) and returns
// the session (closed when the test ends) or the error.
func xmppOn(t *testing.T, conn net.Conn, user, pass, resource string) (*mxmpp.Session, error) {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 2*wait)
	defer cancel()
	s, err := mxmpp.NewClientSession(c, jid.MustParse(user+"@localhost/"+resource), conn,
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}),
		mxmpp.SASL("", pass, sasl.ScramSha256), mxmpp.BindResource())
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = s.Close(); _ = conn.Close() })
	return s, nil
}

func xmppFrom(t *testing.T, d *net.Dialer, addr, user, pass, resource string) (*mxmpp.Session, error) {
	t.Helper()
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return xmppOn(t, conn, user, pass, resource)
}

// served checks that a good client of every protocol, logged in as
// admin from 127.0.0.1, is served: a REST publish reaches an MQTT
// subscriber and an XMPP topic subscriber, and a CoAP GET reads it back.
func served(t *testing.T, h *hubtest.Hub, tag string) {
	t.Helper()
	topic := "good/" + tag
	rest := "http://" + loopback(t, h.Addr(t, "rest"))
	sub := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "good-"+tag, "admin", "adminpw", true)
	sub.subscribe(t, topic, 1)
	x := dialXMPP(t, loopback(t, h.Addr(t, "xmpp")), "admin", "adminpw")
	tjid := "good." + tag + "@topics.localhost"
	x.subscribeTopic(t, tjid)
	cl := noKeepAlive(source("127.0.0.1"))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, rest+"/api/v1/topics/"+topic+"?qos=1&retain=true", strings.NewReader("v-"+tag))
	req.SetBasicAuth("admin", "adminpw")
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("good REST client: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("good REST client: status %d", resp.StatusCode)
	}
	if m := sub.next(t); m.Payload != "v-"+tag {
		t.Fatalf("good MQTT client got %+v", m)
	}
	x.expect(t, "good XMPP client's message", messageFrom(tjid))
	cc := dialCoAP(t, loopback(t, h.Addr(t, "coap.coap")))
	cr, err := cc.Get(ctx(t), "/ps/"+topic, coapQuery("u=admin"), coapQuery("p=adminpw"))
	if err != nil {
		t.Fatalf("good CoAP client: %v", err)
	}
	if cr.Code() != codes.Content {
		t.Fatalf("good CoAP client: %v", cr.Code())
	}
}

// httpStatusFrom is the status of GET url from d (basic auth user/pass),
// with its Retry-After.
func httpStatusFrom(t *testing.T, d *net.Dialer, url, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := noKeepAlive(d).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// openStreamFrom opens an SSE stream as user from d and returns its
// status; a 200 stream stays open until the test ends.
func openStreamFrom(t *testing.T, d *net.Dialer, url, user, pass string) int {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(c, http.MethodGet, url, nil)
	req.SetBasicAuth(user, pass)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: d.DialContext}}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("stream %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return resp.StatusCode
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp.StatusCode
}

func TestLimitConnections(t *testing.T) {
	t.Parallel()
	local, other := source("127.0.0.1"), source("127.0.0.2")
	tests := []struct {
		name string
		lim  adapters.LimitsConfig
		// from is where the greedy client connects from, as user.
		from       *net.Dialer
		user, pass string
		// hold is how many MQTT connections it holds before the refusals.
		hold int
		// mqtt5 and mqtt3 are the CONNACK codes of one more; xmpp the
		// stream error; status the HTTP status of one more stream.
		mqtt5, mqtt3 byte
		xmpp         string
		status       int
	}{
		{"per user", adapters.LimitsConfig{MaxConnectionsPerUser: 3}, local, "alice", "alicepw", 3,
			0x97, 0x03, "policy-violation", http.StatusTooManyRequests},
		{"per address, by IP not port", adapters.LimitsConfig{MaxConnectionsPerAddress: 3}, other, "alice", "alicepw", 3,
			0x97, 0x03, "policy-violation", http.StatusTooManyRequests},
		{"global", adapters.LimitsConfig{MaxConnections: 4}, local, "alice", "alicepw", 4,
			0x89, 0x03, "resource-constraint", http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := startLimitsHub(t, tc.lim)
			mq, xa := loopback(t, h.Addr(t, "mqtt.mqtt")), loopback(t, h.Addr(t, "xmpp"))
			stream := "http://" + loopback(t, h.Addr(t, "rest")) + "/api/v1/subscribe?filter=greedy/%23"
			var held []*rawMQTT
			for i := range tc.hold {
				c, code, _ := rawConnect(t, tc.from, mq, mqttOpts{version: 5, id: fmt.Sprintf("greedy%d", i), user: tc.user, pass: tc.pass, clean: true})
				if code != 0 {
					t.Fatalf("connection %d within the bound: 0x%02x", i, code)
				}
				held = append(held, c)
			}
			if _, code, _ := rawConnect(t, tc.from, mq, mqttOpts{version: 5, id: "over5", user: tc.user, pass: tc.pass, clean: true}); code != tc.mqtt5 {
				t.Errorf("MQTT 5 over the bound: CONNACK 0x%02x, want 0x%02x", code, tc.mqtt5)
			}
			if _, code, _ := rawConnect(t, tc.from, mq, mqttOpts{version: 4, id: "over3", user: tc.user, pass: tc.pass}); code != tc.mqtt3 {
				t.Errorf("MQTT 3.1.1 over the bound: CONNACK 0x%02x, want 0x%02x", code, tc.mqtt3)
			}
			if _, err := xmppFrom(t, tc.from, xa, tc.user, tc.pass, "over"); err == nil || !strings.Contains(err.Error(), tc.xmpp) {
				t.Errorf("XMPP over the bound: %v, want %s", err, tc.xmpp)
			}
			if st := openStreamFrom(t, tc.from, stream, tc.user, tc.pass); st != tc.status {
				t.Errorf("SSE over the bound: %d, want %d", st, tc.status)
			}
			if st, ra := httpStatusFrom(t, tc.from, stream, tc.user, tc.pass); st != tc.status || ra == "" {
				t.Errorf("HTTP over the bound: %d Retry-After %q, want %d with Retry-After", st, ra, tc.status)
			}
			// The held connections are still served.
			if code, ok := held[0].publish(t, 5, "greedy/x", 1, []byte("x")); !ok || code != 0 {
				t.Errorf("a held connection: PUBACK 0x%02x ok %v", code, ok)
			}
			// Another user, from another address, is not refused; in the
			// global case only once the greedy client let go.
			if tc.name == "global" {
				for _, c := range held {
					_ = c.Close()
				}
				eventually(t, "the connections given back", func() bool { return h.Auth.Limits().Stats().Connections == 0 })
			}
			served(t, h, strings.ReplaceAll(tc.name[:6], " ", ""))
			s := h.Auth.Limits().Stats()
			if n := s.Refused["connections"] + s.Refused["connections_per_address"] + s.Refused["connections_per_user"]; n < 4 {
				t.Errorf("refusals counted: %v", s.Refused)
			}
		})
	}
}

// TestLimitConnectionsReload: a reload lowers the per-user bound; the
// connections held stay, a new one is refused, and raising it again lets
// it in.
func TestLimitConnectionsReload(t *testing.T) {
	t.Parallel()
	h := startLimitsHub(t, adapters.LimitsConfig{MaxConnectionsPerUser: 3})
	mq := loopback(t, h.Addr(t, "mqtt.mqtt"))
	local := source("127.0.0.1")
	var held []*rawMQTT
	for i := range 3 {
		c, code, _ := rawConnect(t, local, mq, mqttOpts{version: 5, id: fmt.Sprintf("r%d", i), user: "bob", pass: "bobpw", clean: true})
		if code != 0 {
			t.Fatalf("connection %d: 0x%02x", i, code)
		}
		held = append(held, c)
	}
	cfg := h.Config
	cfg.Limits.MaxConnectionsPerUser = 1
	changes, err := h.Reload(t.Context(), cfg)
	if err != nil || !strings.Contains(strings.Join(changes, "\n"), "limits") {
		t.Fatalf("reload: %v %v", changes, err)
	}
	for i, c := range held {
		if code, ok := c.publish(t, 5, "bob/x", 1, []byte("x")); !ok || code != 0 {
			t.Errorf("held connection %d after the reload: 0x%02x %v", i, code, ok)
		}
	}
	if _, code, _ := rawConnect(t, local, mq, mqttOpts{version: 5, id: "r9", user: "bob", pass: "bobpw", clean: true}); code != 0x97 {
		t.Errorf("new connection after the reload: 0x%02x, want 0x97", code)
	}
	cfg.Limits.MaxConnectionsPerUser = 10
	if _, err := h.Reload(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if _, code, _ := rawConnect(t, local, mq, mqttOpts{version: 5, id: "r9", user: "bob", pass: "bobpw", clean: true}); code != 0 {
		t.Errorf("after raising the bound: 0x%02x", code)
	}
	st, metrics := httpAsBody(t, http.MethodGet, "http://"+loopback(t, h.Addr(t, "rest"))+"/metrics", "admin", "adminpw", "")
	if st != http.StatusOK || !strings.Contains(metrics, `hub_limits_refused_total{limit="connections_per_user"} 1`) ||
		!strings.Contains(metrics, "hub_limits_connections ") {
		t.Errorf("/metrics: %d, no limit counters in:\n%s", st, metrics)
	}
	bad := cfg
	bad.Limits.MaxTopicLength = 1 << 20
	if _, err := h.Reload(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "limits.max_topic_length") {
		t.Errorf("invalid limits reloaded: %v", err)
	}
	served(t, h, "reload")
}

func TestLimitSubscriptions(t *testing.T) {
	t.Parallel()
	h := startLimitsHub(t, adapters.LimitsConfig{MaxSubscriptionsPerClient: 3})
	mq := loopback(t, h.Addr(t, "mqtt.mqtt"))
	local := source("127.0.0.1")
	for _, tc := range []struct {
		version byte
		over    byte
	}{{5, 0x97}, {4, 0x80}} {
		c, code, _ := rawConnect(t, local, mq, mqttOpts{version: tc.version, id: fmt.Sprintf("subs%d", tc.version), user: "alice", pass: "alicepw", clean: true})
		if code != 0 {
			t.Fatalf("connect: 0x%02x", code)
		}
		got := c.Subscribe(t, 1, "s/1", "s/2", "s/3", "s/4", "s/5")
		want := []byte{1, 1, 1, tc.over, tc.over}
		if string(got) != string(want) {
			t.Errorf("MQTT v%d SUBACK %x, want %x", tc.version, got, want)
		}
		// A filter held already is granted again; a new one is not.
		if got := c.Subscribe(t, 1, "s/2", "s/6"); string(got) != string([]byte{1, tc.over}) {
			t.Errorf("MQTT v%d SUBACK again %x", tc.version, got)
		}
	}
	// SSE / WebSocket: filters per stream.
	base := "http://" + loopback(t, h.Addr(t, "rest")) + "/api/v1/subscribe?filter=a&filter=b&filter=c"
	if st := openStreamFrom(t, local, base+"&filter=d", "alice", "alicepw"); st != http.StatusBadRequest {
		t.Errorf("SSE with 4 filters: %d, want 400", st)
	}
	if st := openStreamFrom(t, local, base, "alice", "alicepw"); st != http.StatusOK {
		t.Errorf("SSE with 3 filters: %d", st)
	}
	// XMPP: XEP-0060 subscriptions and topic JID subscriptions of a user.
	x := dialXMPP(t, loopback(t, h.Addr(t, "xmpp")), "alice", "alicepw")
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("ps%d", i)
		x.send(t, `<iq type='set' id='`+id+`' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='p/`+fmt.Sprint(i)+`' jid='alice@localhost'/></pubsub></iq>`)
		v := x.expect(t, "pubsub answer "+id, func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == id })
		switch {
		case i <= 3 && v.Type != "result":
			t.Errorf("pubsub subscription %d: %+v", i, v)
		case i == 4 && (v.Type != "error" || !hasNode(v.Children, "policy-violation") || !hasNode(v.Children, "too-many-subscriptions")):
			t.Errorf("pubsub subscription over the bound: %+v", v)
		}
	}
	x.send(t, `<presence type='subscribe' to='t.over@topics.localhost'/>`)
	x.expect(t, "the topic subscription over the bound refused", func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "error" && v.From == "t.over@topics.localhost" && hasNode(v.Children, "policy-violation")
	})
	x.expect(t, "unsubscribed", func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == "unsubscribed" && v.From == "t.over@topics.localhost"
	})
	if n := h.Auth.Limits().Stats().Refused["subscriptions"]; n < 6 {
		t.Errorf("refused subscriptions counted: %d", n)
	}
	served(t, h, "subs")
}

// hasNode reports whether an element called local is among nodes or
// their descendants.
func hasNode(nodes []xmlNode, local string) bool {
	for _, n := range nodes {
		if n.XMLName.Local == local || hasNode(n.Children, local) {
			return true
		}
	}
	return false
}

func TestLimitPersistentSessions(t *testing.T) {
	t.Parallel()
	h := startLimitsHub(t, adapters.LimitsConfig{MaxPersistentSessionsPerUser: 2})
	mq := loopback(t, h.Addr(t, "mqtt.mqtt"))
	local := source("127.0.0.1")
	connect := func(o mqttOpts) (byte, bool) {
		t.Helper()
		o.user, o.pass = "carol", "carolpw"
		c, code, present := rawConnect(t, local, mq, o)
		if code == 0 {
			_ = c.Close()
		}
		return code, present
	}
	for _, id := range []string{"p1", "p2"} {
		if code, _ := connect(mqttOpts{version: 5, id: id, persistent: true, clean: true}); code != 0 {
			t.Fatalf("session %s: 0x%02x", id, code)
		}
	}
	tests := []struct {
		name    string
		o       mqttOpts
		code    byte
		present bool
	}{
		{"MQTT 5 new beyond the bound", mqttOpts{version: 5, id: "p3", persistent: true}, 0x97, false},
		{"MQTT 3.1.1 new beyond the bound", mqttOpts{version: 4, id: "p3", persistent: true}, 0x03, false},
		{"resuming one", mqttOpts{version: 5, id: "p1", persistent: true}, 0, true},
		{"resuming with 3.1.1", mqttOpts{version: 4, id: "p2", persistent: true}, 0, true},
		{"a clean session is no persistent one", mqttOpts{version: 5, id: "c1", clean: true}, 0, false},
	}
	for _, tc := range tests {
		eventually(t, tc.name, func() bool {
			code, present := connect(tc.o)
			return code == tc.code && present == tc.present
		})
	}
	// Ending one (a clean start on its id) makes room.
	if code, _ := connect(mqttOpts{version: 5, id: "p1", clean: true}); code != 0 {
		t.Fatalf("clean start of p1: 0x%02x", code)
	}
	eventually(t, "a new session once p1 ended", func() bool {
		code, _ := connect(mqttOpts{version: 5, id: "p3", persistent: true, clean: true})
		return code == 0
	})
	if n := h.Auth.Limits().Stats().Refused["persistent_sessions"]; n < 2 {
		t.Errorf("refusals counted: %d", n)
	}
	served(t, h, "sess")
}

func TestLimitXMPPResources(t *testing.T) {
	t.Parallel()
	h := startLimitsHub(t, adapters.LimitsConfig{MaxResourcesPerUser: 2})
	xa := loopback(t, h.Addr(t, "xmpp"))
	local := source("127.0.0.1")
	first, err := xmppFrom(t, local, xa, "bob", "bobpw", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xmppFrom(t, local, xa, "bob", "bobpw", "r2"); err != nil {
		t.Fatal(err)
	}
	_, err = xmppFrom(t, local, xa, "bob", "bobpw", "r3")
	var se *xstanza.Error
	if !errors.As(err, &se) || se.Condition != xstanza.ResourceConstraint || se.Type != xstanza.Wait {
		t.Fatalf("third resource: %#v, want a wait resource-constraint", err)
	}
	// Another user is not bound by bob's resources.
	if _, err := xmppFrom(t, local, xa, "carol", "carolpw", "r1"); err != nil {
		t.Fatalf("carol: %v", err)
	}
	// Once one of bob's ends, a new one binds.
	_ = first.Close()
	eventually(t, "a resource once r1 ended", func() bool {
		conn, err := local.Dial("tcp", xa)
		if err != nil {
			return false
		}
		_, err = xmppOn(t, conn, "bob", "bobpw", "r4")
		return err == nil
	})
	if n := h.Auth.Limits().Stats().Refused["resources"]; n < 1 {
		t.Errorf("refusals counted: %d", n)
	}
	served(t, h, "res")
}

func TestLimitTopicLength(t *testing.T) {
	t.Parallel()
	h := startLimitsHub(t, adapters.LimitsConfig{MaxTopicLength: 32})
	long := "long/" + strings.Repeat("x", 40)
	mq := loopback(t, h.Addr(t, "mqtt.mqtt"))
	local := source("127.0.0.1")
	c5, code, _ := rawConnect(t, local, mq, mqttOpts{version: 5, id: "t5", user: "alice", pass: "alicepw", clean: true})
	if code != 0 {
		t.Fatal(code)
	}
	if code, ok := c5.publish(t, 5, long, 1, []byte("x")); !ok || code != 0x90 {
		t.Errorf("MQTT 5 publish on a long topic: PUBACK 0x%02x ok %v, want 0x90", code, ok)
	}
	if got := c5.Subscribe(t, 1, long, "short/#"); string(got) != string([]byte{0x8F, 1}) {
		t.Errorf("MQTT 5 SUBACK %x, want 8f01", got)
	}
	c3, code, _ := rawConnect(t, local, mq, mqttOpts{version: 4, id: "t3", user: "alice", pass: "alicepw"})
	if code != 0 {
		t.Fatal(code)
	}
	if _, ok := c3.publish(t, 4, long, 1, []byte("x")); ok {
		t.Errorf("MQTT 3.1.1 publish on a long topic: acknowledged, want the connection closed")
	}
	if _, code, _ := rawConnectWill(t, local, mq, long); code != 0x90 {
		t.Errorf("MQTT 5 will on a long topic: CONNACK 0x%02x, want 0x90", code)
	}
	rest := "http://" + loopback(t, h.Addr(t, "rest"))
	if st, _ := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/"+long, "alice", "alicepw", "x"); st != http.StatusBadRequest {
		t.Errorf("REST publish on a long topic: %d", st)
	}
	if st := openStreamFrom(t, local, rest+"/api/v1/subscribe?filter="+long, "alice", "alicepw"); st != http.StatusBadRequest {
		t.Errorf("SSE on a long filter: %d", st)
	}
	x := dialXMPP(t, loopback(t, h.Addr(t, "xmpp")), "alice", "alicepw")
	x.send(t, `<iq type='set' id='pl' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='`+long+`'><item><x xmlns='urn:x'/></item></publish></pubsub></iq>`)
	if v := x.expect(t, "pubsub publish answer", func(v stanza) bool { return v.ID == "pl" }); v.Type != "error" || !hasNode(v.Children, "not-acceptable") {
		t.Errorf("XMPP publish on a long node: %+v", v)
	}
	if n := h.Auth.Limits().Stats().Refused["topic_length"]; n < 5 {
		t.Errorf("refusals counted: %d", n)
	}
	served(t, h, "topic")
}

// rawConnectWill connects with MQTT 5 and a will on topic.
func rawConnectWill(t *testing.T, d *net.Dialer, addr, topic string) (*rawMQTT, byte, bool) {
	t.Helper()
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, ack := wiretest.Connect(t, conn, mqttwire.ConnectSpec{Version: mqttwire.V5, ClientID: "will", Username: "alice", Password: "alicepw",
		Clean: true, Will: &mqttwire.Will{Topic: topic, Payload: []byte("gone")}})
	return &rawMQTT{c}, ack.Code, false
}

// TestLimitSlowConsumer: MQTT clients that stop reading are cut off, one
// past its own pending bound with DISCONNECT 0x97, and, when all of them
// pass the global budget, the one with the most pending with 0x89; a
// subscriber that reads goes on getting every message.
func TestLimitSlowConsumer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		lim    adapters.LimitsConfig
		stalls int
		code   byte
	}{
		{"per connection", adapters.LimitsConfig{MaxPendingBytes: 256 << 10, MaxPendingBytesTotal: -1}, 1, 0x97},
		{"global budget", adapters.LimitsConfig{MaxPendingBytes: -1, MaxPendingBytesTotal: 512 << 10}, 2, 0x89},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := startLimitsHub(t, tc.lim)
			mq := loopback(t, h.Addr(t, "mqtt.mqtt"))
			local := source("127.0.0.1")
			var stalled []*rawMQTT
			for i := range tc.stalls {
				c, code, _ := rawConnect(t, local, mq, mqttOpts{version: 5, id: fmt.Sprintf("slow%d", i), user: "alice", pass: "alicepw", clean: true})
				if code != 0 {
					t.Fatal(code)
				}
				if tcp, ok := c.Conn.(*net.TCPConn); ok {
					_ = tcp.SetReadBuffer(4096)
				}
				c.Subscribe(t, 1, "flood/#")
				stalled = append(stalled, c)
			}
			good := dialMQTT(t, mq, "reader", "admin", "adminpw", true)
			good.subscribe(t, "flood/last", 0)
			pub, code, _ := rawConnect(t, local, mq, mqttOpts{version: 5, id: "pub", user: "admin", pass: "adminpw", clean: true})
			if code != 0 {
				t.Fatal(code)
			}
			payload := make([]byte, 32<<10)
			cut := func() bool { return h.Auth.Limits().Stats().Refused["slow_consumer"] > 0 }
			for i := 0; i < 2000 && !cut(); i++ { // at most 64 MiB
				pub.publish(t, 5, "flood/x", 0, payload)
				if i%32 == 31 {
					time.Sleep(time.Millisecond) // let the writers run
				}
			}
			if !cut() {
				t.Fatal("no stalled client cut off after 64 MiB")
			}
			// Read what the stalled clients were sent: the last packet of
			// the one cut off is its DISCONNECT.
			// Read, all at once, what the stalled clients were sent: the
			// last packet of one cut off is its DISCONNECT, written once
			// the packet being written is out. Their receive buffers grow
			// first: one smaller than the loopback MSS stops window updates
			// (receiver-side silly window avoidance).
			codes := make(chan byte, len(stalled))
			var wg sync.WaitGroup
			for _, c := range stalled {
				if tcp, ok := c.Conn.(*net.TCPConn); ok {
					_ = tcp.SetReadBuffer(1 << 20)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						// A client still connected goes quiet.
						_ = c.SetReadDeadline(time.Now().Add(time.Second))
						p, err := c.ReadPacket()
						if err != nil {
							return
						}
						if p.Type == mqttwire.Disconnect {
							if code, err := mqttwire.ParseDisconnect(p, c.Version); err == nil && code != 0 {
								codes <- code
							}
							return
						}
					}
				}()
			}
			wg.Wait()
			close(codes)
			var got []byte
			for c := range codes {
				got = append(got, c)
			}
			if !bytes.Contains(got, []byte{tc.code}) {
				t.Errorf("DISCONNECT codes to the stalled clients %x, want 0x%02x among them", got, tc.code)
			}
			pub.publish(t, 5, "flood/last", 0, []byte("after"))
			if m := good.next(t); m.Payload != "after" {
				t.Errorf("the reading subscriber got %+v", m)
			}
			eventually(t, "the pending bytes given back", func() bool { return h.Auth.Limits().Stats().PendingBytes < 64<<10 })
			served(t, h, "slow")
		})
	}
}

// TestLimitConnectionsEveryMQTTListener: the per-user bound counts the
// connections of every MQTT listener together (TCP, TLS, WebSocket).
func TestLimitConnectionsEveryMQTTListener(t *testing.T) {
	t.Parallel()
	certFile, keyFile := hubtest.WriteCert(t)
	h := startLimitsHub(t, adapters.LimitsConfig{MaxConnectionsPerUser: 2}, func(c *gateway.Config) {
		c.MQTT.TLSAddr, c.MQTT.WSAddr = "0.0.0.0:0", "0.0.0.0:0"
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
	})
	tlsConn := func() net.Conn {
		c, err := tls.DialWithDialer(source("127.0.0.1"), "tcp", loopback(t, h.Addr(t, "mqtt.mqtts")), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	wsConn := func() net.Conn {
		c, _, err := websocket.Dial(t.Context(), "ws://"+loopback(t, h.Addr(t, "mqtt.ws"))+"/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			t.Fatal(err)
		}
		return websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	}
	o := mqttOpts{version: 5, user: "alice", pass: "alicepw", clean: true}
	steps := []struct {
		name string
		conn func() net.Conn
		want byte
	}{
		{"tcp", func() net.Conn {
			c, err := source("127.0.0.1").Dial("tcp", loopback(t, h.Addr(t, "mqtt.mqtt")))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, 0},
		{"tls", tlsConn, 0},
		{"websocket over the bound", wsConn, 0x97},
		{"tls over the bound", tlsConn, 0x97},
	}
	for i, st := range steps {
		o.id = fmt.Sprintf("l%d", i)
		if _, code, _ := rawConnectOn(t, st.conn(), o); code != st.want {
			t.Errorf("%s: CONNACK 0x%02x, want 0x%02x", st.name, code, st.want)
		}
	}
	served(t, h, "listeners")
}
