package xmpp

import (
	"context"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"

	"github.com/hubsmith/hub/broker"
)

func TestAuth(t *testing.T) {
	h := startHub(t, nil)
	tests := []struct {
		name, user, pass string
		mech             sasl.Mechanism
		ok               bool
	}{
		{"scram-sha-256", "alice", "alicepw", sasl.ScramSha256, true},
		{"scram-sha-1", "alice", "alicepw", sasl.ScramSha1, true},
		{"plain over tls", "alice", "alicepw", sasl.Plain, true},
		{"scram-sha-256 wrong password", "alice", "nope", sasl.ScramSha256, false},
		{"scram-sha-1 wrong password", "alice", "nope", sasl.ScramSha1, false},
		{"plain wrong password", "alice", "nope", sasl.Plain, false},
		{"unknown user", "mallory", "x", sasl.ScramSha256, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := dialSession(ctx, h.addr, tt.user, tt.pass, tt.mech, true)
			if tt.ok {
				if err != nil {
					t.Fatalf("login: %v", err)
				}
				if got := s.LocalAddr().Bare().String(); got != tt.user+"@localhost" {
					t.Errorf("bound JID %q", s.LocalAddr())
				}
				_ = s.Close()
				return
			}
			if err == nil {
				_ = s.Close()
				t.Fatal("login succeeded, want not-authorized")
			}
			if !strings.Contains(err.Error(), "not-authorized") {
				t.Errorf("error %v, want not-authorized", err)
			}
		})
	}
}

func TestPlainNeedsTLS(t *testing.T) {
	h := startHub(t, nil)
	c := rawStream(t, h.addr)
	_, _ = c.Write([]byte(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`))
	_, _ = c.Write([]byte(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlcHc=</auth></stream:stream>`))
	out := readAll(t, c)
	if strings.Contains(out, "<mechanism>PLAIN</mechanism>") {
		t.Errorf("PLAIN offered without TLS: %s", out)
	}
	if !strings.Contains(out, "<encryption-required") || strings.Contains(out, "<success") {
		t.Errorf("PLAIN without TLS: %s", out)
	}
}

func TestMessagesBetweenUsers(t *testing.T) {
	h := startHub(t, nil)
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	alice.send(t, `<message to='bob@localhost' type='chat' from='mallory@localhost'><body>hello bob</body></message>`)
	got := bob.expect(t, "chat to bare JID", isMessageFrom(alice.jid))
	if got.Body != "hello bob" {
		t.Errorf("body %q", got.Body)
	}
	bob.send(t, `<message to='`+alice.jid+`' type='chat'><body>hi alice</body></message>`)
	alice.expect(t, "chat to full JID", isMessageFrom(bob.jid))
	typ, _ := alice.iq(t, `<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if typ != "result" {
		t.Errorf("ping: %s", typ)
	}
	typ, inner := alice.iq(t, `<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if typ != "result" || !strings.Contains(inner, "topics.localhost") || !strings.Contains(inner, "pubsub.localhost") {
		t.Errorf("disco#items: %s %s", typ, inner)
	}
}

func TestTopicSubscription(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "home/kitchen/temp", Payload: []byte("20.5"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	alice := connect(t, h, "alice", "alicepw")
	topicJID := "home.kitchen.temp@topics.localhost"
	alice.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	alice.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == topicJID })
	if got := alice.expect(t, "retained value", isMessageFrom(topicJID)); got.Body != "20.5" {
		t.Errorf("retained body %q", got.Body)
	}
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "home/kitchen/temp", Payload: []byte("21"), ContentType: "text/plain", Origin: broker.Origin{Protocol: broker.ProtoMQTT}}); err != nil {
		t.Fatal(err)
	}
	if got := alice.expect(t, "live value", isMessageFrom(topicJID)); got.Body != "21" {
		t.Errorf("live body %q", got.Body)
	}
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "home/kitchen/temp", Payload: []byte{0xff, 0, 1}, ContentType: "application/cbor"}); err != nil {
		t.Fatal(err)
	}
	got := alice.expect(t, "binary value", isMessageFrom(topicJID))
	if got.Payload.Type != "application/cbor" || strings.TrimSpace(got.Payload.Data) != "/wAB" {
		t.Errorf("binary payload %+v", got.Payload)
	}
	typ, inner := alice.iq(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`)
	if typ != "result" || !strings.Contains(inner, topicJID) || !strings.Contains(inner, `subscription="to"`) && !strings.Contains(inner, `subscription='to'`) {
		t.Errorf("roster: %s %s", typ, inner)
	}
}

func TestChatMessagePublishes(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	got := make(chan *broker.Envelope, 1)
	sub, err := h.bus.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"lights/+/set"}}, func(_ context.Context, e *broker.Envelope) error {
		got <- e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	alice := connect(t, h, "alice", "alicepw")
	alice.send(t, `<message to='lights.hall\2e1.set@topics.localhost' type='chat'><body>on</body></message>`)
	select {
	case e := <-got:
		if e.Topic != "lights/hall.1/set" || string(e.Payload) != "on" || e.Origin.Protocol != "xmpp" || e.Origin.Principal != "alice" || e.Origin.ClientID != alice.jid {
			t.Errorf("envelope %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no envelope on the bus")
	}
}

func TestPubSub(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	alice := connect(t, h, "alice", "alicepw")
	typ, out := alice.iq(t, `<iq type='set' id='s1' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='plant/+/moisture' jid='alice@localhost'/></pubsub></iq>`)
	if typ != "result" || !strings.Contains(out, "subscribed") {
		t.Fatalf("subscribe: %s %s", typ, out)
	}
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "plant/fern/moisture", Payload: []byte("42"), ContentType: "text/plain", Retain: true}); err != nil {
		t.Fatal(err)
	}
	ev := alice.expect(t, "event", func(v rx) bool { return v.XMLName.Local == "message" && v.From == "pubsub.localhost" })
	if !strings.Contains(ev.Inner, "plant/+/moisture") || !strings.Contains(ev.Inner, `topic="plant/fern/moisture">42</text>`) {
		t.Errorf("event: %s", ev.Inner)
	}
	got := make(chan *broker.Envelope, 1)
	sub, err := h.bus.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"plant/rose/water"}}, func(_ context.Context, e *broker.Envelope) error {
		got <- e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	typ, out = alice.iq(t, `<iq type='set' id='p1' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='plant/rose/water'><item><payload xmlns='urn:hub:payload:0' type='application/json'>eyJtbCI6MTB9</payload></item></publish></pubsub></iq>`)
	if typ != "result" {
		t.Fatalf("publish: %s %s", typ, out)
	}
	select {
	case e := <-got:
		if string(e.Payload) != `{"ml":10}` || e.ContentType != "application/json" || e.Origin.Principal != "alice" {
			t.Errorf("envelope %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish did not reach the bus")
	}
	typ, out = alice.iq(t, `<iq type='get' id='i1' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='plant/fern/moisture'/></pubsub></iq>`)
	if typ != "result" || !strings.Contains(out, `type="text/plain" topic="plant/fern/moisture">42</text>`) {
		t.Errorf("items: %s %s", typ, out)
	}
	typ, _ = alice.iq(t, `<iq type='set' id='p2' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='a/+/b'><item/></publish></pubsub></iq>`)
	if typ != "error" {
		t.Errorf("publish to a filter: %s, want error", typ)
	}
	typ, out = alice.iq(t, `<iq type='get' id='d2' to='pubsub.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if typ != "result" || !strings.Contains(out, "http://jabber.org/protocol/pubsub") {
		t.Errorf("disco#info: %s %s", typ, out)
	}
}

