package broker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// gatedSpool is an AsyncSpool whose writes wait until commit: the store's
// writer before it begins a transaction.
type gatedSpool struct {
	*bustest.MemSpool
	mu        sync.Mutex
	pending   []*gatedWrite
	withdrawn atomic.Int32
}

type gatedWrite struct {
	e     *broker.Envelope
	refs  []broker.QueueRef
	done  func(error)
	state atomic.Int32 // 0 pending, 1 taken, 2 withdrawn
}

func (g *gatedSpool) EnqueueAsync(ctx context.Context, e *broker.Envelope, refs []broker.QueueRef, done func(error)) func() bool {
	w := &gatedWrite{e: e, refs: refs, done: done}
	g.mu.Lock()
	g.pending = append(g.pending, w)
	g.mu.Unlock()
	return func() bool {
		if !w.state.CompareAndSwap(0, 2) {
			return false
		}
		g.withdrawn.Add(1)
		return true
	}
}

// commit runs the writes not withdrawn, as the store's writer does, and
// reports how many it wrote.
func (g *gatedSpool) commit(ctx context.Context) int {
	g.mu.Lock()
	ws := g.pending
	g.pending = nil
	g.mu.Unlock()
	n := 0
	for _, w := range ws {
		if w.state.CompareAndSwap(0, 1) {
			w.done(g.Enqueue(ctx, w.e, w.refs))
			n++
		}
	}
	return n
}

// deliveries collects a consumer's deliveries without acknowledging them.
type deliveries chan *broker.Delivery

func (d deliveries) handle(x *broker.Delivery) { d <- x }

func (d deliveries) next(t *testing.T) *broker.Delivery {
	t.Helper()
	select {
	case x := <-d:
		return x
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
		return nil
	}
}

func (d deliveries) none(t *testing.T, what string) {
	t.Helper()
	select {
	case x := <-d:
		t.Fatalf("%s: delivered %q before its write was committed", what, x.Envelope.Payload)
	default:
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newGated(t *testing.T) (*gatedSpool, *broker.Memory) {
	t.Helper()
	g := &gatedSpool{MemSpool: bustest.NewMemSpool()}
	b, err := broker.NewMemory(broker.MemoryConfig{Spool: g, Node: "test", WriteThrough: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return g, b
}

func consume(t *testing.T, b broker.Bus, id string, qos byte) (broker.Subscription, deliveries) {
	t.Helper()
	d := make(deliveries, 16)
	s, err := b.Consume(context.Background(), broker.SubscribeOptions{ID: id, Durable: true, Filters: []string{"t/#"}, QoS: qos,
		MaxAckPending: 8, Principal: "alice"}, d.handle)
	if err != nil {
		t.Fatal(err)
	}
	return s, d
}

// settle returns once the consumer's start is over: a new durable
// subscription reads its stored queue first, and until that read ends
// what is published goes through the spool. It probes with QoS 1
// publishes until one is delivered before its commit, and leaves the
// queue and the counters empty.
func settle(t *testing.T, g *gatedSpool, b *broker.Memory, id string, d deliveries) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		r := publish(t, b, "probe", 1)
		select {
		case x := <-d:
			x.Ack()
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			g.commit(ctx)
			g.withdrawn.Store(0)
			return
		case <-time.After(10 * time.Millisecond):
			g.commit(ctx)
			d.next(t).Ack()
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the probe removed", func() bool { return g.Len(id) == 0 })
		}
	}
	t.Fatal("no delivery before its commit")
}

type result chan error

func publish(t *testing.T, b broker.Bus, payload string, qos byte) result {
	t.Helper()
	r := make(result, 1)
	e := &broker.Envelope{Topic: "t/x", Payload: []byte(payload), QoS: qos}
	if err := b.PublishAsync(context.Background(), e, func(err error) { r <- err }); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r result) pending(t *testing.T) {
	t.Helper()
	select {
	case err := <-r:
		t.Fatalf("publish answered (%v) before its write was committed or withdrawn", err)
	default:
	}
}

func (r result) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("publish never answered")
		return nil
	}
}

// noQueuedBytes fails when alice is charged for queued bytes: every case
// ends with nothing queued.
func noQueuedBytes(t *testing.T, b *broker.Memory) {
	t.Helper()
	if u := b.Usage("alice"); u.QueuedBytes != 0 {
		t.Fatalf("alice is charged %d queued bytes, want 0", u.QueuedBytes)
	}
}

// settled is a bus over a gated spool with durable consumer "d" past its
// start (settle).
func settled(t *testing.T) (*gatedSpool, *broker.Memory, broker.Subscription, deliveries) {
	t.Helper()
	g, b := newGated(t)
	s, d := consume(t, b, "d", 1)
	settle(t, g, b, "d", d)
	return g, b, s, d
}

