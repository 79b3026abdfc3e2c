package xmpp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"mime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// errOffline is a delivery to a user with no available resource; the bus
// keeps the envelope in the subscription's durable queue.
var errOffline = errors.New("xmpp: user offline")

// peer is the user side of a conversation with a topic JID: a c2s session,
// or a user of the server the hub is a component of.
type peer interface {
	// bareJID is the user's bare JID, where topic messages go.
	bareJID() string
	// fullJID is the origin's client id.
	fullJID() string
	// principal is checked against the ACL.
	principal() adapters.Principal
	// subID names the user in durable subscription ids.
	subID() string
	// remote is the network address of the user, when known.
	remote() string
	// qos is the QoS of what the user publishes (1 with XEP-0198).
	qos() byte
	// send sends a stanza to the user.
	send(el *element) error
	// rosterSet records the topic JID's subscription state in the user's
	// roster when the hub keeps it ("" removes the item).
	rosterSet(jid, subscription string)
	// online reports whether topic messages can go to the user now.
	online() bool
}

// topicService maps presence subscriptions and chat messages to topic JIDs
// onto bus subscriptions and publishes. It serves both the c2s server (at
// topics.{domain}) and the component (at the component domain).
type topicService struct {
	a *Adapter

	mu     sync.Mutex
	subs   map[string]map[string]broker.Subscription // bare JID → topic → attached subscription
	online map[string]bool                           // bare JIDs between userOnline and userOffline

	// users serialises a user's attach and detach (userLock): without it a
	// resource leaving while another arrives could detach, after the fact,
	// what the newcomer had just attached, and the user got nothing more
	// until all his resources had left.
	users [32]sync.Mutex
}

// userLock is the lock that serialises the attaching and detaching of the
// subscriptions of bare.
func (t *topicService) userLock(bare string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(bare))
	return &t.users[h.Sum32()%uint32(len(t.users))]
}

// topicRecord is a persisted topic subscription: KV bucket "xmpp-topics",
// key "{bare JID} {topic}".
const topicBucket = "xmpp-topics"

func topicKey(bare, topic string) string { return bare + " " + topic }

// jidBucket holds the subscriptions made through a template rule's JID
// (JIDRule): key "{bare JID} {topic JID}", so that messages come from the
// JID the user subscribed to.
const jidBucket = "xmpp-jids"

// record returns where the subscription of bare to topic through the topic
// JID tjid ("" for the default rule) is kept.
func record(bare, topic, tjid string) (bucket, key string) {
	if tjid == "" {
		return topicBucket, topicKey(bare, topic)
	}
	return jidBucket, topicKey(bare, tjid)
}

// resolve returns the topic of the topic JID local@domain and, when a
// template rule maps it, that JID (tjid; "" for the default rule). err is
// ErrNotTopicJID for a JID that is no topic's.
func (t *topicService) resolve(rules *ruleSet, local, domain string) (topic, tjid string, err error) {
	if rules.hasDomain(domain) {
		topic, ok := rules.fromJID(local, domain)
		if !ok {
			return "", "", fmt.Errorf("%w: %s@%s matches no rule", ErrNotTopicJID, local, domain)
		}
		return topic, local + "@" + domain, nil
	}
	topic, err = JIDToTopic(local)
	return topic, "", err
}

