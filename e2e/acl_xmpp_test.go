package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestACLDecisionsXMPP is the ACL table's XMPP c2s column: the same hub
// (listeners on 0.0.0.0, reached through 127.0.0.1), principals and
// actions as TestACLDecisions, through a chat message to the topic JID
// (publish), XEP-0060 items of the topic's node (read) and an XEP-0050
// command to the device's JID (command). Anonymous clients (SASL
// ANONYMOUS) and administration, which XMPP has no stanza for, are not in
// this column.
func TestACLDecisionsXMPP(t *testing.T) {
	h, _ := startACLHub(t)
	xmppAddr := loopback(t, h.Addr(t, "xmpp"))
	observer := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "acl-xmpp-observer", "admin", "adminpw", true)
	observer.subscribe(t, "#", 1)
	decisions := 0
	for _, p := range aclPrincipals {
		if p.user == "" {
			continue
		}
		xc := dialXMPPSilent(t, xmppAddr, p.user, p.pass)
		for i, a := range aclActions {
			want := a.allow[p.name]
			check := func(what string, got bool) {
				t.Helper()
				decisions++
				if got != want {
					t.Errorf("xmpp / %s / %s (%s): allowed %v, want %v", p.name, a.name, what, got, want)
				}
			}
			id := fmt.Sprintf("%s-%d", p.user, i)
			switch a.kind {
			case "publish":
				jid := topicJID(a.topic)
				payload := "xmpp-" + id
				xc.send(t, `<message type='chat' id='`+id+`' to='`+jid+`'><body>`+payload+`</body></message>`)
				check("chat to "+jid, xmppPublished(t, xc, observer, jid, payload))
			case "read":
				typ := xmppIQType(t, xc, id, `<iq type='get' id='`+id+`' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='`+a.topic+`'/></pubsub></iq>`)
				check("pubsub items", typ == "result")
			case "command":
				typ := xmppIQType(t, xc, id, `<iq type='set' id='`+id+`' to='lamp1@devices.localhost'><command xmlns='http://jabber.org/protocol/commands' node='toggle' action='execute'/></iq>`)
				check("ad-hoc command", typ == "result")
			}
		}
	}
	t.Logf("%d XMPP decisions checked", decisions)
}

// topicJID is the default JID of a topic (no '.' or escapes in the
// table's topics).
func topicJID(topic string) string {
	return strings.ReplaceAll(topic, "/", ".") + "@topics.localhost"
}

// xmppPublished waits for a chat message's fate: the payload reaching the
// bus (the MQTT observer) or an error from the topic JID.
func xmppPublished(t *testing.T, xc *xmppClient, observer *mqttClient, jid, payload string) bool {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-observer.msgs:
			if m.Payload == payload {
				return true
			}
		case v := <-xc.in:
			if v.XMLName.Local == "message" && v.Type == "error" && v.From == jid {
				return false
			}
		case <-deadline:
			t.Fatalf("chat to %s: neither delivered nor refused within %v", jid, wait)
		}
	}
}

// xmppIQType sends an iq and returns the type of its answer.
func xmppIQType(t *testing.T, xc *xmppClient, id, raw string) string {
	t.Helper()
	xc.send(t, raw)
	v := xc.expect(t, "iq "+id, func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == id })
	return v.Type
}
