package mqtt

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// countingStore is the real store, counting in-flight writes.
type countingStore struct {
	SessionStore
	puts, dels *atomic.Int64
}

func (c countingStore) KVPut(ctx context.Context, bucket, key string, value []byte) error {
	if bucket == bucketInflight {
		c.puts.Add(1)
	}
	return c.SessionStore.KVPut(ctx, bucket, key, value)
}

func (c countingStore) KVDelete(ctx context.Context, bucket, key string) error {
	if bucket == bucketInflight {
		c.dels.Add(1)
	}
	return c.SessionStore.KVDelete(ctx, bucket, key)
}

// TestOnlineCopiesWrittenBehind: copies in flight to a connected
// persistent subscriber leave no record behind once acknowledged, and cost
// at most a write and a deletion each.
func TestOnlineCopiesWrittenBehind(t *testing.T) {
	t.Parallel()
	var puts, dels atomic.Int64
	h := newHub(t, func(c *Config) { c.Sessions = countingStore{c.Sessions, &puts, &dels} })
	c := mustV3(t, h.addr, "prompt", "alice", "alicepw", false)
	c.sub(t, "wb/fast", 1)
	p := mustV3(t, h.addr, "wb-pub", "", "", true)
	const n = 50
	for i := range n {
		p.pub(t, "wb/fast", 1, false, fmt.Sprint(i))
		if m := c.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m.Payload())
		}
	}
	ctx := context.Background()
	// The last PUBACK may still be on its way.
	waitFor(t, func() bool {
		_ = h.a.sessions.behind.flush()
		kv, _ := h.st.KVList(ctx, bucketInflight)
		return len(kv) == 0
	})
	// countingStore hides KVApply: every record write is counted.
	if got := puts.Load() + dels.Load(); got > 2*n {
		t.Errorf("%d in-flight store writes for %d deliveries, want at most %d", got, n, 2*n)
	}
}

// TestOnlineCopiesStoredBeforeAck: a copy in flight to a connected
// persistent session that has not acknowledged it is in the store before
// the publisher gets its PUBACK, and before the bus drops the envelope
// from the feed's durable queue: a crash at either moment loses nothing.
func TestOnlineCopiesStoredBeforeAck(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	stalledClient(t, h.addr, "no-ack", "wb/slow/#")
	p := mustV3(t, h.addr, "wb-pub", "", "", true)
	ctx := context.Background()
	stored := func() int {
		kv, err := h.st.KVList(ctx, bucketInflight)
		if err != nil {
			t.Fatal(err)
		}
		return len(kv)
	}
	for i := range 3 {
		p.pub(t, "wb/slow/mqtt", 1, false, fmt.Sprint(i)) // returns on PUBACK
		if got := stored(); got != i+1 {
			t.Fatalf("after PUBACK %d: %d in-flight records stored, want %d", i, got, i+1)
		}
	}
	// From the bus: once the feed's queue no longer holds the envelope,
	// the copy's record must be there (written by the sync: the
	// write-behind alone would take a minute now).
	w := h.a.sessions.behind
	w.mu.Lock()
	w.delay = time.Minute
	w.mu.Unlock()
	for i := range 3 {
		e := &broker.Envelope{Topic: "wb/slow/bus", Payload: []byte(fmt.Sprint(i)), QoS: 1,
			Origin: broker.Origin{Protocol: "rest", Node: "test-node"}}
		if err := h.bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			q, err := h.st.Dequeue(ctx, h.a.cfg.SubscriberID, 1)
			return err == nil && len(q) == 0
		})
		if got := stored(); got != 3+i+1 {
			t.Fatalf("after the bus acknowledged envelope %d: %d in-flight records stored, want %d", i, got, 3+i+1)
		}
	}
}
