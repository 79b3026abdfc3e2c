package xmpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// rosterItem is one contact in a user's roster (RFC 6121 2.1), stored as
// JSON in the KV bucket "xmpp-roster:{user}" under the contact's bare JID.
type rosterItem struct {
	JID          string   `json:"jid"`
	Name         string   `json:"name,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Subscription string   `json:"subscription"` // none, to, from, both
	Ask          string   `json:"ask,omitempty"`
}

func rosterBucket(user string) string { return "xmpp-roster:" + user }

func (a *Adapter) rosterList(ctx context.Context, user string) ([]rosterItem, error) {
	kvs, err := a.cfg.Store.KVList(ctx, rosterBucket(user))
	if err != nil {
		return nil, fmt.Errorf("xmpp: roster of %q: %w", user, err)
	}
	out := make([]rosterItem, 0, len(kvs))
	for _, kv := range kvs {
		var it rosterItem
		if err := json.Unmarshal(kv.Value, &it); err != nil {
			continue
		}
		out = append(out, it)
	}
	return out, nil
}

func (a *Adapter) rosterGet(ctx context.Context, user, jid string) (rosterItem, bool, error) {
	v, err := a.cfg.Store.KVGet(ctx, rosterBucket(user), jid)
	if errors.Is(err, store.ErrNotFound) {
		return rosterItem{JID: jid, Subscription: "none"}, false, nil
	}
	if err != nil {
		return rosterItem{}, false, fmt.Errorf("xmpp: roster item %q of %q: %w", jid, user, err)
	}
	var it rosterItem
	if err := json.Unmarshal(v, &it); err != nil {
		return rosterItem{JID: jid, Subscription: "none"}, false, nil
	}
	return it, true, nil
}

// rosterPut stores an item and pushes it to the user's interested resources.
func (a *Adapter) rosterPut(ctx context.Context, user string, it rosterItem) error {
	b, err := json.Marshal(it)
	if err != nil {
		return fmt.Errorf("xmpp: roster item: %w", err)
	}
	if err := a.cfg.Store.KVPut(ctx, rosterBucket(user), it.JID, b); err != nil {
		return fmt.Errorf("xmpp: store roster item %q of %q: %w", it.JID, user, err)
	}
	a.rosterPush(user, it)
	return nil
}

func (a *Adapter) rosterDelete(ctx context.Context, user, jid string) error {
	if err := a.cfg.Store.KVDelete(ctx, rosterBucket(user), jid); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("xmpp: delete roster item %q of %q: %w", jid, user, err)
	}
	a.rosterPush(user, rosterItem{JID: jid, Subscription: "remove"})
	return nil
}

func (it rosterItem) element() *element {
	e := newElement(nsRoster, "item", "jid", it.JID, "name", it.Name, "subscription", it.Subscription, "ask", it.Ask)
	for _, g := range it.Groups {
		e.Add(newElement(nsRoster, "group").AddText(g))
	}
	return e
}

// rosterPush sends a roster push (RFC 6121 2.1.6) to the user's resources
// that requested the roster.
func (a *Adapter) rosterPush(user string, it rosterItem) {
	bare := user + "@" + a.cfg.Domain
	for _, s := range a.sessionsOf(bare) {
		s.pushRoster(it)
	}
	a.cl.publish(bare, frame{Kind: framePush, Item: &it})
}

// pushRoster sends the session a roster push if it requested the roster.
func (s *session) pushRoster(it rosterItem) {
	s.mu.Lock()
	interested := s.interested
	s.mu.Unlock()
	if interested {
		_, _ = s.send(newElement(nsClient, "iq", "type", "set", "id", "push"+randomID()[:8], "to", s.jid).Add(
			newElement(nsRoster, "query").Add(it.element())))
	}
}

// handleRoster handles roster get and set (RFC 6121 2.2-2.5).
func (a *Adapter) handleRoster(s *session, iq *element, q *element) {
	ctx := context.WithoutCancel(a.ctx)
	switch iq.AttrValue("type") {
	case "get":
		items, err := a.rosterList(ctx, s.user)
		if err != nil {
			a.reply(s, errorReply(iq, "wait", "internal-server-error"))
			return
		}
		query := newElement(nsRoster, "query")
		for _, it := range items {
			query.Add(it.element())
		}
		s.mu.Lock()
		s.interested = true
		s.mu.Unlock()
		a.reply(s, resultOf(iq).Add(query))
	case "set":
		items := q.Elements()
		if len(items) != 1 || items[0].AttrValue("jid") == "" {
			a.reply(s, errorReply(iq, "modify", "bad-request"))
			return
		}
		el := items[0]
		local, domain, res := splitJID(el.AttrValue("jid"))
		if res != "" {
			a.reply(s, errorReply(iq, "modify", "bad-request"))
			return
		}
		jid := domain
		if local != "" {
			jid = local + "@" + domain
		}
		if el.AttrValue("subscription") == "remove" {
			if domain == a.topicDomain() || a.rules.hasDomain(domain) {
				a.topics.unsubscribeJID(ctx, clientPeer{s}, local, domain)
			}
			if domain == a.cfg.Domain && local != "" {
				// RFC 6121 2.5.2: removing a contact cancels the
				// subscriptions both ways.
				if it, ok, err := a.rosterGet(ctx, s.user, jid); err == nil && ok {
					if it.Subscription == "to" || it.Subscription == "both" || it.Ask != "" {
						a.handleSubscription(s, newElement(nsClient, "presence", "type", "unsubscribe", "from", s.jid, "to", jid), jid)
					}
					if it.Subscription == "from" || it.Subscription == "both" {
						a.handleSubscription(s, newElement(nsClient, "presence", "type", "unsubscribed", "from", s.jid, "to", jid), jid)
					}
				}
			}
			if err := a.rosterDelete(ctx, s.user, jid); err != nil {
				a.reply(s, errorReply(iq, "wait", "internal-server-error"))
				return
			}
			a.reply(s, resultOf(iq))
			return
		}
		it, _, err := a.rosterGet(ctx, s.user, jid)
		if err != nil {
			a.reply(s, errorReply(iq, "wait", "internal-server-error"))
			return
		}
		it.Name = el.AttrValue("name")
		it.Groups = nil
		for _, g := range el.Elements() {
			if g.Name.Local == "group" {
				it.Groups = append(it.Groups, g.Text())
			}
		}
		if err := a.rosterPut(ctx, s.user, it); err != nil {
			a.reply(s, errorReply(iq, "wait", "internal-server-error"))
			return
		}
		a.reply(s, resultOf(iq))
	default:
		a.reply(s, errorReply(iq, "modify", "bad-request"))
	}
}

// resultOf returns an empty result for an iq.
func resultOf(iq *element) *element {
	return newElement(nsClient, "iq", "type", "result", "id", iq.AttrValue("id"), "to", iq.AttrValue("from"), "from", iq.AttrValue("to"))
}

func addTo(sub string) string {
	switch sub {
	case "from", "both":
		return "both"
	}
	return "to"
}

func addFrom(sub string) string {
	switch sub {
	case "to", "both":
		return "both"
	}
	return "from"
}

func removeTo(sub string) string {
	switch sub {
	case "both", "from":
		return "from"
	}
	return "none"
}

func removeFrom(sub string) string {
	switch sub {
	case "both", "to":
		return "to"
	}
	return "none"
}

// handleSubscription handles presence subscription stanzas between two
// users of this server (RFC 6121 3).
func (a *Adapter) handleSubscription(s *session, el *element, contact string) {
	ctx := context.WithoutCancel(a.ctx)
	contactUser, _, _ := splitJID(contact)
	if _, err := a.cfg.Store.GetUser(ctx, contactUser); err != nil {
		a.reply(s, errorReply(el, "cancel", "item-not-found"))
		return
	}
	mine, _, err1 := a.rosterGet(ctx, s.user, contact)
	theirs, _, err2 := a.rosterGet(ctx, contactUser, s.bare)
	if err1 != nil || err2 != nil {
		a.reply(s, errorReply(el, "wait", "internal-server-error"))
		return
	}
	out := newElement(nsClient, "presence", "type", el.AttrValue("type"), "from", s.bare, "to", contact)
	deliver := true
	switch el.AttrValue("type") {
	case "subscribe":
		if mine.Subscription == "to" || mine.Subscription == "both" {
			deliver = false
			_, _ = s.send(newElement(nsClient, "presence", "type", "subscribed", "from", contact, "to", s.bare))
			break
		}
		mine.Ask = "subscribe"
		_ = a.rosterPut(ctx, s.user, mine)
		if theirs.Subscription == "from" || theirs.Subscription == "both" {
			deliver = false
			mine.Subscription, mine.Ask = addTo(mine.Subscription), ""
			_ = a.rosterPut(ctx, s.user, mine)
			_, _ = s.send(newElement(nsClient, "presence", "type", "subscribed", "from", contact, "to", s.bare))
		}
	case "subscribed":
		if theirs.Ask != "subscribe" && theirs.Subscription != "none" && theirs.Subscription != "from" {
			return
		}
		mine.Subscription = addFrom(mine.Subscription)
		_ = a.rosterPut(ctx, s.user, mine)
		theirs.Subscription, theirs.Ask = addTo(theirs.Subscription), ""
		_ = a.rosterPut(ctx, contactUser, theirs)
		defer func() {
			s.mu.Lock()
			p := s.presence
			s.mu.Unlock()
			if p == nil {
				return
			}
			for _, c := range a.availableOf(contact) {
				p = p.Copy()
				p.SetAttr("to", c.jid)
				_, _ = c.send(p)
			}
			a.cl.publish(contact, frame{Kind: framePresence, Stanza: p.String()})
		}()
	case "unsubscribe":
		mine.Subscription, mine.Ask = removeTo(mine.Subscription), ""
		_ = a.rosterPut(ctx, s.user, mine)
		theirs.Subscription = removeFrom(theirs.Subscription)
		_ = a.rosterPut(ctx, contactUser, theirs)
	case "unsubscribed":
		mine.Subscription = removeFrom(mine.Subscription)
		_ = a.rosterPut(ctx, s.user, mine)
		theirs.Subscription, theirs.Ask = removeTo(theirs.Subscription), ""
		_ = a.rosterPut(ctx, contactUser, theirs)
	}
	if !deliver {
		return
	}
	if a.cl.toBare(contact, out) {
		return
	}
	a.offlineMu.Lock()
	targets := a.availableOf(contact)
	if len(targets) == 0 && out.AttrValue("type") == "subscribe" {
		_ = a.storeOffline(ctx, contact, out)
		a.offlineMu.Unlock()
		return
	}
	a.offlineMu.Unlock()
	for _, t := range targets {
		p := out.Copy()
		p.SetAttr("to", t.jid)
		_, _ = t.send(p)
	}
}

// Offline storage: stanzas for a user with no available resource, kept in
// the KV bucket "xmpp-offline:{user}" under time-ordered keys.
func offlineBucket(user string) string { return "xmpp-offline:" + user }

// storeOffline keeps a stanza for an offline user, bounded by OfflineLimit.
func (a *Adapter) storeOffline(ctx context.Context, bare string, el *element) error {
	user, _, _ := splitJID(bare)
	if _, err := a.cfg.Store.GetUser(ctx, user); err != nil {
		return fmt.Errorf("xmpp: offline message for %q: %w", user, err)
	}
	kvs, err := a.cfg.Store.KVList(ctx, offlineBucket(user))
	if err != nil {
		return err
	}
	if len(kvs) >= a.cfg.OfflineLimit {
		return fmt.Errorf("xmpp: offline storage of %q is full (%d stanzas)", user, len(kvs))
	}
	c := el.Copy()
	c.Add(newElement("urn:xmpp:delay", "delay", "from", a.cfg.Domain, "stamp", time.Now().UTC().Format(time.RFC3339)))
	b := []byte(c.String())
	if max := a.cfg.OfflineMaxBytes; max > 0 {
		held := int64(len(b))
		for _, kv := range kvs {
			held += int64(len(kv.Value))
		}
		if held > max {
			return fmt.Errorf("xmpp: offline storage of %q is full (%d bytes with this one, limit %d)", user, held, max)
		}
	}
	return a.cfg.Store.KVPut(ctx, offlineBucket(user), broker.NewID(), b)
}

// deliverOffline sends a newly available session what was kept for it, in
// order, and forgets it.
func (a *Adapter) deliverOffline(s *session) {
	ctx := context.WithoutCancel(a.ctx)
	kvs, err := a.cfg.Store.KVList(ctx, offlineBucket(s.user))
	if err != nil {
		a.log.Warn("xmpp: offline messages", "user", s.user, "err", err)
		return
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	if c, ok := a.cfg.Store.(Claimer); ok {
		a.deliverClaimed(ctx, s, c, kvs)
		return
	}
	for _, kv := range kvs {
		el, err := parseElement(kv.Value)
		if err == nil {
			el.SetAttr("to", s.jid)
			if _, err := s.send(el); err != nil {
				return
			}
		}
		if err := a.cfg.Store.KVDelete(ctx, offlineBucket(s.user), kv.Key); err != nil {
			a.log.Warn("xmpp: forget offline message", "user", s.user, "err", err)
		}
	}
}

// Claimer is a Store shared by several hubs: KVClaim removes a key and
// reports whether this call removed it, so that of two hubs where a user
// logs in at once, one delivers each offline message.
type Claimer interface {
	KVClaim(ctx context.Context, bucket, key string) (bool, error)
}

// deliverClaimed sends s the offline stanzas this hub claims first; one it
// cannot send is kept again.
func (a *Adapter) deliverClaimed(ctx context.Context, s *session, c Claimer, kvs []store.KV) {
	bucket := offlineBucket(s.user)
	for _, kv := range kvs {
		ok, err := c.KVClaim(ctx, bucket, kv.Key)
		if err != nil {
			a.log.Warn("xmpp: claim offline message", "user", s.user, "err", err)
			return
		}
		if !ok {
			continue // another hub delivered it
		}
		el, err := parseElement(kv.Value)
		if err != nil {
			continue
		}
		el.SetAttr("to", s.jid)
		if _, err := s.send(el); err != nil {
			if err := a.cfg.Store.KVPut(ctx, bucket, kv.Key, kv.Value); err != nil {
				a.log.Warn("xmpp: offline message lost", "user", s.user, "err", err)
			}
			return
		}
	}
}

// parseElement parses one serialized element.
func parseElement(b []byte) (*element, error) {
	r := newStanzaReader(strings.NewReader(string(b)), int64(len(b))+1, DefaultMaxDepth, nil)
	r.started = true
	return r.next()
}
