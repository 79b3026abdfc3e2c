package gateway

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/cluster"
)

// livenessBucket starts a one-node embedded JetStream and makes the
// liveness bucket as startLiveness does.
func livenessBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	n, err := cluster.Start(cluster.Config{Name: "liveness", Listen: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	nc, err := n.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "hub_" + nodesBucket,
		History: 1, TTL: HubTTL, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestConfirmAlive: a hub missing from a listing whose entry is still
// there stays alive; one whose entry is gone (or never was) does not.
func TestConfirmAlive(t *testing.T) {
	kv := livenessBucket(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := kv.Put(ctx, nodeKey(n), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, nodeKey("b")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		listed map[string]bool
		hubs   []string
		want   map[string]bool
	}{
		{"missed by the listing", map[string]bool{}, []string{"a"}, map[string]bool{"a": true}},
		{"deleted", map[string]bool{}, []string{"b"}, map[string]bool{}},
		{"never there", map[string]bool{"a": true}, []string{"c"}, map[string]bool{"a": true}},
		{"listed", map[string]bool{"a": true}, []string{"a", "b", "c"}, map[string]bool{"a": true}},
		{"no devices elsewhere", map[string]bool{}, nil, map[string]bool{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alive := maps.Clone(tc.listed)
			confirmAlive(ctx, kv, alive, tc.hubs)
			if !maps.Equal(alive, tc.want) {
				t.Fatalf("alive %v, want %v", alive, tc.want)
			}
		})
	}
}

// TestListingMissesLiveHubs shows why confirmAlive exists: while hubs
// renew their entries, a key listing leaves some of them out, and the
// direct read finds every one. (A listing never missing a key would make
// the check redundant, not wrong: the test then says so and passes.)
func TestListingMissesLiveHubs(t *testing.T) {
	kv := livenessBucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hubs := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	beat, stop := context.WithCancel(ctx)
	for _, n := range hubs {
		if _, err := kv.Put(ctx, nodeKey(n), []byte("x")); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for beat.Err() == nil {
				_, _ = kv.Put(beat, nodeKey(n), []byte("x"))
				time.Sleep(time.Millisecond)
			}
		}()
	}
	missed := 0
	for range 60 {
		l, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		alive := map[string]bool{}
		for k := range l.Keys() {
			alive[k] = true
		}
		listed := map[string]bool{}
		for _, n := range hubs {
			if alive[nodeKey(n)] {
				listed[n] = true
			}
		}
		if len(listed) < len(hubs) {
			missed++
		}
		confirmAlive(ctx, kv, listed, hubs)
		if len(listed) != len(hubs) {
			stop()
			wg.Wait()
			t.Fatalf("live hubs taken for gone after the read: alive %v", listed)
		}
	}
	stop()
	wg.Wait()
	t.Logf("%d of 60 listings missed a live hub; the direct reads found them all", missed)
}
