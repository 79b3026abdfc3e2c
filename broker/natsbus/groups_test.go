package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// TestGroupAcrossHubs: members of one consumer group on two hubs share
// the publishes of both: each publish is delivered once in all, at QoS 0
// and 1, and both members get some; a plain subscriber on each hub gets
// every one. When one member leaves, the other gets all.
func TestGroupAcrossHubs(t *testing.T) {
	a := newBus(t, "groups", Config{Node: "a"})
	defer a.Close()
	b := newBus(t, "groups", Config{Node: "b"})
	defer b.Close()
	ctx := context.Background()
	var onA, onB, plainA, plainB atomic.Int64
	count := func(n *atomic.Int64) broker.Handler {
		return func(context.Context, *broker.Envelope) error { n.Add(1); return nil }
	}
	subs := map[*atomic.Int64]broker.Subscription{}
	for _, c := range []struct {
		bus   *Bus
		n     *atomic.Int64
		group string
	}{{a, &onA, "g"}, {b, &onB, "g"}, {a, &plainA, ""}, {b, &plainB, ""}} {
		s, err := c.bus.Subscribe(ctx, broker.SubscribeOptions{QoS: 1,
			Specs: []broker.Filter{{Topic: "t/#", QoS: 1, Group: c.group}}}, count(c.n))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Unsubscribe() }()
		subs[c.n] = s
	}
	// The queue subscriptions reach the server before the publishes.
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		pub := a
		if i%2 == 1 {
			pub = b
		}
		if err := pub.Publish(ctx, &broker.Envelope{Topic: fmt.Sprint("t/", i), Payload: []byte("x"), QoS: byte(i % 2)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every publish at both plain subscribers", func() bool { return plainA.Load() == n && plainB.Load() == n })
	waitFor(t, "every publish at the group", func() bool { return onA.Load()+onB.Load() >= n })
	time.Sleep(100 * time.Millisecond) // a second delivery would show now
	if got := onA.Load() + onB.Load(); got != n || onA.Load() == 0 || onB.Load() == 0 {
		t.Fatalf("group deliveries: %d on A, %d on B, want %d in all, some on each", onA.Load(), onB.Load(), n)
	}
	t.Logf("group deliveries: %d on A, %d on B", onA.Load(), onB.Load())

	if _, err := subs[&onB].RemoveFilter(ctx, "t/#", "g"); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := onA.Load()
	for i := range 10 {
		if err := b.Publish(ctx, &broker.Envelope{Topic: fmt.Sprint("t/x", i), Payload: []byte("y")}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the remaining member gets all", func() bool { return onA.Load()-before == 10 })
}

// clusterHub makes the hubs of bustest.RunCluster: buses of one prefix on
// the test server, each on a connection of its own, with a short AckWait
// so that a dead hub's deliveries come again soon.
func clusterHub(t *testing.T, cluster string) bustest.Hub {
	sum := sha256.Sum256([]byte(t.Name() + "/" + cluster))
	b := newBus(t, "c"+hex.EncodeToString(sum[:6]), Config{Node: cluster, AckWait: time.Second})
	return bustest.Hub{Bus: b, Kill: func() {
		b.nc.Close()
		_ = b.Close()
	}}
}

func TestCluster(t *testing.T) { bustest.RunCluster(t, clusterHub) }

// TestGroupConsumerLifetime: a group's durable consumer lives while a
// member is left on any hub: one member leaving keeps it, the last
// unsubscribing deletes it (and its record); a group whose last member
// goes with its hub's Close loses it too.
func TestGroupConsumerLifetime(t *testing.T) {
	a := newBus(t, "life", Config{Node: "a"})
	defer a.Close()
	b := newBus(t, "life", Config{Node: "b"})
	ctx := context.Background()
	k := groupKey{"g", "l/#"}
	exists := func() bool {
		_, err := a.stream.Consumer(ctx, k.consumerName())
		return err == nil
	}
	spec := []broker.Filter{{Topic: "l/#", QoS: 1, Group: "g"}}
	sa, err := a.Subscribe(ctx, broker.SubscribeOptions{QoS: 1, Specs: spec}, func(context.Context, *broker.Envelope) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Subscribe(ctx, broker.SubscribeOptions{QoS: 1, Specs: spec}, func(context.Context, *broker.Envelope) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !exists() {
		t.Fatal("no consumer for a group with members")
	}
	if err := sa.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A's record gone", func() bool {
		recs, err := a.records(ctx, "m.*."+k.queueName())
		return err == nil && len(recs) == 1
	})
	if !exists() {
		t.Fatal("the consumer went while B still has a member")
	}
	if err := sb.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the consumer deleted after the last member left", func() bool { return !exists() })

	// The last member goes with its hub.
	if _, err := b.Subscribe(ctx, broker.SubscribeOptions{QoS: 1, Specs: spec}, func(context.Context, *broker.Envelope) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !exists() {
		t.Fatal("no consumer for the group made again")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Fatal("the consumer outlived the hub of its last member")
	}
}