// detachEmpty detaches s, which removes what it acknowledged, and fails
// unless d's queue is then empty and nothing is charged for it.
func detachEmpty(t *testing.T, g *gatedSpool, b *broker.Memory, s broker.Subscription) {
	t.Helper()
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	if n := g.Len("d"); n != 0 {
		t.Fatalf("queue holds %d after the acknowledgement", n)
	}
	noQueuedBytes(t, b)
}

// TestEarlyDelivery: a QoS 1 envelope for one durable subscriber goes
// out before its store write is committed; acknowledged before the
// writer begins, its write is withdrawn and the publisher answered then.
func TestEarlyDelivery(t *testing.T) {
	ctx := context.Background()
	t.Run("acknowledged first: withdrawn, nothing stored", func(t *testing.T) {
		g, b, s, d := settled(t)
		r := publish(t, b, "one", 1)
		x := d.next(t)
		r.pending(t)
		x.Ack()
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		if n := g.commit(ctx); n != 0 || g.withdrawn.Load() != 1 {
			t.Fatalf("wrote %d, withdrew %d: want the write withdrawn", n, g.withdrawn.Load())
		}
		detachEmpty(t, g, b, s)
	})
	t.Run("committed first: acknowledged as any stored entry", func(t *testing.T) {
		g, b, s, d := settled(t)
		r := publish(t, b, "one", 1)
		x := d.next(t)
		if n := g.commit(ctx); n != 1 {
			t.Fatalf("wrote %d", n)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		if n := g.Len("d"); n != 1 {
			t.Fatalf("queue holds %d before the acknowledgement, want 1", n)
		}
		x.Ack()
		detachEmpty(t, g, b, s)
	})
	t.Run("acknowledged while being written: removed once written", func(t *testing.T) {
		g, b, _, d := settled(t)
		r := publish(t, b, "one", 1)
		x := d.next(t)
		// The writer takes the write; the acknowledgement comes meanwhile.
		g.mu.Lock()
		w := g.pending[0]
		g.pending = nil
		g.mu.Unlock()
		w.state.Store(1)
		x.Ack()
		r.pending(t)
		w.done(g.Enqueue(ctx, w.e, w.refs))
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the acknowledged entry removed", func() bool { return g.Len("d") == 0 })
		waitFor(t, "its bytes uncharged", func() bool { return b.Usage("alice").QueuedBytes == 0 })
	})
	t.Run("detached before the acknowledgement: delivered again", func(t *testing.T) {
		g, b, s, d := settled(t)
		r := publish(t, b, "one", 1)
		d.next(t)
		if err := s.Detach(); err != nil {
			t.Fatal(err)
		}
		g.commit(ctx)
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		_, d = consume(t, b, "d", 1)
		if x := d.next(t); string(x.Envelope.Payload) != "one" || !x.Redelivered {
			t.Fatalf("got %q (redelivered %v), want one again", x.Envelope.Payload, x.Redelivered)
		}
	})
	t.Run("write failed after the delivery", func(t *testing.T) {
		g, b, s, d := settled(t)
		r := publish(t, b, "one", 1)
		x := d.next(t)
		g.FailEnqueue = errors.New("disk full")
		g.commit(ctx)
		if err := r.wait(t); !errors.Is(err, broker.ErrStorage) {
			t.Fatalf("publish: %v, want ErrStorage", err)
		}
		x.Ack()
		g.FailEnqueue = nil
		detachEmpty(t, g, b, s)
	})
	for _, tc := range []struct {
		name string
		qos  byte
		subs []string
	}{
		{"QoS 2 waits for the commit", 2, []string{"d"}},
		{"two durable subscribers wait for the commit", 1, []string{"d1", "d2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, b := newGated(t)
			var ds []deliveries
			for i, id := range tc.subs {
				_, d := consume(t, b, id, tc.qos)
				if i == 0 {
					settle(t, g, b, id, d) // else it would wait for its start
				}
				ds = append(ds, d)
			}
			r := publish(t, b, "one", tc.qos)
			time.Sleep(20 * time.Millisecond) // room for a wrong early delivery
			for _, d := range ds {
				d.none(t, tc.name)
			}
			if n := g.commit(ctx); n != 1 {
				t.Fatalf("wrote %d", n)
			}
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				d.next(t).Ack()
			}
			waitFor(t, "the acknowledged entries removed", func() bool { return b.Usage("alice").QueuedBytes == 0 })
		})
	}
}
