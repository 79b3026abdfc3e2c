package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

func TestInflightKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id  string
		pid uint16
	}{{"a", 1}, {"", 0}, {"x/00001", 65535}, {"ünï", 42}} {
		k := inflightKey(tc.id, tc.pid)
		id, pid, ok := splitInflightKey(k)
		if !ok || id != tc.id || pid != tc.pid {
			t.Fatalf("%q: got %q %d %v", k, id, pid, ok)
		}
	}
	for _, bad := range []string{"", "a", "a/1", "a/ab123", "a|00001", "a/99999x"} {
		if _, _, ok := splitInflightKey(bad); ok {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func FuzzInflightKey(f *testing.F) {
	f.Add("client", uint16(7))
	f.Add("a/00001", uint16(65535))
	f.Fuzz(func(t *testing.T, id string, pid uint16) {
		got, gpid, ok := splitInflightKey(inflightKey(id, pid))
		if !ok || got != id || gpid != pid {
			t.Fatalf("%q %d: got %q %d %v", id, pid, got, gpid, ok)
		}
	})
}

func TestDecodeRecordsRefusesCorruption(t *testing.T) {
	t.Parallel()
	good, _ := json.Marshal(clientRecord{Client: storage.Client{ID: "c", ProtocolVersion: 4}, Role: "user"})
	if r, err := decodeClient(good); err != nil || r.Role != "user" {
		t.Fatalf("good record: %+v %v", r, err)
	}
	for _, b := range []string{``, `{`, `[]`, `{"id":""}`, `{"id":"inline","protocolVersion":4}`, `{"id":"c","protocolVersion":9}`} {
		if _, err := decodeClient([]byte(b)); err == nil {
			t.Fatalf("client record %q accepted", b)
		}
	}
	for _, b := range []string{`{`, `[{"client":"other","filter":"a"}]`, `[{"client":"c","filter":"a/#/b"}]`, `[{"client":"c","filter":"a","qos":3}]`} {
		if _, err := decodeSubscriptions("c", []byte(b)); err == nil {
			t.Fatalf("subscriptions %q accepted", b)
		}
	}
	for _, b := range []string{`{`, `{}`, `{"client":"c","fixedheader":{"qos":3}}`} {
		if _, err := decodeInflight([]byte(b)); err == nil {
			t.Fatalf("in-flight record %q accepted", b)
		}
	}
}

// FuzzSessionRecords feeds arbitrary bytes to the session decoders: an
// error or a record mochi can load, never a panic.
func FuzzSessionRecords(f *testing.F) {
	c, _ := json.Marshal(clientRecord{Client: storage.Client{ID: "c", ProtocolVersion: 5}})
	s, _ := json.Marshal([]storage.Subscription{{Client: "c", Filter: "a/+", Qos: 1}})
	m, _ := json.Marshal(inflightRecord{Message: storage.Message{Client: "c", TopicName: "t", PacketID: 3,
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}, Expiry: 99})
	f.Add(c, s, m)
	f.Fuzz(func(t *testing.T, cb, sb, mb []byte) {
		if rec, err := decodeClient(cb); err == nil && rec.ID == "" {
			t.Fatal("empty id accepted")
		}
		if subs, err := decodeSubscriptions("c", sb); err == nil {
			for _, s := range subs {
				if s.Qos > 2 || s.Client != "c" {
					t.Fatalf("bad subscription accepted: %+v", s)
				}
			}
		}
		if rec, err := decodeInflight(mb); err == nil {
			_ = rec.ToPacket()
		}
	})
}

// TestOfflineQueueIsBounded: a full queue, by count (MaxQueued) or by
// bytes (MaxQueuedBytes), drops its oldest messages (the newest arrive),
// counts them and says so on $hub/clients/{id}/dropped, across a restart
// too.
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
			waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("bounded"); return ok && cl.Closed() })
			for i := range 5 {
				if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "b/x", Payload: fmt.Appendf(nil, "%010d", i), QoS: 1,
					Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
					t.Fatal(err)
				}
			}
			// The five, and the event about the drops (QoS 0, to MQTT $hub/# subscribers).
			waitFor(t, func() bool { return h.a.metrics.fromBus.Load() == 6 })
			if n := h.a.metrics.queueDropped.Load(); n != 2 {
				t.Errorf("%d dropped counted, want 2", n)
			}
			h.restart()
			c = mustV3(t, h.addr, "bounded", "alice", "alicepw", false)
			for i := tc.first; i < tc.first+3; i++ {
				if m := c.next(t); string(m.Payload()) != fmt.Sprintf("%010d", i) {
					t.Fatalf("message %d: %q (want the %s dropped)", i, m.Payload(), tc.policy)
				}
			}
			c.none(t, 100*time.Millisecond)
			e := nextEnv(t, events)
			var ev DroppedEvent
			if err := json.Unmarshal(e.Payload, &ev); err != nil || e.Topic != "$hub/clients/bounded/dropped" || ev.Client != "bounded" ||
				ev.Dropped < 1 || ev.Limit != tc.limit || ev.LimitBytes != tc.limitBytes || ev.Policy != tc.policy {
				t.Fatalf("event %s %s: %+v %v", e.Topic, e.Payload, ev, err)
			}
			if kv, _ := h.st.KVList(context.Background(), bucketInflight); len(kv) != 0 {
				t.Errorf("%d in-flight records left after delivery, want 0 (dropped ones deleted)", len(kv))
			}
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
	waitFor(t, func() bool { kv, _ := h.st.KVList(ctx, bucketSubs); return len(kv) == 1 })
	_ = c.c.Disconnect(&paho.Disconnect{})
	<-c.c.Done()
	// mochi expires sessions on a one-second tick.
	deadline := time.Now().Add(4 * time.Second)
	for {
		a, _ := h.st.KVList(ctx, bucketClients)
		b, _ := h.st.KVList(ctx, bucketSubs)
		if len(a)+len(b) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still stored: %d clients, %d subscriptions", len(a), len(b))
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
			waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("ordered"); return ok && cl.Closed() })
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
				waitFor(t, func() bool { return h.a.metrics.fromBus.Load() == uint64(i+1)/2 })
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
