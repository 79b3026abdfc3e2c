package xmpp

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRevoke: Revoke ends the user's stream and forgets its topic
// subscription (record and durable bus queue), roster and offline
// messages, and leaves other users alone.
func TestRevoke(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	topicJID := "door.state@topics.localhost"
	alice := connect(t, h, "alice", "alicepw")
	alice.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	alice.expect(t, "subscribed", func(v rx) bool { return v.Type == "subscribed" && v.From == topicJID })
	bob := connect(t, h, "bob", "bobpw")
	bob.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	bob.expect(t, "subscribed", func(v rx) bool { return v.Type == "subscribed" && v.From == topicJID })
	el, err := parseElement([]byte(`<message xmlns='jabber:client' to='alice@localhost' type='chat'><body>kept</body></message>`))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.a.storeOffline(ctx, "alice@localhost", el); err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if n := h.a.Revoke(rctx, "alice"); n != 1 {
		t.Fatalf("Revoke closed %d streams, want 1", n)
	}
	if ss := h.a.sessionsOf("alice@localhost"); len(ss) != 0 {
		t.Fatalf("alice still has %d sessions", len(ss))
	}
	for _, bucket := range []string{topicBucket, rosterBucket("alice"), offlineBucket("alice")} {
		kvs, err := h.st.KVList(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range kvs {
			if bucket != topicBucket || strings.HasPrefix(kv.Key, "alice@") {
				t.Errorf("%s still holds %q", bucket, kv.Key)
			}
		}
	}
	subs, err := h.st.LoadSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bobs := false
	for _, d := range subs {
		if strings.HasPrefix(d.ID, "xmpp:alice:") {
			t.Errorf("durable subscription %q left", d.ID)
		}
		bobs = bobs || d.ID == "xmpp:bob:door/state"
	}
	if !bobs || len(h.a.sessionsOf("bob@localhost")) != 1 {
		t.Error("bob's session or subscription was touched")
	}
}
