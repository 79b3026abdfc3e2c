package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// inlineBus is the in-process bus with every Consume subscription asking
// for inline delivery, for the conformance suite.
type inlineBus struct{ *broker.Memory }

func (b inlineBus) Consume(ctx context.Context, opts broker.SubscribeOptions, h broker.DeliveryHandler) (broker.Subscription, error) {
	opts.Inline = true
	return b.Memory.Consume(ctx, opts, h)
}

func TestMemoryInlineConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, spool broker.Spool) broker.Bus {
		return inlineBus{newMemory(t, spool).(*broker.Memory)}
	})
}

// TestInlineDelivery: an idle inline subscription gets each envelope of a
// steady flow on the publisher's goroutine, before Publish returns; a
// flood (envelopes closer than inlineGap) goes by the subscription's
// goroutine; under concurrent
// publishers and a small window every envelope still arrives once, in
// each publisher's order.
func TestInlineDelivery(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		publishers int
		window     int
		asyncAck   bool
		flood      bool // envelopes stamped 1 µs apart
	}{
		{"one publisher", 1, 100, false, false},
		{"one publisher window 1 acks later", 1, 1, true, false},
		{"eight publishers", 8, 100, false, false},
		{"eight publishers window 2 acks later", 8, 2, true, false},
		{"one publisher flooding", 1, 100, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newMemory(t, nil)
			const n = 500
			var mu sync.Mutex
			last := make([]int, tt.publishers)
			for i := range last {
				last[i] = -1
			}
			var got atomic.Int64
			var bad atomic.Value
			var inlined atomic.Bool // every publish of the flood delivered before it returned
			inlined.Store(true)
			acks, stop := make(chan *broker.Delivery, 1024), make(chan struct{})
			defer close(stop)
			go func() {
				for {
					select {
					case d := <-acks:
						d.Ack()
					case <-stop:
						return
					}
				}
			}()
			_, err := b.Consume(context.Background(), broker.SubscribeOptions{ID: "in", Filters: []string{"in/#"}, QoS: 1,
				MaxAckPending: tt.window, QueueLen: 4 * n * tt.publishers, Inline: true}, func(d *broker.Delivery) {
				var p, i int
				if _, err := fmt.Sscanf(string(d.Envelope.Payload), "%d %d", &p, &i); err != nil {
					bad.Store(err.Error())
				}
				mu.Lock()
				if i != last[p]+1 {
					bad.Store(fmt.Sprintf("publisher %d: %d after %d", p, i, last[p]))
				}
				last[p] = i
				mu.Unlock()
				got.Add(1)
				if tt.asyncAck {
					acks <- d
				} else {
					d.Ack()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for p := range tt.publishers {
				wg.Go(func() {
					t0, step := time.Now(), time.Millisecond
					if tt.flood {
						step = time.Microsecond
					}
					for i := range n {
						// Stamped as a steady flow of 1,000 msg/s (inline), or
						// a flood.
						e := &broker.Envelope{Topic: "in/x", QoS: 1, Payload: fmt.Appendf(nil, "%d %d", p, i),
							Time: t0.Add(time.Duration(i) * step)}
						if err := b.Publish(context.Background(), e); err != nil {
							bad.Store(err.Error())
							return
						}
						if tt.publishers == 1 && !tt.asyncAck && !tt.flood && got.Load() != int64(i+1) {
							bad.Store(fmt.Sprintf("publish %d returned before its delivery (%d delivered)", i, got.Load()))
						}
						if tt.flood && i > 0 {
							inlined.Store(inlined.Load() && got.Load() == int64(i+1))
						}
					}
				})
			}
			wg.Wait()
			if tt.flood && inlined.Load() {
				t.Error("a flood was delivered inline, each before its Publish returned")
			}
			eventually(t, func() bool { return got.Load() >= int64(n*tt.publishers) })
			if v := bad.Load(); v != nil {
				t.Fatal(v)
			}
			if g := got.Load(); g != int64(n*tt.publishers) {
				t.Fatalf("%d deliveries, want %d", g, n*tt.publishers)
			}
		})
	}
}

// TestInlineDetachWaits: a detach while a publisher is in an inline
// delivery returns only once the handler has returned, and nothing is
// delivered after it.
func TestInlineDetachWaits(t *testing.T) {
	t.Parallel()
	b := newMemory(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var detached, after atomic.Bool
	var calls atomic.Int64
	var first context.Context
	sub, err := b.Consume(context.Background(), broker.SubscribeOptions{ID: "d", Filters: []string{"d"}, Inline: true},
		func(d *broker.Delivery) {
			if calls.Add(1) == 1 {
				first = d.Context()
				close(entered)
				<-release
			}
			if detached.Load() {
				after.Store(true)
			}
			d.Ack()
		})
	if err != nil {
		t.Fatal(err)
	}
	pubDone := make(chan error, 1)
	go func() { pubDone <- b.Publish(context.Background(), &broker.Envelope{Topic: "d", Payload: []byte("1")}) }()
	<-entered
	// Queued behind the inline delivery.
	if err := b.Publish(context.Background(), &broker.Envelope{Topic: "d", Payload: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	detachDone := make(chan struct{})
	go func() {
		_ = sub.Detach()
		detached.Store(true)
		close(detachDone)
	}()
	// The detach is under way (it cancels the attachment's context, then
	// waits for the publisher).
	<-first.Done()
	select {
	case <-detachDone:
		t.Fatal("Detach returned while the handler was running")
	case <-pubDone:
		t.Fatal("Publish returned while its inline delivery was running")
	default:
	}
	close(release)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	<-detachDone
	if after.Load() {
		t.Fatal("a delivery after Detach returned")
	}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDeliveryMore: deliveries of a burst that waited say More, all but
// the last; a delivery with nothing behind it does not.
func TestDeliveryMore(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		inline bool
	}{{"goroutine", false}, {"inline", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newMemory(t, nil)
			entered, release := make(chan struct{}), make(chan struct{})
			var mu sync.Mutex
			var more []bool
			_, err := b.Consume(context.Background(), broker.SubscribeOptions{ID: "m", Filters: []string{"m"}, Inline: tt.inline},
				func(d *broker.Delivery) {
					mu.Lock()
					more = append(more, d.More)
					n := len(more)
					mu.Unlock()
					if n == 1 {
						close(entered)
						<-release
					}
					d.Ack()
				})
			if err != nil {
				t.Fatal(err)
			}
			pub := func(i int) {
				if err := b.Publish(context.Background(), &broker.Envelope{Topic: "m", Payload: []byte{byte(i)}}); err != nil {
					t.Error(err)
				}
			}
			go pub(0)
			<-entered
			for i := 1; i <= 4; i++ {
				pub(i)
			}
			close(release)
			eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(more) == 5 })
			mu.Lock()
			defer mu.Unlock()
			if want := []bool{false, true, true, true, false}; fmt.Sprint(more) != fmt.Sprint(want) {
				t.Fatalf("More = %v, want %v", more, want)
			}
		})
	}
}
