package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/store"
)

// TestKV: the store's key/value calls over a one-node embedded cluster:
// any key, ErrNotFound, a sorted list, deletion.
func TestKV(t *testing.T) {
	n, err := Start(Config{Name: "kvtest", Listen: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	nc, err := n.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv := NewKV(js, "hub", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.Ensure(ctx, "mqtt.sessions"); err != nil {
		t.Fatal(err)
	}
	keys := []string{"b", "a/b c", "", "ünï.*>", "$sys"}
	for i, k := range keys {
		if err := kv.KVPut(ctx, "mqtt.sessions", k, []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	for i, k := range keys {
		v, err := kv.KVGet(ctx, "mqtt.sessions", k)
		if err != nil || string(v) != fmt.Sprint(i) {
			t.Errorf("get %q = %q, %v", k, v, err)
		}
	}
	if _, err := kv.KVGet(ctx, "mqtt.sessions", "absent"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get absent: %v, want ErrNotFound", err)
	}
	if err := kv.KVDelete(ctx, "mqtt.sessions", "b"); err != nil {
		t.Fatal(err)
	}
	if err := kv.KVDelete(ctx, "mqtt.sessions", "never"); err != nil {
		t.Errorf("delete of an absent key: %v", err)
	}
	list, err := kv.KVList(ctx, "mqtt.sessions")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Key)
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{"", "$sys", "a/b c", "ünï.*>"}) {
		t.Errorf("list = %q", got)
	}
	if err := kv.KVPut(ctx, "", "k", nil); !errors.Is(err, store.ErrInvalidBucket) {
		t.Errorf("empty bucket: %v", err)
	}
}

// FuzzKVKey: every key maps to a KV key and back to itself.
func FuzzKVKey(f *testing.F) {
	for _, s := range []string{"", "a", "mqtt:client/1", "\\x00\\xff", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		got, err := keyOf(kvKey(key))
		if err != nil || got != key {
			t.Fatalf("keyOf(kvKey(%q)) = %q, %v", key, got, err)
		}
		_, _ = keyOf(key) // any input: an error, never a panic
	})
}
