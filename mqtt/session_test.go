package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hubsmith/hub/broker"
)

// TestOfflineQueueIsBounded: a full session queue, by count (MaxQueued) or
// by bytes (MaxQueuedBytes), drops as the policy says, counts it and says
// so on $hub/clients/{id}/dropped, and the kept messages survive a
// restart.
func TestOfflineQueueIsBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		tweak      func(*Config)
		limit      int
		limitBytes int64
		first      int // of the three kept
		policy     string
	}{
		// Each message is topic "b/x" (3 bytes) and a 10-byte payload.
		{"count", func(c *Config) { c.MaxQueued = 3 }, 3, 0, 2, broker.DropOldest},
		{"bytes", func(c *Config) { c.MaxQueuedBytes = 3*13 + 12 }, DefaultMaxQueued, 3*13 + 12, 2, broker.DropOldest},
		{"count newest", func(c *Config) { c.MaxQueued, c.QueuePolicy = 3, broker.DropNewest }, 3, 0, 0, broker.DropNewest},
		{"bytes newest", func(c *Config) { c.MaxQueuedBytes, c.QueuePolicy = 3*13, broker.DropNewest }, DefaultMaxQueued, 3 * 13, 0, broker.DropNewest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, tc.tweak)
			events := busSub(t, h.bus, "$hub/clients/+/dropped")
			c := mustV3(t, h.addr, "bounded", "alice", "alicepw", false)
			c.sub(t, "b/#", 1)
			c.c.Disconnect(100)
			waitFor(t, func() bool { return h.detached("bounded") })
			for i := range 5 {
				if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "b/x", Payload: fmt.Appendf(nil, "%010d", i), QoS: 1,
					Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
					t.Fatal(err)
				}
			}
			e := nextEnv(t, events)
			var ev broker.DroppedEvent
			if err := json.Unmarshal(e.Payload, &ev); err != nil || e.Topic != "$hub/clients/bounded/dropped" || ev.Subscriber != subscriberID("bounded") ||
				ev.Dropped < 1 || ev.Limit != tc.limit || ev.LimitBytes != tc.limitBytes || ev.Policy != tc.policy {
				t.Fatalf("event %s %s: %+v %v", e.Topic, e.Payload, ev, err)
			}
			h.restart()
			c = mustV3(t, h.addr, "bounded", "alice", "alicepw", false)
			for i := tc.first; i < tc.first+3; i++ {
				if m := c.next(t); string(m.Payload()) != fmt.Sprintf("%010d", i) {
					t.Fatalf("message %d: %q (want the %s dropped)", i, m.Payload(), tc.policy)
				}
			}
			c.none(t, 100*time.Millisecond)
			waitFor(t, func() bool { return h.queued("bounded") == 0 })
		})
	}
}

func TestDroppedTopic(t *testing.T) {
	for id, want := range map[string]string{
		"plain":   "$hub/clients/plain/dropped",
		"a/b+c#d": "$hub/clients/a%2Fb%2Bc%23d/dropped",
	} {
		if got := DroppedTopic(id); got != want || broker.ValidateTopic(got) != nil {
			t.Errorf("DroppedTopic(%q) = %q (%v), want %q", id, got, broker.ValidateTopic(got), want)
		}
	}
}

func TestExpiredSessionIsForgotten(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	exp := uint32(1)
	c, _, err := dialV5(t, h.addr, &paho.Connect{ClientID: "short", KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil {
		t.Fatal(err)
	}
	c.sub(t, "short/#", 1)
	ctx := context.Background()
	waitFor(t, func() bool { kv, _ := h.st.KVList(ctx, bucketSessions); return len(kv) == 1 && h.durable("short") })
	_ = c.c.Disconnect(&paho.Disconnect{})
	<-c.c.Done()
	deadline := time.Now().Add(2*sweepInterval + 2*time.Second)
	for {
		kv, _ := h.st.KVList(ctx, bucketSessions)
		if len(kv) == 0 && !h.durable("short") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still stored: %d session records, durable subscription %v", len(kv), h.durable("short"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestQueuedMessagesKeepTheirOrder(t *testing.T) {
	t.Parallel()
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			t.Parallel()
			h := newHub(t, nil)
			c := mustV3(t, h.addr, "ordered", "alice", "alicepw", false)
			c.sub(t, "o/#", 1)
			c.c.Disconnect(100)
			waitFor(t, func() bool { return h.detached("ordered") })
			p := mustV3(t, h.addr, "o-pub", "", "", true)
			const n = 30
			for i := range n {
				if i%2 == 0 {
					p.pub(t, "o/x", 1, false, fmt.Sprint(i))
					continue
				}
				if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "o/x", Payload: []byte(fmt.Sprint(i)), QoS: 1,
					Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
					t.Fatal(err)
				}
			}
			if restart {
				h.restart()
			}
			c = mustV3(t, h.addr, "ordered", "alice", "alicepw", false)
			for i := range n {
				if m := c.next(t); string(m.Payload()) != fmt.Sprint(i) {
					t.Fatalf("message %d is %q", i, m.Payload())
				}
			}
		})
	}
}