// handle handles a stanza from p to the topic JID local@domain (local ""
// is the service itself): the default rule's domain or a template rule's.
func (t *topicService) handle(p peer, el *element, local, domain string) {
	typ := el.AttrValue("type")
	if typ == "error" || typ == "result" {
		return
	}
	if local == "" {
		if el.Name.Local == "iq" {
			t.a.handleServiceIQ(p, el, "topics")
		}
		return
	}
	rules := t.a.rulesFor(p)
	topic, tjid, err := t.resolve(rules, local, domain)
	if err != nil {
		switch {
		case rules.hasDomain(domain) && (el.Name.Local != "presence" || typ == "subscribe"):
			_ = p.send(errorReply(el, "cancel", "item-not-found"))
		case el.Name.Local != "presence":
			_ = p.send(errorReply(el, "modify", "jid-malformed"))
		}
		return
	}
	from := el.AttrValue("to")
	if i := strings.IndexByte(from, '/'); i >= 0 {
		from = from[:i]
	}
	ctx := context.WithoutCancel(t.a.ctx)
	switch el.Name.Local {
	case "presence":
		switch typ {
		case "subscribe":
			t.subscribe(ctx, p, topic, from, tjid)
		case "unsubscribe":
			t.unsubscribe(ctx, p.bareJID(), topic, tjid)
			p.rosterSet(from, "")
			_ = p.send(newElement(nsClient, "presence", "type", "unsubscribed", "from", from, "to", p.bareJID()))
		case "probe":
			if t.subscribed(ctx, p.bareJID(), topic, tjid) {
				_ = p.send(newElement(nsClient, "presence", "from", from, "to", p.bareJID()))
			}
		}
	case "message":
		if t.a.handleIBB(p, el) { // IBB data in messages
			return
		}
		t.publish(ctx, p, el, topic)
	case "iq":
		if q := mamQuery(el); q != nil && t.a.cfg.Archive != nil {
			t.a.handleMAM(p, el, q, topic, from)
			return
		}
		if t.a.handleTransfer(p, el, t.a.topicFileTarget(topic)) {
			return
		}
		t.a.handleServiceIQ(p, el, "topic")
	}
}

// remember persists a subscription of p (not for anonymous users, whose
// subscriptions end with their session).
func (t *topicService) remember(ctx context.Context, p peer, bucket, filter string) error {
	if p.principal().Anonymous {
		return nil
	}
	return t.a.cfg.Store.KVPut(ctx, bucket, topicKey(p.bareJID(), filter), []byte(p.subID()))
}

func (t *topicService) subscribed(ctx context.Context, bare, topic, tjid string) bool {
	bucket, key := record(bare, topic, tjid)
	_, err := t.a.cfg.Store.KVGet(ctx, bucket, key)
	return err == nil
}

// subscribe approves (or refuses) a presence subscription to a topic
// through the topic JID from (tjid is from for a template rule's JID, ""
// for the default rule's).
func (t *topicService) subscribe(ctx context.Context, p peer, topic, from, tjid string) {
	err := t.a.cfg.Auth.Limits().CheckTopic(topic)
	if err == nil {
		err = t.a.cfg.Auth.Authorize(ctx, p.principal(), adapters.ActionSubscribe, topic)
	}
	if err != nil {
		t.a.log.Info("xmpp: topic subscription refused", "jid", p.bareJID(), "topic", topic, "err", err)
		p.rosterSet(from, "none")
		_ = p.send(newElement(nsClient, "presence", "type", "unsubscribed", "from", from, "to", p.bareJID()))
		return
	}
	bucket, _ := record(p.bareJID(), topic, tjid)
	name := topic
	key := "t " + topic
	if tjid != "" {
		name, key = tjid, "j "+tjid
	}
	if err := t.subscriptionLimit(p.bareJID(), key); err != nil {
		// Refused as a presence subscription is (RFC 6121 3.2), after an
		// error that says why.
		t.a.log.Info("xmpp: topic subscription refused", "jid", p.bareJID(), "topic", topic, "err", err)
		perr := newElement(nsClient, "presence", "type", "error", "from", from, "to", p.bareJID()).Add(
			newElement(nsClient, "error", "type", "wait").Add(newElement(nsStanzas, "policy-violation"),
				newElement(nsStanzas, "text").AddText(err.Error())))
		_ = p.send(perr)
		p.rosterSet(from, "none")
		_ = p.send(newElement(nsClient, "presence", "type", "unsubscribed", "from", from, "to", p.bareJID()))
		return
	}
	if err := t.remember(ctx, p, bucket, name); err != nil {
		t.a.log.Warn("xmpp: store topic subscription", "jid", p.bareJID(), "topic", topic, "err", err)
		_ = p.send(newElement(nsClient, "presence", "type", "unsubscribed", "from", from, "to", p.bareJID()))
		return
	}
	approve := func() {
		p.rosterSet(from, "to")
		_ = p.send(newElement(nsClient, "presence", "type", "subscribed", "from", from, "to", p.bareJID()))
		_ = p.send(newElement(nsClient, "presence", "from", from, "to", p.bareJID()))
	}
	if !p.online() {
		approve()
		return
	}
	// The bus subscription exists before the user hears of it, so that
	// nothing published after "subscribed" is missed.
	if err := t.attach(ctx, p, topic, tjid, false, true, approve); err != nil {
		t.a.log.Warn("xmpp: topic subscription", "jid", p.bareJID(), "topic", topic, "err", err)
		_ = t.a.cfg.Store.KVDelete(ctx, bucket, topicKey(p.bareJID(), name))
		p.rosterSet(from, "none")
		_ = p.send(newElement(nsClient, "presence", "type", "unsubscribed", "from", from, "to", p.bareJID()))
		return
	}
	t.a.cl.subsChanged(p.bareJID()) // cluster_topics.go
}

