package xmpp

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hubsmith/hub/store"
)

// splitJID splits a JID into its parts (no PRECIS checks: routing compares
// the parts as they are).
func splitJID(j string) (local, domain, resource string) {
	bare, resource, _ := strings.Cut(j, "/")
	if at := strings.IndexByte(bare, '@'); at >= 0 {
		return bare[:at], strings.ToLower(bare[at+1:]), resource
	}
	return "", strings.ToLower(bare), resource
}

func (a *Adapter) topicDomain() string   { return "topics." + a.cfg.Domain }
func (a *Adapter) pubsubDomain() string  { return "pubsub." + a.cfg.Domain }
func (a *Adapter) devicesDomain() string { return "devices." + a.cfg.Domain }

// register adds a bound session under a free resource and returns it.
func (a *Adapter) register(s *session, res string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.sessions[s.bare]
	if m == nil {
		m = map[string]*session{}
		a.sessions[s.bare] = m
	}
	if _, taken := m[res]; taken {
		res += "-" + randomID()[:6]
	}
	m[res] = s
	return res
}

// unregister removes a terminated session from the routing tables.
func (a *Adapter) unregister(s *session, wasAvailable bool) {
	a.mu.Lock()
	if m := a.sessions[s.bare]; m != nil && m[s.resource] == s {
		a.cfg.Auth.Limits().ReleaseResource(s.bare, s.resource)
		delete(m, s.resource)
		if len(m) == 0 {
			delete(a.sessions, s.bare)
		}
	}
	if s.sm != nil {
		delete(a.resume, s.sm.id)
	}
	a.mu.Unlock()
	a.carbons.forget(s)
	a.cl.left(s)
	a.xfer.peerGone(s.jid)
	if wasAvailable {
		a.broadcastPresence(s, newElement(nsClient, "presence", "type", "unavailable", "from", s.jid))
		a.availabilityChanged(s)
	}
}

// sessionsOf returns the bound sessions of a bare JID.
func (a *Adapter) sessionsOf(bare string) []*session {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*session, 0, len(a.sessions[bare]))
	for _, s := range a.sessions[bare] {
		out = append(out, s)
	}
	return out
}

// availableOf returns the sessions of a bare JID that sent available presence.
func (a *Adapter) availableOf(bare string) []*session {
	var out []*session
	for _, s := range a.sessionsOf(bare) {
		if s.isAvailable() {
			out = append(out, s)
		}
	}
	return out
}

// sessionOf returns the session of a full JID.
func (a *Adapter) sessionOf(bare, resource string) *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[bare][resource]
}

// shutdownSessions ends every session once the connections are closed.
func (a *Adapter) shutdownSessions() {
	a.mu.Lock()
	var all []*session
	for _, m := range a.sessions {
		for _, s := range m {
			all = append(all, s)
		}
	}
	a.mu.Unlock()
	for _, s := range all {
		s.terminate()
	}
	a.timers.Wait()
	a.topics.shutdown()
}

// availabilityChanged reacts to a session of a user becoming available or
// not: topic subscriptions attach while the user has an available
// resource, and a device's presence goes to the presence sink.
//
// The changes of one user are taken one at a time (userLock), each
// comparing the resources available then with whether the subscriptions
// are attached: two resources arriving at once, each counting the other,
// must still attach them once (a count of "exactly one" saw two for both
// and attached none), and one leaving while another arrives leaves them
// attached.
func (a *Adapter) availabilityChanged(s *session) {
	mu := a.topics.userLock(s.bare)
	mu.Lock()
	avail := a.availableOf(s.bare)
	online := len(avail) > 0
	change := online != a.topics.attached(s.bare)
	if change {
		if online {
			a.topics.userOnline(clientPeer{avail[0]})
		} else {
			a.topics.userOffline(s.bare)
		}
	}
	mu.Unlock()
	if change {
		a.mu.Lock()
		sink := a.sink
		a.mu.Unlock()
		if sink != nil && s.role == "device" {
			sink.DevicePresence(context.WithoutCancel(a.ctx), s.user, "xmpp", online, time.Now())
		}
	}
}

