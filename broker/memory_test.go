package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMemory(t *testing.T, spool broker.Spool) broker.Bus {
	b, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMemoryConformance(t *testing.T) { bustest.Run(t, newMemory) }

func TestMemoryWriteThroughConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, spool broker.Spool) broker.Bus {
		b, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, Node: "test", WriteThrough: true})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// BenchmarkPublish measures publish → delivery through the in-process bus
// to 1 and to 1000 subscribers of the same topic.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			bus, err := broker.NewMemory(broker.MemoryConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			var got atomic.Int64
			done := make(chan struct{})
			want := int64(b.N) * int64(n)
			h := func(context.Context, *broker.Envelope) error {
				if got.Add(1) == want {
					close(done)
				}
				return nil
			}
			for i := range n {
				if _, err := bus.Subscribe(context.Background(), broker.SubscribeOptions{
					Filters: []string{"bench/+/0", "other/" + fmt.Sprint(i)}, QueueLen: b.N + 1,
				}, h); err != nil {
					b.Fatal(err)
				}
			}
			payload := make([]byte, 64)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := bus.Publish(ctx, &broker.Envelope{Topic: "bench/x/0", Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			<-done
			b.StopTimer()
			b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// TestWriteThroughStoresBeforeReturning checks that with WriteThrough a QoS
// 1 publish is in a durable subscriber's stored queue when Publish returns,
// and leaves it once the handler took it.
func TestWriteThroughStoresBeforeReturning(t *testing.T) {
	spool := bustest.NewMemSpool()
	b, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, WriteThrough: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	release := make(chan struct{})
	c := bustest.NewCollector()
	_, err = b.Subscribe(context.Background(), broker.SubscribeOptions{ID: "wt", Durable: true, Filters: []string{"w"}, QoS: 1},
		func(ctx context.Context, e *broker.Envelope) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			return c.Handle(ctx, e)
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), &broker.Envelope{Topic: "w", Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if n := spool.Len("wt"); n != 1 {
		t.Fatalf("stored queue holds %d envelopes after Publish returned, want 1", n)
	}
	close(release)
	c.Wait(t, 1)
	deadline := time.Now().Add(5 * time.Second)
	for spool.Len("wt") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("delivered envelope was never acknowledged in the store")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDurableQueueBound checks MaxQueued, MaxQueuedBytes and QueuePolicy:
// an away subscriber's queue keeps the newest (drop_oldest) or the oldest
// (drop_newest) envelopes that fit, the drops are counted and reported on
// $hub/subscribers/{id}/dropped, and the bound holds after the subscriber
// came back and left, and after a restart.
func TestDurableQueueBound(t *testing.T) {
	// Envelopes on topic "q" with payloads "00".."11": Size 3 each.
	for _, tc := range []struct {
		name   string
		cfg    broker.MemoryConfig
		kept   string // first kept payload of the 12
		policy string
	}{
		{"count oldest", broker.MemoryConfig{MaxQueued: 5}, "07", broker.DropOldest},
		{"count newest", broker.MemoryConfig{MaxQueued: 5, QueuePolicy: broker.DropNewest}, "00", broker.DropNewest},
		{"bytes oldest", broker.MemoryConfig{MaxQueuedBytes: 15}, "07", broker.DropOldest},
		{"bytes newest", broker.MemoryConfig{MaxQueuedBytes: 17, QueuePolicy: broker.DropNewest}, "00", broker.DropNewest},
		{"both, count wins", broker.MemoryConfig{MaxQueued: 5, MaxQueuedBytes: 1000}, "07", broker.DropOldest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spool := bustest.NewMemSpool()
			cfg := tc.cfg
			cfg.Spool, cfg.WriteThrough = spool, true
			b, err := broker.NewMemory(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = b.Close() }()
			ctx := context.Background()
			events := bustest.NewCollector()
			if _, err := b.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"$hub/subscribers/+/dropped"}}, events.Handle); err != nil {
				t.Fatal(err)
			}
			opts := broker.SubscribeOptions{ID: "away", Durable: true, Filters: []string{"q"}, QoS: 1}
			s, err := b.Subscribe(ctx, opts, bustest.NewCollector().Handle)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Detach(); err != nil {
				t.Fatal(err)
			}
			publish := func(b broker.Bus, n int) {
				t.Helper()
				for i := range n {
					if err := b.Publish(ctx, &broker.Envelope{Topic: "q", Payload: fmt.Appendf(nil, "%02d", i), QoS: 1}); err != nil {
						t.Fatal(err)
					}
				}
			}
			publish(b, 12)
			if n := spool.Len("away"); n != 5 {
				t.Fatalf("durable queue holds %d, want the bound 5", n)
			}
			ev := events.Wait(t, 1)
			var de broker.DroppedEvent
			if err := json.Unmarshal(ev[0].Payload, &de); err != nil || ev[0].Topic != "$hub/subscribers/away/dropped" ||
				de.Dropped != 1 || de.Policy != tc.policy || de.Limit != tc.cfg.MaxQueued || de.LimitBytes != tc.cfg.MaxQueuedBytes {
				t.Fatalf("drop event %s %s (%v)", ev[0].Topic, ev[0].Payload, err)
			}
			if st := s.Stats(); st.Dropped != 7 {
				t.Errorf("stats: %d dropped, want 7", st.Dropped)
			}
			// One report at once, the rest paced into one more, with the
			// exact total.
			ev = events.Wait(t, 2)
			var last broker.DroppedEvent
			if err := json.Unmarshal(ev[1].Payload, &last); err != nil || de.Dropped+last.Dropped != 7 || last.Total != 7 {
				t.Errorf("paced report %s (%v): want the other 6 drops and total 7", ev[1].Payload, err)
			}
			if n := events.Len(); n != 2 {
				t.Errorf("%d drop reports for 7 drops in a burst, want 2", n)
			}
			c := bustest.NewCollector()
			s2, err := b.Subscribe(ctx, opts, c.Handle)
			if err != nil {
				t.Fatal(err)
			}
			got := c.Wait(t, 5)
			first := 0
			fmt.Sscan(tc.kept, &first)
			for i, e := range got {
				if want := fmt.Sprintf("%02d", first+i); string(e.Payload) != want {
					t.Fatalf("kept envelope %d = %s, want %s", i, e.Payload, want)
				}
			}
			// The bound still applies after the subscriber came back and
			// left, and after a restart (counters loaded from the spool).
			if err := s2.Detach(); err != nil {
				t.Fatal(err)
			}
			publish(b, 3)
			_ = b.Close()
			b2, err := broker.NewMemory(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = b2.Close() }()
			publish(b2, 6)
			if n := spool.Len("away"); n != 5 {
				t.Fatalf("after a restart, durable queue holds %d, want the bound 5", n)
			}
		})
	}
}

func TestQueuePolicyValidated(t *testing.T) {
	for _, cfg := range []broker.MemoryConfig{
		{QueuePolicy: "drop_random"},
		{MaxQueued: -1},
		{MaxQueuedBytes: -1},
	} {
		if _, err := broker.NewMemory(cfg); err == nil {
			t.Errorf("NewMemory(%+v) accepted", cfg)
		}
	}
}
