package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/hubsmith/hub/broker"
)

// Consumer groups across the cluster (MQTT shared subscriptions): one
// delivery per group per publish among the members on every hub. The
// in-process part of each hub routes envelopes to every filter but the
// group ones (broker.WithoutGroups). A hub with members of group G on
// filter F holds, for (G, F):
//
//   - at QoS 0, a NATS queue subscription, queue named after (G, F), on
//     the live subjects of F, so that NATS hands each envelope to one hub
//     among those with members, and that hub's in-process part to one of
//     its members (broker.OnlyGroup);
//   - at QoS >= 1, pulls from the group's durable JetStream consumer
//     (groups_durable.go), shared by every hub with members, so that an
//     envelope out to a member on a hub that dies is delivered again to
//     a member elsewhere after AckWait, and one published while every
//     member is a persistent session away waits for the first back.
//
// A hub cut off from NATS routes its own QoS 0 publishes to its own
// members.

// groupKey is a consumer group on a filter.
type groupKey struct{ group, topic string }

// queueName is the NATS queue of a group on a filter: the same on every
// hub, and in the letters a queue name allows.
func (k groupKey) queueName() string {
	h := sha256.Sum256([]byte(k.group + "\x00" + k.topic))
	return "g_" + hex.EncodeToString(h[:12])
}

// consumerName is the durable JetStream consumer of the group.
func (k groupKey) consumerName() string { return "grp_" + k.queueName()[2:] }

// groupSubs are a hub's groups with members here.
type groupSubs struct {
	mu sync.Mutex
	m  map[groupKey]*groupSub
}

// groupSub is one group on this hub: its members here, its queue
// subscriptions (QoS 0) and its puller (QoS >= 1).
type groupSub struct {
	k       groupKey
	members []*groupMember // guarded by groupSubs.mu
	next    int            // round robin, guarded by groupSubs.mu
	subs    []*nats.Subscription
	pull    *groupPuller
}

// groupMember is one subscription's filter in a group, on this hub.
type groupMember struct {
	g      *grouped
	gs     *groupSub
	ctx    context.Context // ends when it leaves
	cancel context.CancelFunc

	mu sync.Mutex
	f  broker.Filter
	// pending are the group deliveries out to a non-durable member and
	// not acknowledged, with their reply subjects (a durable member keeps
	// them among its own pending, in its window).
	pending map[*broker.Delivery]string
	left    bool
}

// groupJoin makes m a member of k on this hub: its record goes to the KV
// bucket first (so that a hub that sees the group empty does not delete
// the consumer under it), then the first member here subscribes the
// queue and starts pulling the consumer.
func (b *Bus) groupJoin(k groupKey, m *groupMember) error {
	b.putMember(k, m)
	g := &b.groups
	g.mu.Lock()
	if gs := g.m[k]; gs != nil {
		m.gs = gs
		gs.members = append(gs.members, m)
		g.mu.Unlock()
		gs.pull.kickNow()
		return nil
	}
	subjects, err := broker.FilterToSubjects(b.liveSubj, k.topic)
	if err != nil {
		g.mu.Unlock()
		return fmt.Errorf("natsbus: group %q on %q: %w", k.group, k.topic, err)
	}
	gs := &groupSub{k: k, members: []*groupMember{m}}
	for _, subj := range subjects {
		s, err := b.nc.QueueSubscribe(subj, k.queueName(), func(msg *nats.Msg) { b.onGroup(k, msg) })
		if err != nil {
			for _, s := range gs.subs {
				_ = s.Unsubscribe()
			}
			g.mu.Unlock()
			return fmt.Errorf("natsbus: group %q on %q: %w", k.group, k.topic, err)
		}
		gs.subs = append(gs.subs, s)
	}
	m.gs = gs
	if g.m == nil {
		g.m = map[groupKey]*groupSub{}
	}
	g.m[k] = gs
	// The consumer exists before the subscribe returns, so that what is
	// published next is the group's; a failure (NATS away) is the
	// puller's to retry.
	if err := b.ensureGroupConsumer(b.ctx, k); err != nil {
		b.log.Warn("natsbus: group consumer", "group", k.group, "filter", k.topic, "err", err)
	}
	gs.pull = b.startPuller(gs)
	g.mu.Unlock()
	return nil
}

