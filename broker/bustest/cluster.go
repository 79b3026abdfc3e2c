package bustest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// Hub is one bus of a cluster, as a ClusterFactory makes it.
type Hub struct {
	Bus broker.Bus
	// Kill makes the hub die: its connection to the others goes first,
	// without a goodbye (no nack, no detach reaches them), then the bus
	// closes.
	Kill func()
}

// ClusterFactory makes one more hub of the cluster named cluster (hubs of
// one name share their topics, groups and durable queues); the suite
// kills or closes it.
type ClusterFactory func(t *testing.T, cluster string) Hub

// RedeliveryWait bounds how long the cluster cases wait for an envelope
// out to a dead hub to come again: a ClusterFactory's AckWait must be
// well under it.
const RedeliveryWait = 15 * time.Second

// RunCluster runs the cases of a clustered bus: consumer groups whose
// members are on several hubs.
func RunCluster(t *testing.T, newHub ClusterFactory) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, ClusterFactory)
	}{
		{"GroupRedeliveryAfterHubDies", testGroupHubDies},
		{"GroupPersistentMembersQueue", testGroupPersistent},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newHub) })
	}
}

func openHub(t *testing.T, f ClusterFactory, cluster string) Hub {
	h := f(t, cluster)
	t.Cleanup(func() { _ = h.Bus.Close() })
	return h
}

// groupCounter records, by payload, the group deliveries a hub's member
// acknowledged.
type groupCounter struct {
	mu    sync.Mutex
	acked map[string]int
	redo  int
}

func (c *groupCounter) add(d *broker.Delivery) {
	c.mu.Lock()
	c.acked[string(d.Envelope.Payload)]++
	if d.Redelivered {
		c.redo++
	}
	c.mu.Unlock()
	d.Ack()
}

func (c *groupCounter) counts() (distinct, dups, redo int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.acked {
		distinct++
		dups += n - 1
	}
	return distinct, dups, c.redo
}

// testGroupHubDies: a group has a member on A and one on B; B's member
// takes its share and acknowledges nothing, then B's hub dies. Every
// publish reaches A's member, B's share redelivered (after the bus's
// AckWait), none twice.
func testGroupHubDies(t *testing.T, f ClusterFactory) {
	a, b := openHub(t, f, "dies"), openHub(t, f, "dies")
	spec := []broker.Filter{{Topic: "job/#", QoS: 1, Group: "w"}}
	onA := &groupCounter{acked: map[string]int{}}
	sa := consume(t, a.Bus, broker.SubscribeOptions{QoS: 1, Specs: spec, MaxAckPending: 100}, onA.add)
	defer func() { _ = sa.Unsubscribe() }()
	onB := NewDeliveries() // holds, never acks
	consume(t, b.Bus, broker.SubscribeOptions{QoS: 1, Specs: spec, MaxAckPending: 100}, onB.Handle)
	const n = 40
	for i := range n {
		pub(t, a.Bus, fmt.Sprint("job/", i%4), fmt.Sprint(i), 1)
	}
	// Both members hold a share of the publishes before B dies.
	deadline := time.Now().Add(wait)
	for {
		got, _, _ := onA.counts()
		if got+onB.Len() >= n && onB.Len() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("before the kill: %d on A, %d on B, want %d in all, some on B", got, onB.Len(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	held := onB.Len()
	killed := time.Now()
	b.Kill()
	deadline = time.Now().Add(RedeliveryWait)
	for {
		got, _, _ := onA.counts()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after B died: %d of %d publishes at A (B held %d)", got, n, held)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, dups, redo := onA.counts()
	if dups != 0 || redo < held {
		t.Fatalf("at A: %d publishes, %d twice, %d redelivered; B had held %d", got, dups, redo, held)
	}
	// The last delivery's ack follows its handler: wait for it to settle.
	for deadline := time.Now().Add(wait); ; time.Sleep(5 * time.Millisecond) {
		st := sa.Stats()
		if st.Delivered == n && st.Redelivered == uint64(redo) && st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's member's counters: %+v, want %d delivered, %d redelivered, none pending", st, n, redo)
		}
	}
	t.Logf("B held %d of %d and died; A had them all %v after the kill, %d redelivered, 0 twice", held, n, time.Since(killed).Round(time.Millisecond), redo)
}

// testGroupPersistent: a group whose members are durable subscriptions
// (persistent sessions) keeps what is published while all of them are
// away, on any hub, for the first back, which may come back on another
// hub; once every member has unsubscribed, a new member gets only what
// is published after it joined.
func testGroupPersistent(t *testing.T, f ClusterFactory) {
	a, b := openHub(t, f, "persist"), openHub(t, f, "persist")
	ctx := context.Background()
	spec := []broker.Filter{{Topic: "p/+", QoS: 1, Group: "g"}}
	s1 := consume(t, a.Bus, broker.SubscribeOptions{ID: "s1", Durable: true, QoS: 1, Specs: spec}, func(d *broker.Delivery) { d.Ack() })
	s2 := consume(t, b.Bus, broker.SubscribeOptions{ID: "s2", Durable: true, QoS: 1, Specs: spec}, func(d *broker.Delivery) { d.Ack() })
	if err := s1.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Detach(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		pub(t, a.Bus, fmt.Sprint("p/", i%2), fmt.Sprint(i), 1)
	}
	pub(t, a.Bus, "p/x", "live only", 0) // QoS 0: for members attached now, and there are none
	// s1 comes back on B, with its filters as they were.
	back := NewDeliveries()
	r1 := consume(t, b.Bus, broker.SubscribeOptions{ID: "s1", Durable: true, QoS: 1, KeepFilters: true}, back.Handle)
	ds := back.Wait(t, n)
	seen := map[string]bool{}
	for _, d := range ds {
		if d.QoS != 1 {
			t.Errorf("queued group delivery %q at QoS %d, want 1", d.Envelope.Payload, d.QoS)
		}
		seen[string(d.Envelope.Payload)] = true
		d.Ack()
	}
	if len(seen) != n {
		t.Fatalf("the member back got %d distinct of the %d publishes made while all were away: %v", len(seen), n, payloads(ds))
	}
	back.Stays(t, n)
	// Every member leaves for good: the group is gone, and what is
	// published meanwhile is nobody's.
	if err := r1.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := broker.Forget(ctx, a.Bus, "s2"); err != nil {
		t.Fatal(err)
	}
	pub(t, a.Bus, "p/0", "nobody's", 1)
	fresh := NewDeliveries()
	s3 := consume(t, a.Bus, broker.SubscribeOptions{ID: "s3", Durable: true, QoS: 1, Specs: spec}, fresh.Handle)
	defer func() { _ = s3.Unsubscribe() }()
	pub(t, b.Bus, "p/1", "new", 1)
	got := fresh.Wait(t, 1)
	fresh.Stays(t, 1)
	if p := string(got[0].Envelope.Payload); p != "new" {
		t.Fatalf("a member of a group made anew got %q first, want \"new\" (the group was not deleted)", p)
	}
}
