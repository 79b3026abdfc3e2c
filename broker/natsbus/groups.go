package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/hubsmith/hub/broker"
)

// Consumer groups across the cluster (MQTT shared subscriptions): one
// delivery per group per publish among the members on every hub. The
// in-process part of each hub routes envelopes to every filter but the
// group ones (broker.WithoutGroups); a hub with members of group G on
// filter F holds a NATS queue subscription, queue named after (G, F), on
// the live subjects of F, so that NATS hands each envelope to one hub
// among those with members, and that hub's in-process part to one of its
// members (broker.OnlyGroup). A hub cut off from NATS routes its own
// publishes to its own members.

// groupKey is a consumer group on a filter.
type groupKey struct{ group, topic string }

// queueName is the NATS queue of a group on a filter: the same on every
// hub, and in the letters a queue name allows.
func (k groupKey) queueName() string {
	h := sha256.Sum256([]byte(k.group + "\x00" + k.topic))
	return "g_" + hex.EncodeToString(h[:12])
}

// groupSubs are a hub's queue subscriptions, counted by members.
type groupSubs struct {
	mu sync.Mutex
	m  map[groupKey]*groupSub
}

type groupSub struct {
	members int
	subs    []*nats.Subscription
}

// groupJoin counts a member of k on this hub, subscribing the queue for
// the first.
func (b *Bus) groupJoin(k groupKey) error {
	g := &b.groups
	g.mu.Lock()
	defer g.mu.Unlock()
	if gs := g.m[k]; gs != nil {
		gs.members++
		return nil
	}
	subjects, err := broker.FilterToSubjects(b.liveSubj, k.topic)
	if err != nil {
		return fmt.Errorf("natsbus: group %q on %q: %w", k.group, k.topic, err)
	}
	gs := &groupSub{members: 1}
	for _, subj := range subjects {
		s, err := b.nc.QueueSubscribe(subj, k.queueName(), func(m *nats.Msg) { b.onGroup(k, m) })
		if err != nil {
			for _, s := range gs.subs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("natsbus: group %q on %q: %w", k.group, k.topic, err)
		}
		gs.subs = append(gs.subs, s)
	}
	if g.m == nil {
		g.m = map[groupKey]*groupSub{}
	}
	g.m[k] = gs
	return nil
}

// groupLeave counts a member of k gone, unsubscribing after the last.
func (b *Bus) groupLeave(k groupKey) {
	g := &b.groups
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.m[k]
	if gs == nil {
		return
	}
	if gs.members--; gs.members > 0 {
		return
	}
	for _, s := range gs.subs {
		_ = s.Unsubscribe()
	}
	delete(g.m, k)
}

// closeGroups drops every queue subscription (Close).
func (b *Bus) closeGroups() {
	g := &b.groups
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, gs := range g.m {
		for _, s := range gs.subs {
			_ = s.Unsubscribe()
		}
		delete(g.m, k)
	}
}

// onGroup routes an envelope NATS chose this hub for to one member of k.
func (b *Bus) onGroup(k groupKey, m *nats.Msg) {
	e, err := broker.UnmarshalEnvelope(m.Data)
	if err != nil {
		b.log.Warn("natsbus: undecodable envelope", "subject", m.Subject, "err", err)
		return
	}
	if err := b.mem.Publish(broker.OnlyGroup(b.ctx, k.group, k.topic), e); err != nil && !errors.Is(err, broker.ErrClosed) {
		b.log.Warn("natsbus: route envelope to a group", "topic", e.Topic, "group", k.group, "err", err)
	}
}

// localRoute is the context a publish of this hub is routed with in its
// in-process part: group members are NATS's to choose while connected.
func (b *Bus) localRoute(ctx context.Context) context.Context {
	if b.nc.Status() != nats.CONNECTED {
		return ctx
	}
	return broker.WithoutGroups(ctx)
}

// grouped is a subscription of the in-process part whose group filters
// are members of cluster-wide groups.
type grouped struct {
	broker.Subscription
	b *Bus

	mu     sync.Mutex
	joined map[groupKey]bool
}

// trackGroups makes the group filters of s (now and as they change)
// members of their cluster-wide groups.
func (b *Bus) trackGroups(s broker.Subscription, err error) (broker.Subscription, error) {
	if err != nil {
		return nil, err
	}
	g := &grouped{Subscription: s, b: b, joined: map[groupKey]bool{}}
	for _, f := range s.Filters() {
		if f.Group != "" {
			g.join(groupKey{f.Group, f.Topic})
		}
	}
	return g, nil
}

func (g *grouped) join(k groupKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.joined[k] {
		return
	}
	if err := g.b.groupJoin(k); err != nil {
		g.b.log.Warn("natsbus: join a group", "subscriber", g.ID(), "err", err)
		return
	}
	g.joined[k] = true
}

func (g *grouped) leave(k groupKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.joined[k] {
		delete(g.joined, k)
		g.b.groupLeave(k)
	}
}

func (g *grouped) leaveAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.joined {
		g.b.groupLeave(k)
	}
	g.joined = map[groupKey]bool{}
}

// AddFilter implements broker.Subscription.
func (g *grouped) AddFilter(ctx context.Context, f broker.Filter) (bool, error) {
	existed, err := g.Subscription.AddFilter(ctx, f)
	if err == nil && f.Group != "" {
		g.join(groupKey{f.Group, f.Topic})
	}
	return existed, err
}

// RemoveFilter implements broker.Subscription.
func (g *grouped) RemoveFilter(ctx context.Context, topic, group string) (bool, error) {
	existed, err := g.Subscription.RemoveFilter(ctx, topic, group)
	if err == nil && group != "" {
		g.leave(groupKey{group, topic})
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