// route delivers a stanza a client sent (from already stamped).
func (a *Adapter) route(s *session, el *element) {
	to := el.AttrValue("to")
	local, domain, res := splitJID(to)
	typ := el.AttrValue("type")
	a.carbonSent(s, el) // carbons.go
	switch {
	case to == "" || (local == "" && res == "" && domain == a.cfg.Domain) ||
		(el.Name.Local == "iq" && local == s.user && domain == a.cfg.Domain && res == ""):
		a.handleServer(s, el)
	case domain == a.topicDomain() || a.rules.hasDomain(domain):
		a.topics.handle(clientPeer{s}, el, local, domain)
	case domain == a.pubsubDomain() && local == "" && res == "":
		a.handlePubSub(s, el)
	case domain == a.proxyDomain() && a.proxy != nil && local == "" && res == "":
		a.handleProxy(clientPeer{s}, el)
	case domain == a.uploadDomain() && a.cfg.Files != nil && local == "" && res == "":
		a.handleUpload(clientPeer{s}, el)
	case domain == a.devicesDomain() && a.cfg.DeviceCommand != nil:
		a.handleDeviceJID(clientPeer{s}, el, local)
	case domain == a.cfg.Domain && local != "":
		a.routeLocal(s, el, local+"@"+domain, res)
	case typ == "error" || typ == "result":
	default:
		a.reply(s, errorReply(el, "cancel", "remote-server-not-found"))
	}
}

// reply sends an answer to the session unless the stanza was an error.
func (a *Adapter) reply(s *session, el *element) {
	_, _ = s.send(el)
}

// handleServer handles stanzas addressed to the server itself (or to the
// user's own bare JID, for iqs).
func (a *Adapter) handleServer(s *session, el *element) {
	switch el.Name.Local {
	case "presence":
		if el.AttrValue("to") != "" {
			return
		}
		a.handleOwnPresence(s, el)
	case "iq":
		a.handleIQ(s, el)
	case "message":
		// Messages to the server are not kept.
	}
}

// handleOwnPresence handles broadcast presence (no 'to').
func (a *Adapter) handleOwnPresence(s *session, el *element) {
	switch el.AttrValue("type") {
	case "":
		a.offlineMu.Lock()
		s.mu.Lock()
		first := !s.available
		s.available, s.presence = true, el.Copy()
		s.mu.Unlock()
		a.offlineMu.Unlock()
		a.broadcastPresence(s, el)
		if first {
			a.sendContactPresences(s)
			a.availabilityChanged(s)
			a.deliverOffline(s)
		}
	case "unavailable":
		s.mu.Lock()
		was := s.available
		s.available, s.presence = false, nil
		s.mu.Unlock()
		a.broadcastPresence(s, el)
		if was {
			a.availabilityChanged(s)
		}
	}
}

// broadcastPresence sends a user's presence to the contacts subscribed to
// it and to the user's other available resources.
func (a *Adapter) broadcastPresence(s *session, el *element) {
	ctx := context.WithoutCancel(a.ctx)
	items, err := a.rosterList(ctx, s.user)
	if err != nil {
		a.log.Warn("xmpp: roster for presence broadcast", "user", s.user, "err", err)
	}
	for _, it := range items {
		if it.Subscription != "from" && it.Subscription != "both" {
			continue
		}
		for _, c := range a.availableOf(it.JID) {
			p := el.Copy()
			p.SetAttr("to", c.jid)
			_, _ = c.send(p)
		}
		if _, domain, _ := splitJID(it.JID); domain == a.cfg.Domain {
			a.cl.publish(it.JID, frame{Kind: framePresence, Stanza: el.String()})
		}
	}
	for _, c := range a.availableOf(s.bare) {
		if c != s {
			p := el.Copy()
			p.SetAttr("to", c.jid)
			_, _ = c.send(p)
		}
	}
	a.cl.publish(s.bare, frame{Kind: framePresence, Stanza: el.String()})
}

