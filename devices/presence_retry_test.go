package devices

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// refusingBus refuses publishes while refuse is set, as a clustered bus
// does while a stream elects its leader.
type refusingBus struct {
	broker.Bus
	refuse atomic.Bool
}

func (b *refusingBus) Publish(ctx context.Context, e *broker.Envelope) error {
	if b.refuse.Load() {
		return broker.ErrStorage
	}
	return b.Bus.Publish(ctx, e)
}

// TestRetryPresence: a presence event the bus refused is published by
// RetryPresence once the bus takes it again, and an older refused event
// is dropped once a newer one is sent.
func TestRetryPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	bus := &refusingBus{Bus: e.bus}
	reg, err := New(Config{Store: e.st, Bus: bus, Logger: e.reg.log, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"d1", "d2"} {
		if err := reg.Add(ctx, store.Device{ID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	retained := func(id string) (Presence, bool) {
		es, err := e.bus.Retained(ctx, PresenceTopic(id))
		if err != nil || len(es) == 0 {
			return Presence{}, false
		}
		var p Presence
		return p, json.Unmarshal(es[0].Payload, &p) == nil
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bus.refuse.Store(true)
	reg.DevicePresence(ctx, "d1", "mqtt", true, t0)
	reg.DevicePresence(ctx, "d2", "mqtt", true, t0)
	if n := reg.RetryPresence(ctx); n != 2 {
		t.Fatalf("%d unsent while the bus refuses, want 2", n)
	}
	if _, ok := retained("d1"); ok {
		t.Fatal("a refused presence was retained")
	}
	bus.refuse.Store(false)
	// d2 goes offline meanwhile, and that one is sent at once.
	reg.DevicePresence(ctx, "d2", "mqtt", false, t0.Add(time.Second))
	if p, ok := retained("d1"); ok {
		t.Fatalf("d1 retained before the retry: %+v", p)
	}
	if n := reg.RetryPresence(ctx); n != 0 {
		t.Fatalf("%d unsent once the bus takes them", n)
	}
	for _, tc := range []struct {
		id     string
		online bool
		at     time.Time
	}{
		{"d1", true, t0},                   // sent by the retry
		{"d2", false, t0.Add(time.Second)}, // the newer event, not the refused one
	} {
		p, ok := retained(tc.id)
		if !ok || p.Online != tc.online || !p.LastSeen.Equal(tc.at) {
			t.Fatalf("%s retained %+v (found %v), want online %v at %v", tc.id, p, ok, tc.online, tc.at)
		}
	}
}
