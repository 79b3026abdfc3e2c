package e2e

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
	"github.com/hubsmith/hub/xmpp"
)

// topicMessage matches a chat message from the topic JID with the body.
func topicMessage(from, body string) func(stanza) bool {
	return func(v stanza) bool { return v.XMLName.Local == "message" && v.From == from && v.Body == body }
}

// carbon returns the message forwarded in a <sent/> or <received/>
// carbon, flattened ("" when v is no such carbon).
func carbon(v stanza, kind string) string {
	if v.XMLName.Local != "message" {
		return ""
	}
	c, ok := stanzaChild(v, kind)
	if !ok || c.XMLName.Space != "urn:xmpp:carbons:2" {
		return ""
	}
	return flatten(c.Children)
}

// TestXMPPChatUserFeatures: no echo of a user's own topic message, XEP-0280
// carbons (sent, received, private, no-copy), XEP-0203 stamps on retained
// and queued deliveries, and PubSub payloads as JSON, text or base64.
func TestXMPPChatUserFeatures(t *testing.T) {
	h := hubtest.Start(t)
	xaddr := h.Addr(t, "xmpp")
	base := "http://" + h.Addr(t, "rest")
	const room = "room.chat@topics.localhost"

	phone := dialXMPP(t, xaddr, "alice", "alicepw")
	laptop := dialXMPP(t, xaddr, "alice", "alicepw")
	bob := dialXMPP(t, xaddr, "admin", "adminpw")
	if r := laptop.iq(t, `<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`); !strings.Contains(flatten(r.Children), `var="urn:xmpp:carbons:2"`) {
		t.Errorf("server disco#info lacks carbons: %s", flatten(r.Children))
	}
	if r := laptop.iq(t, `<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>`); r.Type != "result" {
		t.Fatalf("enable carbons: %s %s", r.Type, flatten(r.Children))
	}
	if r := laptop.iq(t, `<iq type='get'><enable xmlns='urn:xmpp:carbons:2'/></iq>`); r.Type != "error" {
		t.Errorf("carbons get: %s, want an error", r.Type)
	}
	phone.subscribeTopic(t, room)
	bob.subscribeTopic(t, room)

	// No echo: alice's own message reaches bob but not alice (any
	// resource); her laptop sees it as a sent carbon.
	phone.send(t, `<message type='chat' to='`+room+`'><body>hello from the phone</body></message>`)
	bob.expect(t, "alice's message", topicMessage(room, "hello from the phone"))
	sent := laptop.expect(t, "sent carbon", func(v stanza) bool { return carbon(v, "sent") != "" })
	if f := carbon(sent, "sent"); !strings.Contains(f, `<forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" type="chat" to="`+room+`"`) || !strings.Contains(f, "hello from the phone") || (sent.From != "alice@localhost" && sent.From != "") {
		t.Errorf("sent carbon from %s: %s", sent.From, f)
	}
	bob.send(t, `<message type='chat' to='`+room+`'><body>bob here</body></message>`)
	for _, c := range []*xmppClient{phone, laptop} {
		got := c.expect(t, "next topic message", func(v stanza) bool { return v.XMLName.Local == "message" && v.From == room })
		if got.Body != "bob here" {
			t.Errorf("alice's resource got %q first, want bob's message (no echo of her own)", got.Body)
		}
	}

	// Received carbons, and what is not copied.
	for _, tt := range []struct{ extra, body string }{
		{`<private xmlns='urn:xmpp:carbons:2'/>`, "private one"},
		{`<no-copy xmlns='urn:xmpp:hints'/>`, "no-copy one"},
		{``, "copied one"},
	} {
		bob.send(t, `<message type='chat' to='`+phone.jid()+`'><body>`+tt.body+`</body>`+tt.extra+`</message>`)
		phone.expect(t, "bob's direct message", func(v stanza) bool { return v.XMLName.Local == "message" && v.Body == tt.body })
	}
	got := laptop.expect(t, "received carbon", func(v stanza) bool { return carbon(v, "received") != "" })
	if f := carbon(got, "received"); !strings.Contains(f, "copied one") {
		t.Errorf("first received carbon: %s, want the copied one (private and no-copy are not copied)", f)
	}
	// Disabled: no more carbons (the next one after a marker would be it).
	if r := laptop.iq(t, `<iq type='set'><disable xmlns='urn:xmpp:carbons:2'/></iq>`); r.Type != "result" {
		t.Fatalf("disable carbons: %s", r.Type)
	}
	bob.send(t, `<message type='chat' to='`+phone.jid()+`'><body>after disable</body></message>`)
	phone.expect(t, "after disable", func(v stanza) bool { return v.Body == "after disable" })
	bob.send(t, `<message type='chat' to='`+laptop.jid()+`'><body>marker</body></message>`)
	if v := laptop.expect(t, "marker", func(v stanza) bool {
		return v.XMLName.Local == "message" && (v.Body == "marker" || carbon(v, "received") != "")
	}); v.Body != "marker" {
		t.Errorf("a carbon after disable: %s", flatten(v.Children))
	}

	// XEP-0203: the retained value on subscribe carries a stamp, a live
	// message none.
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/topics/home/temp?retain=true", "text/plain", "21.5"); code >= 300 {
		t.Fatalf("retain: %d %s", code, body)
	}
	const temp = "home.temp@topics.localhost"
	bob.send(t, `<presence type='subscribe' to='`+temp+`'/>`)
	v := bob.expect(t, "retained value", topicMessage(temp, "21.5"))
	if d, ok := stanzaChild(v, "delay"); !ok || attr(d, "from") != temp || !strings.HasPrefix(attr(d, "stamp"), "20") || !strings.HasSuffix(attr(d, "stamp"), "Z") {
		t.Errorf("retained value without a delay stamp: %s", flatten(v.Children))
	}
	httpDo(t, http.MethodPost, base+"/api/v1/topics/home/temp", "text/plain", "22")
	if v := bob.expect(t, "live value", topicMessage(temp, "22")); strings.Contains(flatten(v.Children), "<delay") {
		t.Errorf("live value with a delay stamp: %s", flatten(v.Children))
	}
	// Queued while away, stamped at login.
	_ = phone.s.Close()
	_ = laptop.s.Close()
	<-phone.done
	<-laptop.done
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/topics/room/chat?qos=1", "text/plain", "while you were away"); code >= 300 {
		t.Fatalf("publish: %d %s", code, body)
	}
	back := dialXMPP(t, xaddr, "alice", "alicepw")
	v = back.expect(t, "queued message", topicMessage(room, "while you were away"))
	if d, ok := stanzaChild(v, "delay"); !ok || attr(d, "from") != room {
		t.Errorf("queued message without a delay stamp: %s", flatten(v.Children))
	}

	// PubSub payloads and a JSON chat message.
	if r := bob.iq(t, `<iq type='set' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='lab/#' jid='admin@localhost'/></pubsub></iq>`); r.Type != "result" {
		t.Fatalf("pubsub subscribe: %s", flatten(r.Children))
	}
	for _, tt := range []struct{ topic, ctype, body, want string }{
		{"lab/json", "application/json", `{"t":1}`, `<json xmlns="urn:xmpp:json:0" topic="lab/json">{"t":1}</json>`},
		{"lab/text", "text/plain", "hi <there>", `<text xmlns="urn:hub:payload:0" type="text/plain" topic="lab/text">hi &lt;there&gt;</text>`},
		{"lab/bin", "application/octet-stream", "\x00\x01", `<payload xmlns="urn:hub:payload:0" type="application/octet-stream" topic="lab/bin">AAE=</payload>`},
	} {
		httpDo(t, http.MethodPost, base+"/api/v1/topics/"+tt.topic, tt.ctype, tt.body)
		ev := bob.expect(t, "event of "+tt.topic, func(v stanza) bool {
			return v.From == "pubsub.localhost" && strings.Contains(flatten(v.Children), `topic="`+tt.topic+`"`)
		})
		if f := xmlOf(ev); !strings.Contains(f, tt.want) {
			t.Errorf("%s: event %s, want %s", tt.topic, f, tt.want)
		}
	}
	bob.subscribeTopic(t, "lab.json@topics.localhost")
	httpDo(t, http.MethodPost, base+"/api/v1/topics/lab/json", "application/json", `{"t":1}`)
	if v := bob.expect(t, "JSON chat message", topicMessage("lab.json@topics.localhost", `{"t":1}`)); !strings.Contains(xmlOf(v), `<json xmlns="urn:xmpp:json:0">{"t":1}</json>`) {
		t.Errorf("JSON chat message without XEP-0335: %s", xmlOf(v))
	}
	// Publishing takes the same elements.
	if r := bob.iq(t, `<iq type='set' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='lab/in'><item><json xmlns='urn:xmpp:json:0'>{"n": 2}</json></item></publish></pubsub></iq>`); r.Type != "result" {
		t.Fatalf("publish json: %s", flatten(r.Children))
	}
	bob.expect(t, "the published JSON", func(v stanza) bool {
		return v.From == "pubsub.localhost" && strings.Contains(xmlOf(v), `<json xmlns="urn:xmpp:json:0" topic="lab/in">{"n": 2}</json>`)
	})
	if r := bob.iq(t, `<iq type='set' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='lab/in'><item><json xmlns='urn:xmpp:json:0'>{nope</json></item></publish></pubsub></iq>`); r.Type != "error" || !strings.Contains(flatten(r.Children), "does not hold JSON") {
		t.Errorf("publish of bad json: %s %s", r.Type, flatten(r.Children))
	}
}

