package xmpp

import (
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Liveness of the users of other hubs: a hub that dies sends no
// unavailable presence for its users, so each hub remembers the full JIDs
// of other hubs whose available presence it delivered to its own users,
// and asks after them every Cluster.Liveness on their full JID subjects.
// A JID that twice in a row has no responder (no hub holds it) is gone:
// the users who saw it available get its unavailable presence.

// DefaultLiveness is how often a hub asks after the users of other hubs
// its users see available.
const DefaultLiveness = 10 * time.Second

// livenessMisses is how many checks in a row find nobody before a JID
// counts as gone (one miss may be a hub's reconnection to NATS).
const livenessMisses = 2

// framePing asks whether a full JID is bound.
const framePing = "ping"

// remotePeer is a full JID of another hub whose presence went to watchers.
type remotePeer struct {
	watchers map[string]struct{} // bare JIDs of this hub's users
	misses   int
}

// notePresence records that presence el from another hub went to the
// local user watcher.
func (l *link) notePresence(el *element, watcher string) {
	if l == nil || el.Name.Local != "presence" {
		return
	}
	from := el.AttrValue("from")
	local, _, res := splitJID(from)
	if local == "" || res == "" {
		return
	}
	typ := el.AttrValue("type")
	if typ != "" && typ != "unavailable" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	p := l.remote[from]
	if b, _, _ := strings.Cut(from, "/"); b == watcher {
		l.noteOwnLocked(watcher, from, typ == "")
	}
	if typ == "unavailable" {
		if p != nil {
			delete(p.watchers, watcher)
			if len(p.watchers) == 0 {
				delete(l.remote, from)
			}
		}
		return
	}
	if p == nil {
		p = &remotePeer{watchers: map[string]struct{}{}}
		l.remote[from] = p
	}
	p.watchers[watcher] = struct{}{}
	if !l.sweeping {
		l.sweeping = true
		l.wg.Add(1)
		go l.sweep()
	}
}

// sweep asks after the remembered JIDs until the link closes.
func (l *link) sweep() {
	defer l.wg.Done()
	t := time.NewTicker(l.liveness)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		jids := make([]string, 0, len(l.remote))
		for j := range l.remote {
			jids = append(jids, j)
		}
		l.mu.Unlock()
		for _, j := range jids {
			if !l.nc.IsConnected() {
				break // cut off: nothing can be learnt
			}
			local, domain, res := splitJID(j)
			_, err := l.nc.Request(l.fullSubject(local+"@"+domain, res), l.encode(frame{Kind: framePing}), clusterWait)
			l.checked(j, errors.Is(err, nats.ErrNoResponders))
		}
	}
}

// checked applies one liveness answer for the full JID j.
func (l *link) checked(j string, missing bool) {
	l.mu.Lock()
	p := l.remote[j]
	if p == nil {
		l.mu.Unlock()
		return
	}
	if !missing {
		p.misses = 0
		l.mu.Unlock()
		return
	}
	if p.misses++; p.misses < livenessMisses {
		l.mu.Unlock()
		return
	}
	delete(l.remote, j)
	if b, _, _ := strings.Cut(j, "/"); b != "" {
		l.noteOwnLocked(b, j, false)
	}
	watchers := p.watchers
	l.mu.Unlock()
	l.a.log.Info("xmpp: cluster: user of another hub gone without presence", "jid", j)
	for w := range watchers {
		for _, s := range l.a.availableOf(w) {
			_, _ = s.send(newElement(nsClient, "presence", "type", "unavailable", "from", j, "to", s.jid))
		}
	}
}