// unsubscribe ends a topic subscription (through the topic JID tjid, ""
// for the default rule) and discards its queue.
func (t *topicService) unsubscribe(ctx context.Context, bare, topic, tjid string) {
	key := "t " + topic
	if tjid != "" {
		key = "j " + tjid
	}
	t.mu.Lock()
	sub := t.subs[bare][key]
	delete(t.subs[bare], key)
	t.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	bucket, k := record(bare, topic, tjid)
	_ = t.a.cfg.Store.KVDelete(ctx, bucket, k)
	t.a.cl.subsChanged(bare) // cluster_topics.go
}

// unsubscribeJID ends the subscription of bare to the topic JID
// local@domain, if it is one.
func (t *topicService) unsubscribeJID(ctx context.Context, p peer, local, domain string) {
	topic, tjid, err := t.resolve(t.a.rulesFor(p), local, domain)
	if err == nil {
		t.unsubscribe(ctx, p.bareJID(), topic, tjid)
	}
}

// attach subscribes p's durable subscription to a topic (or, for pubsub,
// to a PubSub node's filter) on the bus; then, before anything is
// delivered, it calls before (when not nil) and, with retainedFirst, sends
// the retained values. tjid is the template rule JID the subscription was
// made through ("" for the default rule): messages come from it.
func (t *topicService) attach(ctx context.Context, p peer, filter, tjid string, pubsub, retainedFirst bool, before func()) error {
	bare := p.bareJID()
	key, id := "t "+filter, "xmpp:"+p.subID()+":"+filter
	switch {
	case pubsub:
		key, id = "p "+filter, "xmpp-ps:"+p.subID()+":"+filter
	case tjid != "":
		key, id = "j "+tjid, "xmpp-jid:"+p.subID()+":"+tjid
	}
	t.mu.Lock()
	if t.subs == nil {
		t.subs = map[string]map[string]broker.Subscription{}
	}
	if t.subs[bare][key] != nil {
		t.mu.Unlock()
		if before != nil {
			before()
		}
		return nil
	}
	t.mu.Unlock()
	compose := func(to string, e *broker.Envelope) *element {
		if pubsub {
			m := eventMessage(t.a.pubsubDomainFor(p), to, filter, e)
			if l := t.a.fileMessage("", "", e); l != nil {
				m.Children = append(m.Children, l.Children...) // body and link of a file (oob.go)
			}
			return m
		}
		from := tjid
		if from == "" {
			from = TopicToJID(e.Topic, t.domainFor(p))
		}
		if m := t.a.fileMessage(from, to, e); m != nil {
			return m // a file descriptor: an XEP-0066 link (oob.go)
		}
		return envelopeMessage(from, to, e)
	}
	// What was published before the subscription attached (retained
	// values, what was queued while the user was away) is a delayed
	// delivery: it carries an XEP-0203 stamp with the envelope's time.
	attached := time.Now()
	build := func(to string, e *broker.Envelope) *element {
		m := compose(to, e)
		if !e.Time.IsZero() && e.Time.Before(attached) {
			m.Add(delayElement(m.AttrValue("from"), e.Time))
		}
		return m
	}
	// encode is build written straight into a buffer (stanzaenc.go), for
	// all but file descriptors; the topic's JID is kept from one delivery
	// to the next, as a subscription's envelopes mostly share a topic.
	psDomain, jidDomain := t.a.pubsubDomainFor(p), t.domainFor(p)
	var lastJID atomic.Pointer[[2]string]
	encode := func(dst []byte, to string, e *broker.Envelope) ([]byte, bool) {
		if _, ok := fileDescriptor(e); ok {
			return dst, false
		}
		delayed := !e.Time.IsZero() && e.Time.Before(attached)
		if pubsub {
			return appendEventMessage(dst, psDomain, to, filter, e, delayed), true
		}
		from := tjid
		if from == "" {
			if l := lastJID.Load(); l != nil && l[0] == e.Topic {
				from = l[1]
			} else {
				from = TopicToJID(e.Topic, jidDomain)
				lastJID.Store(&[2]string{e.Topic, from})
			}
		}
		return appendEnvelopeMessage(dst, from, to, e, delayed), true
	}
	ready := make(chan struct{})
	pr := p.principal()
	h := func(ctx context.Context, e *broker.Envelope) error {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !pubsub && ownMessage(bare, e) {
			return nil // no echo of the user's own chat message (any resource)
		}
		if err := t.a.cfg.Auth.CanRead(ctx, pr, e.Topic); errors.Is(err, adapters.ErrForbidden) {
			t.a.metrics.denied.Inc()
			return nil // the user may not read it (any more): skipped
		} else if err != nil {
			// Undecided (the store failed): the durable queue keeps it and
			// the bus tries again.
			return fmt.Errorf("xmpp: read check of %q for %s: %w", e.Topic, bare, err)
		}
		return t.a.deliverEnvelope(ctx, p, e, build, encode)
	}
	// An anonymous user's JID is gone with its session: nothing is kept.
	durable := !p.principal().Anonymous
	sub, err := t.a.cfg.Bus.Subscribe(ctx, broker.SubscribeOptions{Protocol: broker.ProtoXMPP,
		ID: id, Filters: []string{filter}, QoS: 1, Durable: durable, Principal: pr.Name, QueueLen: topicQueueLen,
	}, h)
	if err != nil {
		close(ready)
		return fmt.Errorf("xmpp: subscribe %q for %s: %w", filter, bare, err)
	}
	t.mu.Lock()
	if t.subs == nil {
		t.subs = map[string]map[string]broker.Subscription{}
	}
	if t.subs[bare] == nil {
		t.subs[bare] = map[string]broker.Subscription{}
	}
	t.subs[bare][key] = sub
	t.mu.Unlock()
	if before != nil {
		before()
	}
	if retainedFirst {
		rs, err := t.a.cfg.Bus.Retained(ctx, filter)
		if err == nil {
			for _, e := range rs {
				if t.a.readable(ctx, pr, e.Topic) {
					_ = p.send(build(bare, e))
				}
			}
		}
	}
	close(ready)
	return nil
}

