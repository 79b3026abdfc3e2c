package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestLeaseHolderCutOff: a holder that can no longer renew (its NATS
// connection is gone) ends its task while its last write still stands,
// so the next holder, which can only create the key once it expired,
// never runs beside it.
func TestLeaseHolderCutOff(t *testing.T) {
	n, err := Start(Config{Name: "leasecut", Listen: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ttl = 1500 * time.Millisecond
	for _, tc := range []struct {
		name string
		cut  func(t *testing.T, js jetstream.JetStream)
	}{
		{"connection closed", func(t *testing.T, js jetstream.JetStream) { js.Conn().Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial := func(name string) jetstream.JetStream {
				nc, err := n.Connect(name)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(nc.Close)
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				return js
			}
			holderJS, watchJS := dial("holder"), dial("watcher")
			l, err := NewLeases(ctx, LeasesConfig{JS: holderJS, Node: "a", TTL: ttl, Prefix: "cut"})
			if err != nil {
				t.Fatal(err)
			}
			kv, err := watchJS.KeyValue(ctx, "cut_"+LeasesBucket)
			if err != nil {
				t.Fatal(err)
			}
			held, ended := make(chan struct{}), make(chan error, 1)
			rctx, rcancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				l.Run(rctx, "bridge:x", func(hctx context.Context) {
					close(held)
					<-hctx.Done()
					// The key must still be there: nobody else could hold it yet.
					gctx, gcancel := context.WithTimeout(context.WithoutCancel(hctx), time.Second)
					defer gcancel()
					_, err := kv.Get(gctx, kvKey("bridge:x"))
					ended <- err
					rcancel() // one holding is enough
				})
			}()
			select {
			case <-held:
			case <-ctx.Done():
				t.Fatal("the lease was never held")
			}
			tc.cut(t, holderJS)
			select {
			case err := <-ended:
				if errors.Is(err, jetstream.ErrKeyNotFound) {
					t.Fatal("the holder ran on after its lease could have expired")
				} else if err != nil {
					t.Fatalf("read the lease: %v", err)
				}
			case <-ctx.Done():
				t.Fatal("the holder never gave the lease up")
			}
			<-done
		})
	}
}
