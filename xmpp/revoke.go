package xmpp

import (
	"context"
	"strings"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

var _ adapters.Revoker = (*Adapter)(nil)

// revokeTimeout bounds the store work of one Revoke.
const revokeTimeout = 10 * time.Second

// Revoke implements adapters.Revoker: every c2s session of the user
// principal ends with a <not-authorized/> stream error (a session waiting
// for XEP-0198 resumption ends too), and what the hub keeps for the user
// is forgotten: its topic, template-JID and PubSub subscriptions with
// their durable bus queues, its roster and its offline messages. Other
// users' roster items that name the user are left as they are. It returns
// how many streams it closed.
func (a *Adapter) Revoke(ctx context.Context, principal string) int {
	if principal == "" {
		return 0
	}
	bare := principal + "@" + a.cfg.Domain
	n := 0
	se := &streamError{Condition: "not-authorized", Text: "the account was deleted or changed"}
	for _, s := range a.sessionsOf(bare) {
		s.mu.Lock()
		if s.conn != nil && !s.done {
			s.closeOutLocked(s.conn)
			_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			_, _ = s.conn.Write(append(se.bytes(), "</stream:stream>"...))
			n++
		}
		s.mu.Unlock()
		a.metrics.streamErrors.WithLabelValues(se.Condition).Inc()
		s.terminate()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	a.forgetUser(sctx, principal, bare)
	a.log.Info("xmpp: principal revoked", "user", principal, "closed", n)
	return n
}

// forgetUser drops the stored state of a user: subscriptions (record and
// bus queue), roster and offline messages.
func (a *Adapter) forgetUser(ctx context.Context, user, bare string) {
	a.topics.mu.Lock()
	subs := a.topics.subs[bare]
	delete(a.topics.subs, bare)
	a.topics.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	prefix := bare + " "
	for _, b := range []struct{ bucket, kind string }{
		{topicBucket, "xmpp"}, {pubsubBucket, "xmpp-ps"}, {jidBucket, "xmpp-jid"},
	} {
		kvs, err := a.cfg.Store.KVList(ctx, b.bucket)
		if err != nil {
			a.log.Warn("xmpp: revoke: subscriptions", "user", user, "bucket", b.bucket, "err", err)
			continue
		}
		for _, kv := range kvs {
			name, ok := strings.CutPrefix(kv.Key, prefix)
			if !ok {
				continue
			}
			id := b.kind + ":" + string(kv.Value) + ":" + name
			if err := broker.Forget(ctx, a.cfg.Bus, id); err != nil {
				a.log.Warn("xmpp: revoke: forget subscription", "user", user, "subscription", id, "err", err)
			}
			_ = a.cfg.Store.KVDelete(ctx, b.bucket, kv.Key)
		}
	}
	for _, bucket := range []string{rosterBucket(user), offlineBucket(user)} {
		kvs, err := a.cfg.Store.KVList(ctx, bucket)
		if err != nil {
			a.log.Warn("xmpp: revoke: list", "user", user, "bucket", bucket, "err", err)
			continue
		}
		for _, kv := range kvs {
			_ = a.cfg.Store.KVDelete(ctx, bucket, kv.Key)
		}
	}
}