func (t *topicService) domainFor(p peer) string {
	if _, ok := p.(clientPeer); ok {
		return t.a.topicDomain()
	}
	return t.a.cfg.ComponentDomain
}

// userOnline attaches the topic subscriptions of a user who became
// available; what was queued while away arrives first, in order.
func (t *topicService) userOnline(p peer) {
	t.mu.Lock()
	if t.online == nil {
		t.online = map[string]bool{}
	}
	t.online[p.bareJID()] = true
	t.mu.Unlock()
	ctx := context.WithoutCancel(t.a.ctx)
	kvs, err := t.a.cfg.Store.KVList(ctx, topicBucket)
	if err != nil {
		t.a.log.Warn("xmpp: topic subscriptions", "jid", p.bareJID(), "err", err)
		return
	}
	pkvs, err := t.a.cfg.Store.KVList(ctx, pubsubBucket)
	if err != nil {
		t.a.log.Warn("xmpp: pubsub subscriptions", "jid", p.bareJID(), "err", err)
	}
	prefix := p.bareJID() + " "
	for i, kv := range append(kvs, pkvs...) {
		filter, ok := strings.CutPrefix(kv.Key, prefix)
		if !ok {
			continue
		}
		if err := t.a.cfg.Auth.Authorize(ctx, p.principal(), adapters.ActionSubscribe, filter); err != nil {
			t.a.log.Info("xmpp: subscription no longer allowed", "jid", p.bareJID(), "filter", filter, "err", err)
			continue
		}
		if err := t.attach(ctx, p, filter, "", i >= len(kvs), false, nil); err != nil {
			t.a.log.Warn("xmpp: attach subscription", "jid", p.bareJID(), "filter", filter, "err", err)
		}
	}
	jkvs, err := t.a.cfg.Store.KVList(ctx, jidBucket)
	if err != nil {
		t.a.log.Warn("xmpp: template JID subscriptions", "jid", p.bareJID(), "err", err)
	}
	for _, kv := range jkvs {
		tjid, ok := strings.CutPrefix(kv.Key, prefix)
		if !ok {
			continue
		}
		local, domain, _ := splitJID(tjid)
		topic, ok := t.a.rulesFor(p).fromJID(local, domain)
		if !ok {
			t.a.log.Info("xmpp: subscribed JID no longer matches a JID rule", "jid", p.bareJID(), "topic_jid", tjid)
			continue
		}
		if err := t.a.cfg.Auth.Authorize(ctx, p.principal(), adapters.ActionSubscribe, topic); err != nil {
			t.a.log.Info("xmpp: subscription no longer allowed", "jid", p.bareJID(), "filter", topic, "err", err)
			continue
		}
		if err := t.attach(ctx, p, topic, tjid, false, false, nil); err != nil {
			t.a.log.Warn("xmpp: attach subscription", "jid", p.bareJID(), "topic_jid", tjid, "err", err)
		}
	}
}