// groupLeave takes m out of k on this hub; the last member here
// unsubscribes the queue and stops pulling. What was out to m and not
// acknowledged goes back to the consumer, for another member. forGood
// (an unsubscribe, not a persistent session going away) deletes m's
// record, and the consumer once no member is left on any hub, in the
// background: an unsubscribe (a client going) does not wait on the
// bucket, which may be slow to answer, or not at all when NATS has just
// gone.
func (b *Bus) groupLeave(k groupKey, m *groupMember, forGood bool) {
	if fn := b.groupOut(k, m, forGood); fn != nil {
		b.background(fn)
	}
}

// groupOut is groupLeave, returning the bucket's part (nil: none) for
// the caller to run.
func (b *Bus) groupOut(k groupKey, m *groupMember, forGood bool) func() {
	g := &b.groups
	g.mu.Lock()
	gs := g.m[k]
	last := false
	if gs != nil {
		for i, o := range gs.members {
			if o == m {
				gs.members = append(gs.members[:i:i], gs.members[i+1:]...)
				break
			}
		}
		if last = len(gs.members) == 0; last {
			for _, s := range gs.subs {
				_ = s.Unsubscribe()
			}
			delete(g.m, k)
		}
	}
	g.mu.Unlock()
	m.cancel()
	m.mu.Lock()
	m.left = true
	out := m.pending
	m.pending = nil
	m.mu.Unlock()
	for _, reply := range out {
		b.ack(reply, "-NAK", false)
	}
	if last {
		gs.pull.stop()
	}
	if !forGood {
		return nil
	}
	return func() {
		b.dropMember(k, m.g.ID())
		if last {
			b.groupGone(k)
		}
	}
}

// background runs fn on a goroutine of the bus, or at once (with the
// bus's context done) once Close waits for them.
func (b *Bus) background(fn func()) {
	b.mu.Lock()
	if b.waiting {
		b.mu.Unlock()
		fn()
		return
	}
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		fn()
	}()
}

// hasMembers reports whether this hub has members of k.
func (b *Bus) hasMembers(k groupKey) bool {
	b.groups.mu.Lock()
	defer b.groups.mu.Unlock()
	return b.groups.m[k] != nil
}

// closeGroups drops every queue subscription and puller (Close); the
// records of non-durable members go, and a group with none left
// anywhere loses its consumer.
func (b *Bus) closeGroups() {
	g := &b.groups
	g.mu.Lock()
	var left []*groupMember
	for _, gs := range g.m {
		left = append(left, gs.members...)
	}
	g.mu.Unlock()
	// Cut off from NATS, the hub leaves its records for the others to
	// find stale (by its heartbeat) rather than wait on each.
	connected := b.nc.Status() == nats.CONNECTED
	for _, m := range left {
		if fn := b.groupOut(m.gs.k, m, m.g.d == nil && connected); fn != nil {
			fn() // now, while the bus's context lives
		}
	}
	b.stopHeartbeat()
}

// onGroup routes an envelope at QoS 0 NATS chose this hub for to one
// member of k; at QoS >= 1 the group's consumer delivers it.
func (b *Bus) onGroup(k groupKey, m *nats.Msg) {
	e, err := broker.UnmarshalEnvelope(m.Data)
	if err != nil {
		b.log.Warn("natsbus: undecodable envelope", "subject", m.Subject, "err", err)
		return
	}
	if e.QoS > 0 {
		return
	}
	if err := b.mem.Publish(broker.OnlyGroup(b.ctx, k.group, k.topic), e); err != nil && !errors.Is(err, broker.ErrClosed) {
		b.log.Warn("natsbus: route envelope to a group", "topic", e.Topic, "group", k.group, "err", err)
	}
}

// localRoute is the context a publish of this hub is routed with in its
// in-process part: group members are NATS's to choose while connected,
// and always at QoS >= 1 (the group's consumer has the envelope).
func (b *Bus) localRoute(ctx context.Context, e *broker.Envelope) context.Context {
	if e.QoS == 0 && b.nc.Status() != nats.CONNECTED {
		return ctx
	}
	return broker.WithoutGroups(ctx)
}

