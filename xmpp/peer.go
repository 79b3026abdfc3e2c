package xmpp

import (
	"context"

	"github.com/hubsmith/hub/adapters"
)

// clientPeer is a c2s session as the user side of topic conversations.
type clientPeer struct{ s *session }

func (c clientPeer) bareJID() string { return c.s.bare }
func (c clientPeer) fullJID() string { return c.s.jid }
func (c clientPeer) subID() string   { return c.s.user }
func (c clientPeer) remote() string  { return c.s.remote }
func (c clientPeer) online() bool    { return len(c.s.a.availableOf(c.s.bare)) > 0 }

func (c clientPeer) principal() adapters.Principal { return c.s.principal() }

func (c clientPeer) qos() byte {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.sm != nil {
		return 1
	}
	return 0
}

func (c clientPeer) send(el *element) error {
	if el.AttrValue("to") == c.s.bare && el.Name.Local != "presence" {
		el.SetAttr("to", c.s.jid)
	}
	_, err := c.s.send(el)
	return err
}

func (c clientPeer) rosterSet(jid, subscription string) {
	ctx := context.WithoutCancel(c.s.a.ctx)
	if subscription == "" {
		_ = c.s.a.rosterDelete(ctx, c.s.user, jid)
		return
	}
	it, _, err := c.s.a.rosterGet(ctx, c.s.user, jid)
	if err != nil {
		return
	}
	it.Subscription, it.Ask = subscription, ""
	_ = c.s.a.rosterPut(ctx, c.s.user, it)
}

// principal returns the session's principal for ACL checks.
func (s *session) principal() adapters.Principal {
	if s.anon {
		p, _ := s.a.cfg.Auth.Anonymous(s.a.anonymous) // the listener let it in
		return p
	}
	return adapters.Principal{Name: s.user, Role: s.role}
}