// sendContactPresences sends a newly available session the presence of
// the contacts it is subscribed to (the server's answer to its probes).
func (a *Adapter) sendContactPresences(s *session) {
	ctx := context.WithoutCancel(a.ctx)
	items, _ := a.rosterList(ctx, s.user)
	// The topic and device JIDs' presences are the burst: thousands for a
	// big roster, paced by the client's acknowledgements (smbound.go).
	var burst []*element
	defer func() { s.sendBurst(burst) }()
	for _, it := range items {
		if it.Subscription != "to" && it.Subscription != "both" {
			continue
		}
		_, domain, _ := splitJID(it.JID)
		if domain == a.topicDomain() || a.rules.hasDomain(domain) {
			burst = append(burst, newElement(nsClient, "presence", "from", it.JID, "to", s.jid))
			continue
		}
		for _, c := range a.availableOf(it.JID) {
			c.mu.Lock()
			p := c.presence
			c.mu.Unlock()
			if p != nil {
				p = p.Copy()
				p.SetAttr("to", s.jid)
				_, _ = s.send(p)
			}
		}
		if domain == a.cfg.Domain {
			a.cl.publish(it.JID, frame{Kind: frameProbe, From: s.jid})
		}
	}
	a.cl.publish(s.bare, frame{Kind: frameProbe, From: s.jid})
	for _, c := range a.availableOf(s.bare) {
		c.mu.Lock()
		p := c.presence
		c.mu.Unlock()
		if c != s && p != nil {
			p = p.Copy()
			p.SetAttr("to", s.jid)
			_, _ = s.send(p)
		}
	}
}

// routeLocal delivers a stanza to a user of this server.
func (a *Adapter) routeLocal(s *session, el *element, bare, res string) {
	typ := el.AttrValue("type")
	switch el.Name.Local {
	case "presence":
		switch typ {
		case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
			a.handleSubscription(s, el, bare)
			return
		case "probe":
			return
		}
		targets := a.availableOf(bare)
		if res != "" {
			targets = nil
			if t := a.sessionOf(bare, res); t != nil {
				targets = append(targets, t)
			} else {
				a.cl.sendFull(bare, res, el)
			}
		} else {
			a.cl.publish(bare, frame{Kind: frameDeliver, Stanza: el.String()})
		}
		for _, t := range targets {
			_, _ = t.send(el)
		}
	case "message":
		if res != "" {
			if t := a.sessionOf(bare, res); t != nil {
				_, _ = t.send(el)
				a.carbonReceived(t, el) // carbons.go
				return
			}
			if a.cl.deliverFull(bare, res, el) {
				return
			}
		}
		if a.cl.toBare(bare, el) {
			return
		}
		a.offlineMu.Lock()
		targets := a.availableOf(bare)
		if len(targets) == 0 {
			var err error
			if typ == "" || typ == "chat" || typ == "normal" {
				err = a.storeOffline(context.WithoutCancel(a.ctx), bare, el)
			}
			a.offlineMu.Unlock()
			if typ == "" || typ == "chat" || typ == "normal" {
				if err != nil {
					a.log.Info("xmpp: offline message not kept", "to", bare, "err", err)
					if errors.Is(err, store.ErrNotFound) {
						a.reply(s, errorReply(el, "cancel", "service-unavailable"))
					} else {
						a.reply(s, errorReply(el, "wait", "resource-constraint"))
					}
				}
			}
			return
		}
		a.offlineMu.Unlock()
		for _, t := range targets {
			_, _ = t.send(el)
		}
	case "iq":
		if res != "" {
			if t := a.sessionOf(bare, res); t != nil {
				_, _ = t.send(el)
				return
			}
			if a.cl.deliverFull(bare, res, el) {
				return
			}
		}
		// A file for a user who is not there (or for a bare JID): the
		// hub takes it and sends a link (files.go).
		if a.handleTransfer(clientPeer{s}, el, a.userFileTarget(s, bare)) {
			return
		}
		if typ == "get" || typ == "set" {
			a.reply(s, errorReply(el, "cancel", "service-unavailable"))
		}
	}
}
