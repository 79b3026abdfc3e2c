package xmpp

import (
	"errors"

	"github.com/hubsmith/hub/adapters"
)

// This file applies the hub's limits (adapters.Limits) to XMPP: c2s
// connections (global and per address when accepted, per user once
// authenticated), bound resources per user, topic subscriptions per user
// and the length of a topic named by a PubSub node.

// errBindRefused: the bind was answered with an error; the stream goes on
// and the client may bind again.
var errBindRefused = errors.New("xmpp: bind refused")

// nsPubSubErrors qualifies XEP-0060's application-specific conditions.
const nsPubSubErrors = "http://jabber.org/protocol/pubsub#errors"

// limitStreamError is the stream error that ends a connection over a
// limit: <resource-constraint/> when the hub as a whole is full,
// <policy-violation/> for the per-address and per-user bounds, with the
// limit as text.
func limitStreamError(err error) *streamError {
	cond := "policy-violation"
	if errors.Is(err, adapters.ErrServerBusy) {
		cond = "resource-constraint"
	}
	return &streamError{Condition: cond, Text: err.Error()}
}

// checkLimits refuses, after the stream header, a connection that was
// over the global or per-address bound when accepted, and one whose user
// (once SASL succeeded) is over its bound of connections.
func (c *streamConn) checkLimits() error {
	if c.limitErr != nil {
		return limitStreamError(c.limitErr)
	}
	if c.user != "" {
		if err := c.limit.SetUser(c.user); err != nil {
			return limitStreamError(err)
		}
	}
	return nil
}

// refuseBind answers a bind over the user's bound of resources as
// Prosody's max_resources does (RFC 6120 7.6.2.1): <resource-constraint/>
// of type wait, with the limit as text.
func (c *streamConn) refuseBind(iq *element, err error) error {
	r := errorReply(iq, "wait", "resource-constraint")
	if e := r.Child(nsClient, "error"); e != nil {
		e.Add(newElement(nsStanzas, "text").AddText(err.Error()))
	}
	if werr := c.writeEl(r); werr != nil {
		return werr
	}
	c.a.log.Info("xmpp: bind refused", "user", c.user, "remote", c.raw.RemoteAddr().String(), "err", err)
	return errBindRefused
}

// subscriptionLimit is nil when bare may add the subscription key (a new
// one within the bound, or one it holds already), else
// adapters.ErrSubscriptionLimit.
func (t *topicService) subscriptionLimit(bare, key string) error {
	t.mu.Lock()
	held := t.subs[bare]
	_, has := held[key]
	n := len(held)
	t.mu.Unlock()
	if has {
		return nil
	}
	return t.a.cfg.Auth.Limits().CheckSubscriptions(n, 1)
}

// pubsubLimitError is XEP-0060's answer to a subscription over the
// bound (6.1.3): <policy-violation/> with <too-many-subscriptions/>.
func pubsubLimitError(iq *element, err error) *element {
	r := errorReply(iq, "wait", "policy-violation")
	if e := r.Child(nsClient, "error"); e != nil {
		e.Add(newElement(nsPubSubErrors, "too-many-subscriptions"), newElement(nsStanzas, "text").AddText(err.Error()))
	}
	return r
}

// unregisterOnly takes a session refused at bind out of the routing
// table (it was never announced).
func (a *Adapter) unregisterOnly(s *session, res string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m := a.sessions[s.bare]; m != nil && m[res] == s {
		delete(m, res)
		if len(m) == 0 {
			delete(a.sessions, s.bare)
		}
	}
}