// memberOf is what a group delivery to a subscription needs.
type memberOf struct {
	opts broker.SubscribeOptions
	// h takes the group deliveries, one at a time with the in-process
	// part's.
	h broker.DeliveryHandler
	// window bounds a non-durable member's group deliveries out.
	window int
	// d is the attachment of a durable subscription (nil: none), whose
	// window and pending the group deliveries share.
	d *durable
}

// grouped is a subscription of the in-process part whose group filters
// are members of cluster-wide groups.
type grouped struct {
	broker.Subscription
	memberOf
	b *Bus

	mu     sync.Mutex
	joined map[groupKey]*groupMember

	// The group deliveries of a non-durable subscription (a durable
	// one's count among its own).
	delivered, redelivered atomic.Uint64
}

// Stats implements broker.Subscription: the in-process part's counters
// with the group deliveries.
func (g *grouped) Stats() broker.SubscriptionStats {
	st := g.Subscription.Stats()
	if g.d != nil {
		return st
	}
	st.Delivered += g.delivered.Load()
	st.Redelivered += g.redelivered.Load()
	g.mu.Lock()
	for _, m := range g.joined {
		m.mu.Lock()
		st.Pending += len(m.pending)
		m.mu.Unlock()
	}
	g.mu.Unlock()
	return st
}

// trackGroups makes the group filters of s (now and as they change)
// members of their cluster-wide groups.
func (b *Bus) trackGroups(s broker.Subscription, err error, mo memberOf) (broker.Subscription, error) {
	if err != nil {
		return nil, err
	}
	if mo.window <= 0 {
		mo.window = broker.DefaultMaxAckPending
	}
	g := &grouped{Subscription: s, memberOf: mo, b: b, joined: map[groupKey]*groupMember{}}
	for _, f := range s.Filters() {
		if f.Group != "" {
			g.join(f)
		}
	}
	return g, nil
}

func (g *grouped) join(f broker.Filter) {
	k := groupKey{f.Group, f.Topic}
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.joined[k]; m != nil {
		m.mu.Lock()
		m.f = f
		m.mu.Unlock()
		return
	}
	m := &groupMember{g: g, f: f, pending: map[*broker.Delivery]string{}}
	m.ctx, m.cancel = context.WithCancel(g.b.ctx)
	if err := g.b.groupJoin(k, m); err != nil {
		m.cancel()
		g.b.log.Warn("natsbus: join a group", "subscriber", g.ID(), "err", err)
		return
	}
	g.joined[k] = m
}

func (g *grouped) leave(k groupKey, forGood bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.joined[k]; m != nil {
		delete(g.joined, k)
		g.b.groupLeave(k, m, forGood)
	}
}

// leaveAll takes the subscription out of its groups: for good unless it
// is a durable subscription's part, which ends with every detach.
func (g *grouped) leaveAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, m := range g.joined {
		g.b.groupLeave(k, m, g.d == nil)
	}
	g.joined = map[groupKey]*groupMember{}
}

// AddFilter implements broker.Subscription.
func (g *grouped) AddFilter(ctx context.Context, f broker.Filter) (bool, error) {
	existed, err := g.Subscription.AddFilter(ctx, f)
	if err == nil && f.Group != "" {
		g.join(f)
	}
	return existed, err
}

// RemoveFilter implements broker.Subscription.
func (g *grouped) RemoveFilter(ctx context.Context, topic, group string) (bool, error) {
	existed, err := g.Subscription.RemoveFilter(ctx, topic, group)
	if err == nil && group != "" {
		g.leave(groupKey{group, topic}, true)
	}
	return existed, err
}

// Unsubscribe implements broker.Subscription.
func (g *grouped) Unsubscribe() error {
	g.leaveAll()
	return g.Subscription.Unsubscribe()
}

// Detach implements broker.Subscription.
func (g *grouped) Detach() error {
	g.leaveAll()
	return g.Subscription.Detach()
}