// TestV5ResumeWithoutExpiry: an MQTT 5 client that comes back with clean
// start 0 but no session expiry resumes its session and gets what was
// queued; the session then ends with that connection.
func TestV5ResumeWithoutExpiry(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	exp := uint32(600)
	c, _, err := dialV5(t, h.addr, &paho.Connect{ClientID: "v5resume", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil {
		t.Fatal(err)
	}
	c.sub(t, "resume/#", 2)
	_ = c.c.Disconnect(&paho.Disconnect{})
	<-c.c.Done()
	waitFor(t, func() bool { return h.detached("v5resume") })
	for q := range byte(3) {
		if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "resume/x", Payload: []byte{'0' + q}, QoS: q,
			Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
			t.Fatal(err)
		}
	}
	c, ack, err := dialV5(t, h.addr, &paho.Connect{ClientID: "v5resume", KeepAlive: 30, CleanStart: false})
	if err != nil {
		t.Fatal(err)
	}
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	for _, want := range []string{"1", "2"} {
		if m := c.next(t); string(m.Payload) != want {
			t.Fatalf("got %q, want %q (QoS 0 is not queued)", m.Payload, want)
		}
	}
	_ = c.c.Disconnect(&paho.Disconnect{})
	<-c.c.Done()
	waitFor(t, func() bool {
		kv, _ := h.st.KVList(context.Background(), bucketSessions)
		return len(kv) == 0 && !h.durable("v5resume")
	})
}

// TestSubscriptionMadeWithFirstSubscribe: a clean session gets its bus
// subscription with its first SUBSCRIBE, so that a client that only
// publishes costs the bus nothing, and then receives like any other; a
// retained value reaches it; it is gone when the client leaves.
func TestSubscriptionMadeWithFirstSubscribe(t *testing.T) {
	h := newHub(t, nil)
	session := func(id string) *session {
		h.a.smu.Lock()
		defer h.a.smu.Unlock()
		return h.a.sessions[id]
	}
	pub := mustV3(t, h.addr, "lazy-pub", "alice", "alicepw", true)
	pub.pub(t, "lazy/retained", 1, true, "kept")
	pub.pub(t, "lazy/a", 1, false, "before")
	if s := session("lazy-pub"); s == nil || s.subscription() != nil {
		t.Fatalf("a publisher's session: %v, want one without a bus subscription", s)
	}

	sub := mustV3(t, h.addr, "lazy-sub", "alice", "alicepw", true)
	// The session is made once CONNACK is out (mochi's
	// OnSessionEstablished), before the client's next packet is read.
	waitFor(t, func() bool { return session("lazy-sub") != nil })
	if session("lazy-sub").subscription() != nil {
		t.Fatal("a session had a bus subscription before its SUBSCRIBE")
	}
	sub.sub(t, "lazy/#", 1)
	if m := sub.next(t); m.Topic() != "lazy/retained" || string(m.Payload()) != "kept" {
		t.Fatalf("first message %s %q, want the retained lazy/retained", m.Topic(), m.Payload())
	}
	if s := session("lazy-sub"); s == nil || s.subscription() == nil {
		t.Fatal("no bus subscription after SUBSCRIBE")
	}
	pub.pub(t, "lazy/a", 1, false, "after")
	if m := sub.next(t); m.Topic() != "lazy/a" || string(m.Payload()) != "after" {
		t.Fatalf("got %s %q, want lazy/a after", m.Topic(), m.Payload())
	}
	// The publisher subscribes too, late: it gets what comes after.
	pub.sub(t, "lazy/b", 0)
	sub.pub(t, "lazy/b", 0, false, "to the publisher")
	if m := pub.next(t); string(m.Payload()) != "to the publisher" {
		t.Fatalf("publisher got %q", m.Payload())
	}
	sub.c.Disconnect(100)
	waitFor(t, func() bool { return session("lazy-sub") == nil })
}
