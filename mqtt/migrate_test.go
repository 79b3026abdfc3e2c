package mqtt

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// TestMigrateOldSessions: a data dir of the version that kept MQTT
// sessions beside the bus (mochi's records in mqtt.clients,
// mqtt.subscriptions and mqtt.inflight, and the adapter's feed queue on
// the bus) is migrated on start: the client finds its session, gets what
// was queued for it in order, then what the feed held for it, and the old
// records are gone.
func TestMigrateOldSessions(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ctx := context.Background()
	put := func(bucket, key string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.st.KVPut(ctx, bucket, key, b); err != nil {
			t.Fatal(err)
		}
	}
	put(oldBucketClients, "old1", oldClient{Client: storage.Client{ID: "old1", Username: []byte("alice"), ProtocolVersion: 4}, Role: "user"})
	put(oldBucketSubs, "old1", []storage.Subscription{{Client: "old1", Filter: "m/#", Qos: 1}})
	for i, p := range []string{"second", "first"} {
		put(oldBucketInflight, "old1/0000"+string(rune('1'+i)), oldInflight{
			Message: storage.Message{Client: "old1", TopicName: "m/a", Payload: []byte(p), Origin: "x",
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Created: time.Now().Unix()},
			Seq: int64(2 - i), // queueing order, not key order
		})
	}
	feed, err := h.bus.Subscribe(ctx, broker.SubscribeOptions{ID: DefaultSubscriberID, Filters: []string{"#"}, QoS: 2, Durable: true},
		func(context.Context, *broker.Envelope) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := feed.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "m/b", Payload: []byte("from the feed"), QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	h.restart()

	for _, b := range []string{oldBucketClients, oldBucketSubs, oldBucketInflight} {
		if kv, _ := h.st.KVList(ctx, b); len(kv) != 0 {
			t.Errorf("old bucket %s still holds %d records", b, len(kv))
		}
	}
	ds, err := h.st.LoadSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == DefaultSubscriberID {
			t.Fatal("the old feed queue is still there")
		}
	}
	if !h.durable("old1") {
		t.Fatal("the feed is still there, or the session was not made a bus subscription")
	}
	c := mustV3(t, h.addr, "old1", "alice", "alicepw", false)
	for _, want := range []string{"first", "second", "from the feed"} {
		if m := c.next(t); string(m.Payload()) != want {
			t.Fatalf("got %q, want %q", m.Payload(), want)
		}
	}
	// The subscription itself came across too.
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "m/c", Payload: []byte("live"), QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); string(m.Payload()) != "live" {
		t.Fatalf("live: %q", m.Payload())
	}
}
