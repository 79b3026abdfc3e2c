package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hubsmith/hub/store"
)

// TestKV: the store's key/value calls over a one-node embedded cluster:
// any key, ErrNotFound, a sorted list, deletion.
func TestKV(t *testing.T) {
	js := testJetStream(t, "kvtest")
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

// TestKVGroups: grouped keys of one bucket are listed per group, any
// group and key name, and a record is claimed once.
func TestKVGroups(t *testing.T) {
	js := testJetStream(t, "kvgroups")
	kv := NewKV(js, "hub", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.Ensure(ctx, "xmpp-roster"); err != nil {
		t.Fatal(err)
	}
	if list, err := kv.KVListIn(ctx, "xmpp-roster", "nobody"); err != nil || len(list) != 0 {
		t.Fatalf("empty group: %v, %v", list, err)
	}
	puts := []struct{ group, key, value string }{
		{"alice", "bob@localhost", "1"}, {"alice", "a.b*>c", "2"}, {"alice2", "x", "3"}, {"", "", "4"}, {"ü ser", "k", "5"},
	}
	for _, p := range puts {
		if err := kv.KVPutIn(ctx, "xmpp-roster", p.group, p.key, []byte(p.value)); err != nil {
			t.Fatalf("put %q/%q: %v", p.group, p.key, err)
		}
	}
	for _, tc := range []struct {
		group string
		want  string
	}{{"alice", "[a.b*>c=2 bob@localhost=1]"}, {"alice2", "[x=3]"}, {"", "[=4]"}, {"ü ser", "[k=5]"}, {"al", "[]"}} {
		list, err := kv.KVListIn(ctx, "xmpp-roster", tc.group)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range list {
			got = append(got, e.Key+"="+string(e.Value))
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("group %q = %v, want %s", tc.group, got, tc.want)
		}
	}
	if v, err := kv.KVGetIn(ctx, "xmpp-roster", "alice2", "x"); err != nil || string(v) != "3" {
		t.Errorf("get = %q, %v", v, err)
	}
	if _, err := kv.KVGetIn(ctx, "xmpp-roster", "alice", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get of another group's key: %v, want ErrNotFound", err)
	}
	if ok, err := kv.KVClaimIn(ctx, "xmpp-roster", "alice2", "x"); !ok || err != nil {
		t.Errorf("first claim: %v, %v", ok, err)
	}
	if ok, err := kv.KVClaimIn(ctx, "xmpp-roster", "alice2", "x"); ok || err != nil {
		t.Errorf("second claim: %v, %v, want false", ok, err)
	}
	if err := kv.KVDeleteIn(ctx, "xmpp-roster", "alice", "bob@localhost"); err != nil {
		t.Fatal(err)
	}
	if list, _ := kv.KVListIn(ctx, "xmpp-roster", "alice"); len(list) != 1 {
		t.Errorf("after delete: %v", list)
	}
}

// FuzzGroupKey: every group and key map to a KV key and back.
func FuzzGroupKey(f *testing.F) {
	f.Add("alice", "bob@localhost")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, group, key string) {
		got, err := keyInGroup(groupKey(group, key))
		if err != nil || got != key {
			t.Fatalf("keyInGroup(groupKey(%q, %q)) = %q, %v", group, key, got, err)
		}
		_, _ = keyInGroup(key) // any input: an error, never a panic
	})
}