// xmlOf is a stanza's children as XML, for comparing with the wire form.
func xmlOf(v stanza) string {
	var b strings.Builder
	var write func(ns []xmlNode)
	write = func(ns []xmlNode) {
		for _, n := range ns {
			b.WriteString("<" + n.XMLName.Local)
			if n.XMLName.Space != "" {
				b.WriteString(` xmlns="` + n.XMLName.Space + `"`)
			}
			for _, a := range n.Attrs {
				if a.Name.Local != "xmlns" {
					b.WriteString(" " + a.Name.Local + `="` + a.Value + `"`)
				}
			}
			b.WriteString(">" + strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(n.Text))
			write(n.Children)
			b.WriteString("</" + n.XMLName.Local + ">")
		}
	}
	write(v.Children)
	return b.String()
}

// TestReloadJIDRules: a reload applies changed JID rules to new requests
// while connected clients stay; a bad rule is refused and the running
// ones kept.
func TestReloadJIDRules(t *testing.T) {
	var mu sync.Mutex
	rules := []xmpp.JIDRule{{Topic: "sensors/{room}/temp", JID: "{room}-temp@sensors.{domain}"}}
	h := hubtest.Start(t, func(c *gateway.Config) { c.XMPP.JIDRules = rules })
	base := h.Config
	h.SetConfigSource(func() (gateway.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		c := base
		c.XMPP.JIDRules = rules
		return c, nil
	})
	rest := "http://" + h.Addr(t, "rest")
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "admin", "adminpw")
	alice.subscribeTopic(t, "kitchen-temp@sensors.localhost")

	mu.Lock()
	rules = []xmpp.JIDRule{{Topic: "rooms/{room}/t", JID: "{room}-t@rooms.{domain}"}}
	mu.Unlock()
	s, b := httpAsBody(t, http.MethodPost, rest+"/api/v1/admin/reload", "admin", "adminpw", "")
	if s != http.StatusOK || !strings.Contains(b, "xmpp.jid_rules: 1 rule(s)") || strings.Contains(b, "next start") {
		t.Fatalf("reload: %d %s", s, b)
	}
	if r := alice.iq(t, `<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`); r.Type != "result" {
		t.Fatalf("the connected client after the reload: %s", r.Type)
	}
	alice.subscribeTopic(t, "kitchen-t@rooms.localhost")
	httpDo(t, http.MethodPost, rest+"/api/v1/topics/rooms/kitchen/t", "text/plain", "19")
	alice.expect(t, "message through the new rule", topicMessage("kitchen-t@rooms.localhost", "19"))
	if r := alice.iq(t, `<iq type='get' to='kitchen-temp@sensors.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`); r.Type != "error" {
		t.Errorf("the removed rule's JID still answers: %s", flatten(r.Children))
	}
	if r := alice.iq(t, `<iq type='get' to='rooms.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`); r.Type != "result" {
		t.Errorf("the new rule's domain: %s %s", r.Type, flatten(r.Children))
	}

	mu.Lock()
	rules = []xmpp.JIDRule{{Topic: "x/{a}/{a}", JID: "{a}@bad.{domain}"}}
	mu.Unlock()
	if s, b := httpAsBody(t, http.MethodPost, rest+"/api/v1/admin/reload", "admin", "adminpw", ""); s != http.StatusBadRequest || !strings.Contains(b, "running configuration is kept") {
		t.Fatalf("reload of a bad rule: %d %s", s, b)
	}
	httpDo(t, http.MethodPost, rest+"/api/v1/topics/rooms/kitchen/t", "text/plain", "20")
	alice.expect(t, "the kept rule", topicMessage("kitchen-t@rooms.localhost", "20"))
}