func TestOfflineDelivery(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	topicJID := "door.state@topics.localhost"
	func() {
		alice := connect(t, h, "alice", "alicepw")
		alice.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
		alice.expect(t, "subscribed", func(v rx) bool { return v.Type == "subscribed" && v.From == topicJID })
		_ = alice.s.Close()
	}()
	// Wait for the hub to see alice go.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.a.sessionsOf("alice@localhost")) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range []string{"open", "closed", "locked"} {
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "door/state", Payload: []byte(p), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	bob := connect(t, h, "bob", "bobpw")
	bob.send(t, `<message to='alice@localhost' type='chat'><body>while you were out</body></message>`)
	time.Sleep(100 * time.Millisecond)
	alice := connect(t, h, "alice", "alicepw")
	var topicMsgs []string
	chat := ""
	for len(topicMsgs) < 3 || chat == "" {
		v := alice.expect(t, "offline messages", func(v rx) bool { return v.XMLName.Local == "message" && v.Body != "" })
		switch {
		case v.From == topicJID:
			topicMsgs = append(topicMsgs, v.Body)
		case strings.HasPrefix(v.From, "bob@localhost"):
			chat = v.Body
		}
	}
	if strings.Join(topicMsgs, ",") != "open,closed,locked" {
		t.Errorf("queued topic messages %q, want open, closed, locked in order", topicMsgs)
	}
	if chat != "while you were out" {
		t.Errorf("offline chat %q", chat)
	}
}