// attached reports whether bare's subscriptions are attached: userOnline
// came last, not userOffline.
func (t *topicService) attached(bare string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.online[bare]
}

// userOffline detaches a user's subscriptions: the bus keeps QoS >= 1
// envelopes in their durable queues until the user is back.
func (t *topicService) userOffline(bare string) {
	t.mu.Lock()
	subs := t.subs[bare]
	delete(t.subs, bare)
	delete(t.online, bare)
	t.mu.Unlock()
	for _, s := range subs {
		_ = s.Detach()
	}
}

// shutdown detaches every subscription.
func (t *topicService) shutdown() {
	t.mu.Lock()
	all := t.subs
	t.subs, t.online = nil, nil
	t.mu.Unlock()
	for _, subs := range all {
		for _, s := range subs {
			_ = s.Detach()
		}
	}
}

// publish publishes a chat message to a topic JID on the bus.
func (t *topicService) publish(ctx context.Context, p peer, el *element, topic string) {
	payload, ctype, ok, err := messagePayload(el)
	if err != nil {
		_ = p.send(errorReply(el, "modify", "bad-request"))
		return
	}
	if !ok { // chat states, receipts and such carry nothing to publish
		return
	}
	if err := t.a.cfg.Auth.Limits().CheckTopic(topic); err != nil {
		_ = p.send(errorReply(el, "modify", "not-acceptable"))
		return
	}
	pr := p.principal()
	if err := t.a.cfg.Auth.Authorize(ctx, pr, adapters.ActionPublish, topic); err != nil {
		_ = p.send(errorReply(el, "auth", "forbidden"))
		return
	}
	e := &broker.Envelope{
		Topic: topic, Payload: payload, ContentType: ctype, QoS: p.qos(),
		Origin: broker.Origin{Protocol: broker.ProtoXMPP, ClientID: p.fullJID(), Remote: p.remote(), Principal: pr.Name},
	}
	if err := t.a.cfg.Bus.Publish(ctx, e); err != nil {
		t.a.log.Info("xmpp: publish", "topic", topic, "jid", p.fullJID(), "err", err)
		switch {
		case errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrWildcardTopic):
			_ = p.send(errorReply(el, "modify", "jid-malformed"))
		case errors.Is(err, broker.ErrQuota):
			// The sender's storage quota (limits.*): its own doing.
			_ = p.send(errorReply(el, "wait", "policy-violation"))
		case errors.Is(err, broker.ErrStorage):
			_ = p.send(errorReply(el, "wait", "resource-constraint"))
		default:
			_ = p.send(errorReply(el, "wait", "internal-server-error"))
		}
	}
}

// messagePayload extracts what a chat message publishes: the payload
// element's bytes and type when present, else the body as text/plain. ok
// is false for a message with neither.
func messagePayload(el *element) (payload []byte, ctype string, ok bool, err error) {
	if pl := el.Child(nsPayload, "payload"); pl != nil {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(pl.Text()))
		if err != nil {
			return nil, "", false, fmt.Errorf("xmpp: payload is not base64: %w", err)
		}
		ct := pl.AttrValue("type")
		if ct != "" {
			if _, _, err := mime.ParseMediaType(ct); err != nil {
				return nil, "", false, fmt.Errorf("xmpp: payload type %q: %w", ct, err)
			}
		}
		return b, ct, true, nil
	}
	if body := el.Child("", "body"); body != nil {
		return []byte(body.Text()), "text/plain; charset=utf-8", true, nil
	}
	return nil, "", false, nil
}

