package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
	"github.com/hubsmith/hub/store"
)

// TestPublishAsyncStore publishes QoS 1 through PublishAsync over the
// SQLite store, whose EnqueueAsync takes the writes without a goroutine
// each: every done reports success once stored, a connected durable
// subscriber gets everything in order, and an away one's queue keeps its
// bound when done has been called.
func TestPublishAsyncStore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		away   bool
		bound  int
		expect int
	}{
		{"connected", false, 0, 200},
		{"away, bounded", true, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(context.Background(), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			b, err := broker.NewMemory(broker.MemoryConfig{Spool: st, WriteThrough: true, MaxQueued: tc.bound})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = b.Close() }()
			ctx := context.Background()
			c := bustest.NewCollector()
			s, err := b.Subscribe(ctx, broker.SubscribeOptions{ID: "d", Durable: true, Filters: []string{"q"}, QoS: 1}, c.Handle)
			if err != nil {
				t.Fatal(err)
			}
			if tc.away {
				if err := s.Detach(); err != nil {
					t.Fatal(err)
				}
			}
			const n = 200
			done := make(chan error, n)
			for i := range n {
				e := &broker.Envelope{Topic: "q", Payload: fmt.Appendf(nil, "%03d", i), QoS: 1}
				if err := b.PublishAsync(ctx, e, func(err error) { done <- err }); err != nil {
					t.Fatal(err)
				}
			}
			for range n {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			if tc.away {
				if l, err := st.QueueLen(ctx, "d"); err != nil || l != tc.expect {
					t.Fatalf("away queue holds %d (%v), want the bound %d", l, err, tc.expect)
				}
				if _, err = b.Subscribe(ctx, broker.SubscribeOptions{ID: "d", Durable: true, Filters: []string{"q"}, QoS: 1}, c.Handle); err != nil {
					t.Fatal(err)
				}
			}
			got := c.Wait(t, tc.expect)
			for i, e := range got {
				if want := fmt.Sprintf("%03d", n-tc.expect+i); string(e.Payload) != want {
					t.Fatalf("envelope %d = %s, want %s", i, e.Payload, want)
				}
			}
		})
	}
}
