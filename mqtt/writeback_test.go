package mqtt

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
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
// persistent subscriber that acknowledges at once cost (almost) no store
// writes; those it does not acknowledge reach the store shortly after.
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
		h.a.sessions.behind.flush()
		kv, _ := h.st.KVList(ctx, bucketInflight)
		return len(kv) == 0
	})
	if got := puts.Load() + dels.Load(); got > n/5 {
		t.Errorf("%d in-flight store writes for %d promptly acknowledged deliveries, want at most %d", got, n, n/5)
	}

	// A connected client that never acknowledges: its copies are stored.
	stalledClient(t, h.addr, "no-ack", "wb/slow")
	for i := range 3 {
		p.pub(t, "wb/slow", 1, false, fmt.Sprint(i))
	}
	waitFor(t, func() bool { kv, _ := h.st.KVList(ctx, bucketInflight); return len(kv) == 3 })
}