func TestTopicSubscriptionRefused(t *testing.T) {
	h := startHub(t, nil)
	alice := connect(t, h, "alice", "alicepw")
	jid := TopicToJID("$hub/secret", "topics.localhost")
	alice.send(t, `<presence to='`+jid+`' type='subscribe'/>`)
	alice.expect(t, "unsubscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "unsubscribed" && v.From == jid })
	alice.send(t, `<message to='`+jid+`' type='chat' id='m1'><body>x</body></message>`)
	alice.expect(t, "forbidden", func(v rx) bool {
		return v.XMLName.Local == "message" && v.Type == "error" && strings.Contains(v.Inner, "forbidden")
	})
}

func TestTopicDisco(t *testing.T) {
	h := startHub(t, nil)
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "weather/Outside", Payload: []byte("7"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	alice := connect(t, h, "alice", "alicepw")
	tests := []struct {
		name, iq, want string
	}{
		{"topic service items", `<iq type='get' id='1' to='topics.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`, `weather.\4futside@topics.localhost`},
		{"topic service info", `<iq type='get' id='2' to='topics.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, `category="component"`},
		{"topic info", `<iq type='get' id='3' to='weather.\4futside@topics.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, `category="pubsub"`},
		{"topic ping", `<iq type='get' id='4' to='weather.\4futside@topics.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, `type="result"`},
		{"pubsub items", `<iq type='get' id='5' to='pubsub.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`, `node="weather/Outside"`},
		{"server info", `<iq type='get' id='6' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, `urn:xmpp:sm:3`},
		{"unknown iq", `<iq type='get' id='7' to='localhost'><query xmlns='jabber:iq:version'/></iq>`, `service-unavailable`},
		{"remote domain", `<iq type='get' id='8' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>`, `remote-server-not-found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, out := alice.iq(t, tt.iq)
			if !strings.Contains(out, tt.want) {
				t.Errorf("reply %s lacks %s", out, tt.want)
			}
		})
	}
}

func TestTLSRequiredOffLoopback(t *testing.T) {
	h := startHub(t, func(c *Config) { c.Addr = "0.0.0.0:0" })
	_, port, _ := strings.Cut(h.addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(h.addr, ":")
	}
	h.addr = "127.0.0.1:" + port
	c := rawStream(t, h.addr)
	_, _ = c.Write([]byte(testHeader + `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>`))
	out := readAll(t, c)
	if !strings.Contains(out, "<required") || strings.Contains(out, "<mechanisms") || !strings.Contains(out, "policy-violation") {
		t.Errorf("pre-TLS stream off loopback: %s", out)
	}
	alice := connect(t, h, "alice", "alicepw")
	typ, _ := alice.iq(t, `<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if typ != "result" {
		t.Errorf("ping after STARTTLS: %s", typ)
	}
}

func TestOfflineLimit(t *testing.T) {
	h := startHub(t, func(c *Config) { c.OfflineLimit = 2 })
	alice := connect(t, h, "alice", "alicepw")
	for i := range 3 {
		alice.send(t, `<message to='bob@localhost' type='chat' id='m`+string(rune('0'+i))+`'><body>x</body></message>`)
	}
	got := alice.expect(t, "resource-constraint", func(v rx) bool { return v.Type == "error" })
	if got.ID != "m2" || !strings.Contains(got.Inner, "resource-constraint") {
		t.Errorf("error %+v", got)
	}
	alice.send(t, `<message to='nobody@localhost' type='chat' id='n'><body>x</body></message>`)
	if got := alice.expect(t, "unknown user", func(v rx) bool { return v.Type == "error" }); got.ID != "n" || !strings.Contains(got.Inner, "service-unavailable") {
		t.Errorf("error for unknown user: %+v", got)
	}
}

func TestUserSubscriptions(t *testing.T) {
	h := startHub(t, nil)
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	alice.iq(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	bob.iq(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	alice.send(t, `<presence to='bob@localhost' type='subscribe'/>`)
	bob.expect(t, "subscription request", func(v rx) bool {
		return v.XMLName.Local == "presence" && v.Type == "subscribe" && v.From == "alice@localhost"
	})
	bob.send(t, `<presence to='alice@localhost' type='subscribed'/>`)
	alice.expect(t, "approval", func(v rx) bool { return v.Type == "subscribed" && v.From == "bob@localhost" })
	alice.expect(t, "bob's presence", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "" && v.From == bob.jid })
	_, out := alice.iq(t, `<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>`)
	if !strings.Contains(out, `jid="bob@localhost"`) || !strings.Contains(out, `subscription="to"`) {
		t.Errorf("alice's roster: %s", out)
	}
	_, out = bob.iq(t, `<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>`)
	if !strings.Contains(out, `jid="alice@localhost"`) || !strings.Contains(out, `subscription="from"`) {
		t.Errorf("bob's roster: %s", out)
	}
	// bob's presence changes reach alice; removing bob cancels it.
	bob.send(t, `<presence><show>away</show></presence>`)
	alice.expect(t, "presence update", func(v rx) bool { return v.From == bob.jid && strings.Contains(v.Inner, "away") })
	typ, _ := alice.iq(t, `<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`)
	if typ != "result" {
		t.Fatalf("remove: %s", typ)
	}
	bob.expect(t, "unsubscribe", func(v rx) bool { return v.Type == "unsubscribe" && v.From == "alice@localhost" })
	_, out = bob.iq(t, `<iq type='get' id='r3'><query xmlns='jabber:iq:roster'/></iq>`)
	if !strings.Contains(out, `subscription="none"`) {
		t.Errorf("bob's roster after removal: %s", out)
	}
}
