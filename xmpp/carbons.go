package xmpp

import (
	"strings"
	"sync"
)

// XEP-0280 message carbons: a resource that enabled them gets a copy of
// the chat messages its user's other resources send (<sent/>) and of
// those addressed to another resource's full JID (<received/>), each
// wrapped in an XEP-0297 <forwarded/>. A message with <private/> or an
// XEP-0334 <no-copy/> hint is not copied. Messages to the bare JID already
// reach every available resource, topic messages included, so they are
// not copied again.

const (
	nsCarbons = "urn:xmpp:carbons:2"
	nsHints   = "urn:xmpp:hints"
)

// carbonSet holds the sessions that enabled carbons; its zero value is
// ready.
type carbonSet struct {
	mu sync.Mutex
	on map[*session]bool
}

func (c *carbonSet) set(s *session, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !on {
		delete(c.on, s)
		return
	}
	if c.on == nil {
		c.on = map[*session]bool{}
	}
	c.on[s] = true
}

func (c *carbonSet) enabled(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on[s]
}

// forget drops a session that ended.
func (c *carbonSet) forget(s *session) { c.set(s, false) }

// handleCarbons answers <enable/> and <disable/> (XEP-0280 §4).
func (a *Adapter) handleCarbons(s *session, iq, q *element) {
	if iq.AttrValue("type") != "set" || (q.Name.Local != "enable" && q.Name.Local != "disable") {
		a.reply(s, errorReply(iq, "modify", "bad-request"))
		return
	}
	a.carbons.set(s, q.Name.Local == "enable")
	a.reply(s, resultOf(iq))
}

// carbonEligible says whether a message is copied (XEP-0280 §6): chat,
// or normal with a body; not errors, groupchat or headlines, not a carbon
// itself, not marked private or no-copy.
func carbonEligible(el *element) bool {
	if el.Name.Local != "message" {
		return false
	}
	switch el.AttrValue("type") {
	case "chat":
	case "", "normal":
		if el.Child("", "body") == nil {
			return false
		}
	default:
		return false
	}
	for _, c := range el.Elements() {
		switch {
		case c.Name.Space == nsCarbons: // <private/>, or a <sent/>/<received/> already
			return false
		case c.Name.Space == nsHints && (c.Name.Local == "no-copy"):
			return false
		}
	}
	return true
}

// carbonSent copies a message s sent to the user's other resources that
// enabled carbons (not for a message to the user's own bare JID, which
// they receive anyway).
func (a *Adapter) carbonSent(s *session, el *element) {
	if !carbonEligible(el) {
		return
	}
	to := el.AttrValue("to")
	if b, _, _ := strings.Cut(to, "/"); b == s.bare || to == "" {
		return
	}
	a.sendCarbons(s, el, "sent")
}

// carbonReceived copies a message delivered to the full JID of t to t's
// user's other resources that enabled carbons.
func (a *Adapter) carbonReceived(t *session, el *element) {
	if carbonEligible(el) {
		a.sendCarbons(t, el, "received")
	}
}

func (a *Adapter) sendCarbons(except *session, el *element, kind string) {
	for _, c := range a.availableOf(except.bare) {
		if c == except || !a.carbons.enabled(c) {
			continue
		}
		_, _ = c.send(carbonOf(except, el, kind, c.jid))
	}
	if a.cl.elsewhere(except.bare) { // the resources on other hubs (cluster_fanout.go)
		a.cl.carbon(except, carbonOf(except, el, kind, ""))
	}
}

// carbonOf wraps el in a carbon of kind for the resource to ("": set by
// the hub that delivers it).
func carbonOf(except *session, el *element, kind, to string) *element {
	m := newElement(nsClient, "message", "from", except.bare, "type", el.AttrValue("type"))
	if to != "" {
		m.SetAttr("to", to)
	}
	return m.Add(newElement(nsCarbons, kind).Add(newElement(nsForward, "forwarded").Add(el.Copy())))
}
