package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLeases: of three hubs running the same lease, one holds it at a
// time; when the holder stops, another takes it within a third of the
// TTL, and no two ever hold it at once.
func TestLeases(t *testing.T) {
	js := testJetStream(t, "leasetest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ttl = 600 * time.Millisecond
	var holders, maxHolders atomic.Int32
	var mu sync.Mutex
	holder := ""
	type hub struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	hubs := map[string]hub{}
	for _, name := range []string{"a", "b", "c"} {
		l, err := NewLeases(ctx, LeasesConfig{JS: js, Node: name, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		hctx, hcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		hubs[name] = hub{hcancel, done}
		go func() {
			defer close(done)
			l.Run(hctx, "bridge:x", func(held context.Context) {
				if n := holders.Add(1); n > maxHolders.Load() {
					maxHolders.Store(n)
				}
				mu.Lock()
				holder = name
				mu.Unlock()
				<-held.Done()
				mu.Lock()
				holder = ""
				mu.Unlock()
				holders.Add(-1)
			})
		}()
	}
	current := func() string {
		mu.Lock()
		defer mu.Unlock()
		return holder
	}
	wait := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for range 2 {
		wait("a holder", func() bool { return current() != "" })
		h := current()
		t0 := time.Now()
		hubs[h].cancel()
		<-hubs[h].done
		delete(hubs, h)
		wait("another holder", func() bool { c := current(); return c != "" && c != h })
		t.Logf("lease moved from %s to %s in %v", h, current(), time.Since(t0).Round(time.Millisecond))
	}
	for _, h := range hubs {
		h.cancel()
		<-h.done
	}
	if m := maxHolders.Load(); m != 1 {
		t.Fatalf("%d holders at once", m)
	}
}
