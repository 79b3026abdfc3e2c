package xmpp

import (
	"context"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// A topic or PubSub subscription made or ended on one hub while the user
// is available on others too: the hub that changed it sends frameSubs on
// the user's bare-JID subject, and each other hub with an available
// resource of the user re-reads his subscription records, attaching
// those it lacks (so that his deliveries go on when the hub of the change
// loses him) and dropping those whose record is gone (their consumer was
// deleted with the record, and their QoS 0 deliveries must stop too).

// frameSubs says that the user's subscription records changed.
const frameSubs = "subs"

// subsChanged tells the other hubs where bare is available that his
// subscriptions changed.
func (l *link) subsChanged(bare string) {
	if l.elsewhere(bare) {
		l.publish(bare, frame{Kind: frameSubs})
	}
}

// onSubs re-reads the subscription records of bare, available here.
func (l *link) onSubs(bare string) {
	ss := l.a.availableOf(bare)
	if len(ss) == 0 {
		return // attached at his next presence
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() { // off the NATS callback: the records are read from NATS
		defer l.wg.Done()
		l.a.topics.resync(clientPeer{ss[0]})
	}()
}

// resync detaches the subscriptions of p whose record is gone and
// attaches those it lacks.
func (t *topicService) resync(p peer) {
	ctx := context.WithoutCancel(t.a.ctx)
	bare := p.bareJID()
	mu := t.userLock(bare)
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{}
	for _, b := range []struct{ bucket, kind string }{{topicBucket, "t "}, {pubsubBucket, "p "}, {jidBucket, "j "}} {
		kvs, err := t.a.cfg.Store.KVList(ctx, b.bucket)
		if err != nil {
			t.a.log.Warn("xmpp: cluster: subscriptions", "jid", bare, "err", err)
			return // nothing dropped on a failed read
		}
		for _, kv := range kvs {
			if name, ok := strings.CutPrefix(kv.Key, bare+" "); ok {
				want[b.kind+name] = true
			}
		}
	}
	t.mu.Lock()
	var gone []broker.Subscription
	for key, sub := range t.subs[bare] {
		if !want[key] {
			gone = append(gone, sub)
			delete(t.subs[bare], key)
		}
	}
	t.mu.Unlock()
	for _, sub := range gone {
		_ = sub.Detach() // its consumer went with the record, on the hub that ended it
	}
	t.userOnline(p)
	if len(t.a.availableOf(bare)) == 0 {
		t.userOffline(bare) // he left meanwhile: nothing stays attached for him here
	}
}
