package xmpp

import (
	"context"
	"errors"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// handleIQ handles iqs to the server or the user's own bare JID.
func (a *Adapter) handleIQ(s *session, iq *element) {
	typ := iq.AttrValue("type")
	if typ == "result" || typ == "error" {
		a.cmds.handleReply(iq)
		return
	}
	children := iq.Elements()
	if len(children) != 1 {
		a.reply(s, errorReply(iq, "modify", "bad-request"))
		return
	}
	q := children[0]
	switch {
	case q.Name.Space == nsRoster && q.Name.Local == "query":
		a.handleRoster(s, iq, q)
	case q.Name.Space == nsSession && typ == "set":
		a.reply(s, resultOf(iq))
	case q.Name.Space == nsCarbons:
		a.handleCarbons(s, iq, q) // carbons.go
	default:
		a.handleServiceIQ(clientPeer{s}, iq, "server")
	}
}

// handleServiceIQ answers the iqs every entity of the hub understands:
// XEP-0199 ping and XEP-0030 disco. kind is "server", "topics" (the topic
// service), "topic" (a topic JID) or "pubsub".
func (a *Adapter) handleServiceIQ(p peer, iq *element, kind string) {
	typ := iq.AttrValue("type")
	q := iq.Elements()
	if typ == "result" || typ == "error" {
		return
	}
	if len(q) != 1 {
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	switch {
	case q[0].Name.Space == nsPing && typ == "get":
		_ = p.send(resultOf(iq))
	case q[0].Name.Space == nsDiscoInfo && typ == "get":
		_ = p.send(resultOf(iq).Add(a.discoInfo(kind, q[0].AttrValue("node"))))
	case q[0].Name.Space == nsDiscoItem && typ == "get":
		_ = p.send(resultOf(iq).Add(a.discoItems(p, kind, iq.AttrValue("to"))))
	default:
		_ = p.send(errorReply(iq, "cancel", "service-unavailable"))
	}
}

// discoInfo returns the XEP-0030 identity and features of an entity.
func (a *Adapter) discoInfo(kind, node string) *element {
	q := newElement(nsDiscoInfo, "query", "node", node)
	var cat, typ, name string
	features := []string{nsDiscoInfo, nsDiscoItem, nsPing}
	switch kind {
	case "server":
		cat, typ, name = "server", "im", "hub"
		features = append(features, nsRoster, nsSM, nsCommands, nsCarbons)
	case "topics":
		cat, typ, name = "component", "generic", "hub topics"
	case "topic":
		cat, typ, name = "pubsub", "leaf", "hub topic"
		if a.cfg.Archive != nil {
			features = append(features, nsMAM) // mam.go
		}
	case "devices":
		cat, typ, name = "component", "generic", "hub devices"
		features = append(features, nsCommands)
	case "upload":
		cat, typ, name = "store", "file", "hub HTTP file upload"
		features = append(features, nsUpload)
	case "proxy":
		cat, typ, name = "proxy", "bytestreams", "hub SOCKS5 bytestreams proxy"
		features = append(features, nsBytestreams)
	case "pubsub":
		cat, typ, name = "pubsub", "service", "hub pubsub"
		features = append(features, nsPubSub, nsPubSub+"#publish", nsPubSub+"#subscribe",
			nsPubSub+"#retrieve-items", nsPubSub+"#persistent-items")
	}
	q.Add(newElement(nsDiscoInfo, "identity", "category", cat, "type", typ, "name", name))
	for _, f := range features {
		q.Add(newElement(nsDiscoInfo, "feature", "var", f))
	}
	if kind == "upload" {
		q.Add(a.uploadForm())
	}
	return q
}

// discoItems returns the XEP-0030 items of an entity: the server's
// services, the topics (with retained values) for the topic and pubsub
// services.
func (a *Adapter) discoItems(p peer, kind, to string) *element {
	q := newElement(nsDiscoItem, "query")
	switch kind {
	case "server":
		q.Add(newElement(nsDiscoItem, "item", "jid", a.topicDomain(), "name", "topics"),
			newElement(nsDiscoItem, "item", "jid", a.pubsubDomain(), "name", "pubsub"))
		if a.proxy != nil {
			q.Add(newElement(nsDiscoItem, "item", "jid", a.proxyDomain(), "name", "SOCKS5 bytestreams proxy"))
		}
		if a.cfg.Files != nil {
			q.Add(newElement(nsDiscoItem, "item", "jid", a.uploadDomain(), "name", "HTTP file upload"))
		}
		if a.cfg.DeviceCommand != nil {
			q.Add(newElement(nsDiscoItem, "item", "jid", a.devicesDomain(), "name", "devices (ad-hoc commands)"))
		}
		for _, d := range a.rules.domainList() {
			q.Add(newElement(nsDiscoItem, "item", "jid", d, "name", "topics"))
		}
	case "topics", "pubsub":
		rs, err := a.cfg.Bus.Retained(context.WithoutCancel(a.ctx), "#")
		if err != nil {
			return q
		}
		for _, e := range rs {
			if !a.readable(context.WithoutCancel(a.ctx), p.principal(), e.Topic) {
				continue
			}
			if kind == "topics" {
				_, domain, _ := splitJID(to)
				if rules := a.rulesFor(p); rules.hasDomain(domain) {
					if j, ok := rules.jidAt(e.Topic, domain); ok {
						q.Add(newElement(nsDiscoItem, "item", "jid", j, "name", e.Topic))
					}
					continue
				}
				q.Add(newElement(nsDiscoItem, "item", "jid", TopicToJID(e.Topic, domain), "name", e.Topic))
			} else {
				q.Add(newElement(nsDiscoItem, "item", "jid", to, "node", e.Topic, "name", e.Topic))
			}
		}
	}
	return q
}

// PubSub (XEP-0060) at pubsub.{domain}: node = topic (or a filter for
// subscribe), subscriptions kept in KV bucket "xmpp-pubsub" under
// "{bare JID} {filter}" and attached like topic subscriptions.
const pubsubBucket = "xmpp-pubsub"

func (a *Adapter) pubsubDomainFor(p peer) string {
	if _, ok := p.(clientPeer); ok {
		return a.pubsubDomain()
	}
	return a.cfg.ComponentDomain
}

func (a *Adapter) handlePubSub(s *session, iq *element) {
	a.handlePubSubFor(clientPeer{s}, iq)
}

// handlePubSubFor handles an iq to the PubSub service.
func (a *Adapter) handlePubSubFor(p peer, iq *element) {
	if iq.Name.Local != "iq" {
		return
	}
	ps := iq.Child(nsPubSub, "pubsub")
	if ps == nil {
		a.handleServiceIQ(p, iq, "pubsub")
		return
	}
	ctx := context.WithoutCancel(a.ctx)
	typ := iq.AttrValue("type")
	ops := ps.Elements()
	if len(ops) == 0 {
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	op := ops[0]
	node := op.AttrValue("node")
	pr := p.principal()
	fail := func(err error) {
		switch {
		case errors.Is(err, adapters.ErrForbidden):
			_ = p.send(errorReply(iq, "auth", "forbidden"))
		case errors.Is(err, broker.ErrInvalidFilter), errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrWildcardTopic):
			_ = p.send(errorReply(iq, "modify", "bad-request"))
		case errors.Is(err, adapters.ErrTopicTooLong):
			_ = p.send(errorReply(iq, "modify", "not-acceptable"))
		default:
			_ = p.send(errorReply(iq, "wait", "internal-server-error"))
		}
	}
	switch {
	case op.Name.Local == "subscribe" && typ == "set":
		if err := broker.ValidateFilter(node); err != nil {
			fail(err)
			return
		}
		if err := a.cfg.Auth.Limits().CheckTopic(node); err != nil {
			fail(err)
			return
		}
		if err := a.cfg.Auth.Authorize(ctx, pr, adapters.ActionSubscribe, node); err != nil {
			fail(err)
			return
		}
		if err := a.topics.subscriptionLimit(p.bareJID(), "p "+node); err != nil {
			a.log.Info("xmpp: pubsub subscription refused", "jid", p.bareJID(), "node", node, "err", err)
			_ = p.send(pubsubLimitError(iq, err))
			return
		}
		if err := a.topics.remember(ctx, p, pubsubBucket, node); err != nil {
			fail(err)
			return
		}
		confirm := func() {
			_ = p.send(resultOf(iq).Add(newElement(nsPubSub, "pubsub").Add(
				newElement(nsPubSub, "subscription", "node", node, "jid", p.bareJID(), "subscription", "subscribed"))))
		}
		if !p.online() {
			confirm()
			return
		}
		if err := a.topics.attach(ctx, p, node, "", true, true, confirm); err != nil {
			a.log.Warn("xmpp: pubsub subscribe", "node", node, "err", err)
			fail(err)
			return
		}
		a.cl.subsChanged(p.bareJID()) // cluster_topics.go
	case op.Name.Local == "unsubscribe" && typ == "set":
		a.topics.mu.Lock()
		sub := a.topics.subs[p.bareJID()]["p "+node]
		delete(a.topics.subs[p.bareJID()], "p "+node)
		a.topics.mu.Unlock()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		_ = a.cfg.Store.KVDelete(ctx, pubsubBucket, p.bareJID()+" "+node)
		a.cl.subsChanged(p.bareJID()) // cluster_topics.go
		_ = p.send(resultOf(iq))
	case op.Name.Local == "publish" && typ == "set":
		payload, ctype, err := itemPayload(op.Child(nsPubSub, "item")) // payload.go
		if err != nil {
			_ = p.send(errorReplyText(iq, "modify", "bad-request", err.Error()))
			return
		}
		if err := a.cfg.Auth.Limits().CheckTopic(node); err != nil {
			fail(err)
			return
		}
		if err := a.cfg.Auth.Authorize(ctx, pr, adapters.ActionPublish, node); err != nil {
			fail(err)
			return
		}
		e := &broker.Envelope{Topic: node, Payload: payload, ContentType: ctype, QoS: p.qos(),
			Origin: broker.Origin{Protocol: broker.ProtoXMPP, ClientID: p.fullJID(), Remote: p.remote(), Principal: pr.Name}}
		if err := a.cfg.Bus.Publish(ctx, e); err != nil {
			fail(err)
			return
		}
		_ = p.send(resultOf(iq).Add(newElement(nsPubSub, "pubsub").Add(
			newElement(nsPubSub, "publish", "node", node).Add(newElement(nsPubSub, "item", "id", e.ID)))))
	case op.Name.Local == "items" && typ == "get":
		if err := a.cfg.Auth.Authorize(ctx, pr, adapters.ActionSubscribe, node); err != nil {
			fail(err)
			return
		}
		rs, err := a.cfg.Bus.Retained(ctx, node)
		if err != nil {
			fail(err)
			return
		}
		items := newElement(nsPubSub, "items", "node", node)
		for _, e := range rs {
			if a.readable(ctx, pr, e.Topic) {
				items.Add(newElement(nsPubSub, "item", "id", e.ID).Add(payloadElement(e)))
			}
		}
		_ = p.send(resultOf(iq).Add(newElement(nsPubSub, "pubsub").Add(items)))
	default:
		_ = p.send(errorReply(iq, "cancel", "feature-not-implemented"))
	}
}

// eventMessage is the XEP-0060 event notification of e for a subscription
// to node.
func eventMessage(from, to, node string, e *broker.Envelope) *element {
	return newElement(nsClient, "message", "from", from, "to", to, "id", e.ID).Add(
		newElement(nsPubSubEvt, "event").Add(newElement(nsPubSubEvt, "items", "node", node).Add(
			newElement(nsPubSubEvt, "item", "id", e.ID).Add(payloadElement(e)))))
}
