package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.mqtt.golang"
	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
	"github.com/hubsmith/hub/store"
)

// TestDeletionClosesEveryConnection: a user connected over MQTT (a
// persistent session with a QoS 1 subscription), XMPP (with a topic
// subscription), an SSE stream and a WebSocket, and a device observing its
// commands over CoAP DTLS, are deleted over REST; every connection closes
// within revokeWithin, their durable queues are gone, and a user created
// afterwards with the same name inherits no session, roster or queue.
func TestDeletionClosesEveryConnection(t *testing.T) {
	h := hubtest.Start(t, func(c *gateway.Config) { c.CoAP.DTLSAddr = "127.0.0.1:0" })
	base := "http://" + h.Addr(t, "rest")
	addUser := func() {
		t.Helper()
		code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/users", "application/json", `{"name":"bob","password":"bobpw","role":"user"}`)
		if code != http.StatusCreated {
			t.Fatalf("add bob = %d %s", code, body)
		}
	}
	addUser()
	code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"therm2","name":"Thermometer","protocol":"coap","psk":"746865726d6b6579"}`)
	if code != http.StatusCreated {
		t.Fatalf("create device = %d %s", code, body)
	}

	mq := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "bob-phone", "bob", "bobpw", false)
	mq.subscribe(t, "home/#", 1)
	xc := dialXMPP(t, h.Addr(t, "xmpp"), "bob", "bobpw")
	topicJID := "home.door@topics.localhost"
	xc.subscribeTopic(t, topicJID)
	sse := streamEnds(t, base+"/api/v1/subscribe?filter=home/%23", false)
	ws := streamEnds(t, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/subscribe?filter=home/%23", true)

	cc, err := dtls.Dial(h.Addr(t, "coap.coaps"), dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("thermkey"), nil }),
		piondtls.WithPSKIdentityHint([]byte("therm2")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	notes := make(chan string, 16)
	obs, err := cc.Observe(ctx(t), "/ps/devices/therm2/commands/+", observeInto(notes))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(context.Background()) }()
	eventually(t, "the durable subscriptions", func() bool {
		ids := durableIDs(t, h)
		return hasPrefix(ids, "mqtt:bob-phone") && hasPrefix(ids, "xmpp:bob:") && hasPrefix(ids, "coap/therm2/")
	})

	t0 := time.Now()
	if code, body, _ := httpDo(t, http.MethodDelete, base+"/api/v1/users/bob", "", ""); code != http.StatusNoContent {
		t.Fatalf("delete bob = %d %s", code, body)
	}
	if code, body, _ := httpDo(t, http.MethodDelete, base+"/api/v1/devices/therm2", "", ""); code != http.StatusNoContent {
		t.Fatalf("delete therm2 = %d %s", code, body)
	}
	closedWithin := func(what string, closed func() bool) {
		t.Helper()
		for !closed() {
			if time.Since(t0) > revokeWithin {
				t.Errorf("%s still open %v after the deletion", what, revokeWithin)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s closed %v after the deletion", what, time.Since(t0).Round(time.Millisecond))
	}
	isClosed := func(ch <-chan struct{}) func() bool {
		return func() bool {
			select {
			case <-ch:
				return true
			default:
				return false
			}
		}
	}
	closedWithin("MQTT", func() bool { return !mq.IsConnectionOpen() })
	closedWithin("XMPP", isClosed(xc.done))
	closedWithin("SSE", isClosed(sse))
	closedWithin("WebSocket", isClosed(ws))
	closedWithin("CoAP DTLS", isClosed(cc.Done()))
	for _, prefix := range []string{"mqtt:bob-phone", "xmpp:bob:", "coap/therm2/"} {
		if ids := durableIDs(t, h); hasPrefix(ids, prefix) {
			t.Errorf("durable subscription %s* left: %v", prefix, ids)
		}
	}

	// Published while nobody is bob: no queue may keep it for a new bob.
	pub(t, h, "home/door", "while-deleted", false)
	httpDo(t, http.MethodPost, base+"/api/v1/topics/home/door?qos=1", "text/plain", "while-deleted-qos1")
	addUser()
	inheritsNothing(t, h, topicJID)
}

// inheritsNothing logs in as the new bob over MQTT (client id bob-phone,
// persistent) and XMPP and fails the test if anything of the old bob is
// there: a session present, a queued message, a roster item for topicJID.
func inheritsNothing(t *testing.T, h *hubtest.Hub, topicJID string) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.Addr(t, "mqtt.mqtt")).SetClientID("bob-phone").
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(wait).SetUsername("bob").SetPassword("bobpw")
	got := make(chan string, 16)
	opts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	again := paho.NewClient(opts)
	tok := again.Connect()
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("mqtt connect as the new bob: %v", tok.Error())
	}
	t.Cleanup(func() { again.Disconnect(100) })
	if tok.(*paho.ConnectToken).SessionPresent() {
		t.Error("the new bob's MQTT CONNACK says session present")
	}
	xb := dialXMPP(t, h.Addr(t, "xmpp"), "bob", "bobpw")
	xb.send(t, `<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>`)
	roster := xb.expect(t, "roster", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "roster1" })
	if s := flatten(roster.Children); strings.Contains(s, topicJID) {
		t.Errorf("the new bob's roster has the old one's items: %s", s)
	}
	select {
	case p := <-got:
		t.Errorf("the new bob got %q over MQTT from the old one's queue", p)
	case v := <-xb.in:
		if v.XMLName.Local == "message" {
			t.Errorf("the new bob got a message over XMPP from the old one's subscription: %+v", v)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// streamEnds opens an SSE stream (or, with ws, a WebSocket) as bob and
// returns a channel closed when the hub ends it; a WebSocket must end with
// close code 1008.
func streamEnds(t *testing.T, url string, ws bool) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://x", nil)
	req.SetBasicAuth("bob", "bobpw")
	if ws {
		conn, _, err := websocket.Dial(c, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {req.Header.Get("Authorization")}}})
		if err != nil {
			t.Fatalf("websocket %s: %v", url, err)
		}
		go func() {
			defer close(done)
			for {
				if _, _, err := conn.Read(c); err != nil {
					if c.Err() == nil && websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
						t.Errorf("websocket ended with %v, want close 1008", err)
					}
					return
				}
			}
		}()
		t.Cleanup(func() { _ = conn.CloseNow(); <-done })
		return done
	}
	req, _ = http.NewRequestWithContext(c, http.MethodGet, url, nil)
	req.SetBasicAuth("bob", "bobpw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sse %s: %v %v", url, resp, err)
	}
	go func() {
		defer close(done)
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return done
}

// durableIDs lists the ids of the bus's durable subscriptions.
func durableIDs(t *testing.T, h *hubtest.Hub) []string {
	t.Helper()
	subs, err := h.Store.LoadSubscriptions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(subs))
	for _, s := range subs {
		ids = append(ids, s.ID)
	}
	return ids
}

func hasPrefix(ids []string, prefix string) bool {
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			return true
		}
	}
	return false
}

// TestDeletionWhileStopped: a user deleted with the store alone (as `hub
// user delete` does while the hub is stopped) and made again under the
// same name inherits nothing at the next start: no MQTT session with its
// queue, no XMPP roster item or topic subscription.
func TestDeletionWhileStopped(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/users", "application/json", `{"name":"bob","password":"bobpw","role":"user"}`); code != http.StatusCreated {
		t.Fatalf("add bob = %d %s", code, body)
	}
	mq := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "bob-phone", "bob", "bobpw", false)
	mq.subscribe(t, "home/#", 1)
	mq.Disconnect(100)
	xc := dialXMPP(t, h.Addr(t, "xmpp"), "bob", "bobpw")
	topicJID := "home.door@topics.localhost"
	xc.subscribeTopic(t, topicJID)
	_ = xc.s.Close()
	pub(t, h, "home/door", "queued-for-old-bob", false)
	httpDo(t, http.MethodPost, base+"/api/v1/topics/home/door?qos=1", "text/plain", "queued-qos1")
	eventually(t, "the durable subscriptions", func() bool {
		ids := durableIDs(t, h)
		return hasPrefix(ids, "mqtt:bob-phone") && hasPrefix(ids, "xmpp:bob:")
	})
	cfg := h.Config
	h.Close(t)

	st, err := store.Open(t.Context(), cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteUser(t.Context(), "bob"); err != nil {
		t.Fatal(err)
	}
	if err := st.AddUser(t.Context(), "bob", "bobpw", "user"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := hubtest.StartConfig(t, cfg)
	for _, prefix := range []string{"mqtt:bob-phone", "xmpp:bob:"} {
		if ids := durableIDs(t, h2); hasPrefix(ids, prefix) {
			t.Errorf("durable subscription %s* left after the restart: %v", prefix, ids)
		}
	}
	inheritsNothing(t, h2, topicJID)
}
