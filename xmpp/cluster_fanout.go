package xmpp

// A user online on several hubs: topic deliveries and message carbons
// reach his resources on every hub.
//
// A topic subscription is one durable JetStream consumer per bare JID,
// attached on each hub where the user is available; JetStream hands each
// QoS >= 1 envelope to one attachment. The hub that takes it delivers to
// its own available resources and hands the built message, in a
// frameTopic on the user's bare-JID subject, to the other hubs, which
// deliver it to theirs (with their full JIDs as "to") and send nothing
// on: no loop, one copy per resource. The queue's acknowledgement is the
// taking hub's (its own resources' XEP-0198 <a/>), so a delivery
// redelivered by JetStream may reach the other hubs' resources twice.
// QoS 0 envelopes reach every hub over core NATS anyway, and each hub
// delivers them to its own resources, so they are not handed on.
//
// Carbons (XEP-0280): a chat sent by a resource, or delivered to its full
// JID, is copied to the user's resources that enabled carbons on this hub
// (carbons.go) and, in a frameCarbon, to those on the other hubs.
//
// Both are sent only while the hub knows of the user's resources on
// other hubs: those whose available presence it delivered to one of the
// user's resources here (own presence broadcasts and the answers to the
// login probe go to every resource, cluster.go), and forgotten when they
// go unavailable or are found gone (cluster_liveness.go). A user on one
// hub costs nothing more.

// frame kinds of this file.
const (
	frameTopic  = "topic"  // a topic delivery for every available resource: to is set to each
	frameCarbon = "carbon" // a carbon for every resource that enabled carbons, but From
)

// noteOwn records (available) or forgets the full JID from of another hub
// as a resource of the user bare (l.mu held).
func (l *link) noteOwnLocked(bare, from string, available bool) {
	m := l.own[bare]
	if !available {
		if m != nil {
			delete(m, from)
			if len(m) == 0 {
				delete(l.own, bare)
			}
		}
		return
	}
	if m == nil {
		m = map[string]struct{}{}
		l.own[bare] = m
	}
	m[from] = struct{}{}
}

// elsewhere reports whether the user bare has resources available on
// other hubs, as far as this hub knows.
func (l *link) elsewhere(bare string) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.own[bare]) > 0
}

// fanOut hands a topic delivery for bare, built by build (to the bare
// JID), to the user's resources on other hubs.
func (l *link) fanOut(bare string, build func() *element) {
	if !l.elsewhere(bare) {
		return
	}
	l.publish(bare, frame{Kind: frameTopic, Stanza: build().String()})
}

// carbon sends the carbon el (without "to") of a message that the
// resource except sent or received to the user's resources on other
// hubs that enabled carbons.
func (l *link) carbon(except *session, el *element) {
	l.publish(except.bare, frame{Kind: frameCarbon, From: except.jid, Stanza: el.String()})
}

// onFanOut delivers a frameTopic or frameCarbon of another hub to the
// resources of bare here.
func (l *link) onFanOut(bare string, f frame) {
	el, err := f.stanza()
	if err != nil {
		l.a.log.Debug("xmpp: cluster: frame dropped", "jid", bare, "kind", f.Kind, "err", err)
		return
	}
	if el.Name.Local != "message" {
		l.a.log.Debug("xmpp: cluster: frame dropped", "jid", bare, "kind", f.Kind, "err", "not a message")
		return
	}
	for _, s := range l.a.availableOf(bare) {
		if f.Kind == frameCarbon && (s.jid == f.From || !l.a.carbons.enabled(s)) {
			continue
		}
		c := el.Copy()
		c.SetAttr("to", s.jid)
		_, _ = s.send(c)
	}
}