// envelopeMessage builds the chat message from a topic JID for e: the
// payload as body when it is text, else a short body and the bytes in a
// <payload/> element (DESIGN.md).
func envelopeMessage(from, to string, e *broker.Envelope) *element {
	m := newElement(nsClient, "message", "type", "chat", "from", from, "to", to, "id", e.ID)
	if adapters.IsText(e.ContentType, e.Payload) {
		m.Add(newElement(nsClient, "body").AddText(string(e.Payload)))
		if isJSON(e) {
			m.Add(newElement(nsJSON, "json").AddText(string(e.Payload))) // XEP-0335 (payload.go)
		}
		return m
	}
	ct := e.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	m.Add(newElement(nsClient, "body").AddText(fmt.Sprintf("[%d bytes of %s on %s]", len(e.Payload), ct, e.Topic)))
	m.Add(newElement(nsPayload, "payload", "type", ct).AddText(base64.StdEncoding.EncodeToString(e.Payload)))
	return m
}

// readable is adapters.Auth.CanRead for one envelope of a read, a listing
// or a retained value sent on subscribe: a denied one is counted and left
// out, as is one the store could not decide on (logged).
func (a *Adapter) readable(ctx context.Context, p adapters.Principal, topic string) bool {
	err := a.cfg.Auth.CanRead(ctx, p, topic)
	switch {
	case err == nil:
		return true
	case !errors.Is(err, adapters.ErrForbidden):
		a.log.Warn("xmpp: read check", "topic", topic, "principal", p.Name, "err", err)
	}
	a.metrics.denied.Inc()
	return false
}

// deliverEnvelope sends e to p as encoded by encode (its bytes written
// into a buffer; nil, or false from it, for build), else as built by
// build. With XEP-0198 and delivery QoS 1 it returns only once a resource
// acknowledged it, so that the bus keeps it queued otherwise.
func (a *Adapter) deliverEnvelope(ctx context.Context, p peer, e *broker.Envelope, build func(to string, e *broker.Envelope) *element,
	encode func(dst []byte, to string, e *broker.Envelope) ([]byte, bool)) error {
	cp, ok := p.(clientPeer)
	if !ok {
		return p.send(build(p.bareJID(), e))
	}
	targets := a.availableOf(cp.s.bare)
	if len(targets) == 0 {
		return errOffline
	}
	if e.QoS > 0 { // from the durable consumer, to this hub alone: the user's resources elsewhere get it from here (cluster_fanout.go)
		a.cl.fanOut(cp.s.bare, func() *element { return build(cp.s.bare, e) })
	}
	type waiter struct {
		ack    <-chan struct{}
		closed <-chan struct{}
	}
	var waits []waiter
	delivered := false
	for _, s := range targets {
		ack, err := sendEncoded(s, e, build, encode)
		if err != nil {
			continue
		}
		if ack == nil || e.QoS == 0 {
			delivered = true
			continue
		}
		waits = append(waits, waiter{ack, s.closed})
	}
	if delivered {
		return nil
	}
	if len(waits) == 1 { // the usual case: no goroutine per delivery
		select {
		case <-waits[0].ack:
			return nil
		case <-waits[0].closed:
			return errOffline
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The first resource to acknowledge counts: a detached XEP-0198
	// session (its client vanished, the session awaits resumption) must
	// not hold the delivery while another resource has acked it.
	got := make(chan bool, len(waits))
	stop := make(chan struct{})
	defer close(stop)
	for _, w := range waits {
		go func() {
			select {
			case <-w.ack:
				got <- true
			case <-w.closed:
				got <- false
			case <-stop:
			}
		}()
	}
	for range waits {
		select {
		case ok := <-got:
			if ok {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errOffline
}

// ownMessage reports whether e is a chat message the user bare sent
// (from any of its resources) through the XMPP adapter: a topic
// subscription does not send users their own messages back, as a MUC
// does not echo to other devices without carbons. Per bare JID: the
// user's other resources see the message as an XEP-0280 sent carbon.
func ownMessage(bare string, e *broker.Envelope) bool {
	if e.Origin.Protocol != broker.ProtoXMPP || e.Origin.ClientID == "" {
		return false
	}
	b, _, _ := strings.Cut(e.Origin.ClientID, "/")
	return b == bare
}
