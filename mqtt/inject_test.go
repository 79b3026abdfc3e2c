package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// fullDisk is the real store with in-flight writes failing while full is
// set, as they do with "database or disk is full".
type fullDisk struct {
	SessionStore
	full *atomic.Bool
}

func (d fullDisk) KVPut(ctx context.Context, bucket, key string, value []byte) error {
	if d.full.Load() && bucket == bucketInflight {
		return errors.New("database or disk is full (13)")
	}
	return d.SessionStore.KVPut(ctx, bucket, key, value)
}

// TestUnstoredCopyRefusesPublish: a QoS 1 publish whose copy for an
// offline persistent session cannot be stored is refused (MQTT 5 reason
// 0x97, MQTT 3.1.1 disconnect, the bus handler fails so the bus keeps
// the envelope), QoS 0 still flows to live subscribers, and after a
// restart the session holds what was acknowledged and nothing refused.
func TestUnstoredCopyRefusesPublish(t *testing.T) {
	t.Parallel()
	var full atomic.Bool
	h := newHub(t, func(c *Config) { c.Sessions = fullDisk{c.Sessions, &full} })
	away := mustV3(t, h.addr, "away", "alice", "alicepw", false)
	away.sub(t, "f/#", 1)
	away.c.Disconnect(100)
	waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("away"); return ok && cl.Closed() })
	live := mustV3(t, h.addr, "live", "alice", "alicepw", true)
	live.sub(t, "f/#", 0)

	full.Store(true)
	v5 := mustV5(t, h.addr, "pub5", "alice", "alicepw")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	pr, err := v5.c.Publish(ctx, &paho.Publish{Topic: "f/5", QoS: 1, Payload: []byte("refused5")})
	if pr == nil || pr.ReasonCode != packets.ErrQuotaExceeded.Code {
		t.Fatalf("MQTT 5 QoS 1 with the store full: %+v %v, want reason 0x97", pr, err)
	}
	lost := make(chan struct{})
	o := pahov3.NewClientOptions().AddBroker("tcp://" + h.addr).SetClientID("pub3").SetUsername("alice").SetPassword("alicepw").
		SetAutoReconnect(false).SetProtocolVersion(4).SetConnectionLostHandler(func(pahov3.Client, error) { close(lost) })
	p3 := pahov3.NewClient(o)
	if tok := p3.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { p3.Disconnect(0) })
	p3.Publish("f/3", 1, false, "refused3")
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("MQTT 3.1.1 QoS 1 with the store full: connection not closed")
	}
	// QoS 0 flows to the live subscriber.
	if _, err := v5.c.Publish(ctx, &paho.Publish{Topic: "f/0", QoS: 0, Payload: []byte("q0")}); err != nil {
		t.Fatal(err)
	}
	for {
		if m := live.next(t); string(m.Payload()) == "q0" {
			break
		}
	}
	// From the bus: the handler fails, the bus retries until space is back.
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "f/rest", Payload: []byte("bus"), QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.a.metrics.notStored.Load() >= 3 })
	if n := h.a.metrics.fromBus.Load(); n != 0 {
		t.Fatalf("%d envelopes taken from the bus while the store is full", n)
	}
	full.Store(false)
	waitFor(t, func() bool { return h.a.metrics.fromBus.Load() == 1 })
	pr, err = v5.c.Publish(ctx, &paho.Publish{Topic: "f/5", QoS: 1, Payload: []byte("ok5")})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("MQTT 5 QoS 1 with space again: %+v %v", pr, err)
	}
	h.restart()
	away = mustV3(t, h.addr, "away", "alice", "alicepw", false)
	got := map[string]bool{}
	for range 2 {
		got[string(away.next(t).Payload())] = true
	}
	away.none(t, 300*time.Millisecond)
	if !got["bus"] || !got["ok5"] {
		t.Fatalf("after a restart the session holds %v, want bus and ok5", got)
	}
}

// TestReplayedEnvelopeQueuedOnce: after a crash the bus delivers again the
// envelopes of the batch it had not acknowledged; a session that already
// holds one (restored from the store) must not get it twice.
func TestReplayedEnvelopeQueuedOnce(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "replay", "alice", "alicepw", false)
	c.sub(t, "rp/#", 1)
	c.c.Disconnect(100)
	waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("replay"); return ok && cl.Closed() })
	ctx := context.Background()
	var sent []*broker.Envelope
	for i := range 3 {
		e := &broker.Envelope{Topic: "rp/x", Payload: []byte(fmt.Sprint(i)), QoS: 1, Origin: broker.Origin{Protocol: broker.ProtoREST}}
		if err := h.bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, e)
	}
	waitFor(t, func() bool { return h.a.metrics.fromBus.Load() == 3 })
	h.restart()
	// The bus's replay of the unacknowledged batch, as after a kill -9.
	for _, e := range sent {
		if e.ID == "" {
			t.Fatal("the bus gave the envelope no id")
		}
		if err := h.a.fromBus(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.a.metrics.duplicates.Load(); n != 3 {
		t.Errorf("%d replayed envelopes recognized, want 3", n)
	}
	c = mustV3(t, h.addr, "replay", "alice", "alicepw", false)
	for i := range 3 {
		if m := c.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m.Payload())
		}
	}
	c.none(t, 300*time.Millisecond)
}

// TestResumeKeepsOrderUnderLoad: a persistent session comes back while
// the bus keeps delivering to it; it gets what was queued, then what
// followed, each once and in publishing order (mochi resends the queue
// after making the new connection the owner: deliveries in between went
// out first, and were then resent again).
func TestResumeKeepsOrderUnderLoad(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "resume", "alice", "alicepw", false)
	c.sub(t, "rs/#", 1)
	c.c.Disconnect(100)
	waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("resume"); return ok && cl.Closed() })
	ctx := context.Background()
	const queued, total = 300, 900
	pub := func(i int) {
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "rs/x", Payload: []byte(fmt.Sprint(i)), QoS: 1,
			Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
			t.Error(err)
		}
	}
	for i := range queued {
		pub(i)
	}
	waitFor(t, func() bool { return h.a.metrics.fromBus.Load() == queued })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := queued; i < total; i++ {
			pub(i)
		}
	}()
	c = mustV3(t, h.addr, "resume", "alice", "alicepw", false)
	<-done
	for i := range total {
		if m := c.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m.Payload())
		}
	}
	c.none(t, 300*time.Millisecond)
}

// TestQueuedExpiryForV3SubscriberSurvivesRestart: an MQTT 5 message with
// an expiry queued for an offline MQTT 3.1.1 session expires after a
// restart too (mochi expires only version 5 packets).
func TestQueuedExpiryForV3SubscriberSurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			t.Parallel()
			h := newHub(t, nil)
			c := mustV3(t, h.addr, "exp3", "alice", "alicepw", false)
			c.sub(t, "ex/#", 1)
			c.c.Disconnect(100)
			waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("exp3"); return ok && cl.Closed() })
			p := mustV5(t, h.addr, "exp-pub", "alice", "alicepw")
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			one := uint32(1)
			for _, m := range []struct {
				payload string
				props   *paho.PublishProperties
			}{{"short", &paho.PublishProperties{MessageExpiry: &one}}, {"forever", nil}} {
				if _, err := p.c.Publish(ctx, &paho.Publish{Topic: "ex/x", QoS: 1, Payload: []byte(m.payload), Properties: m.props}); err != nil {
					t.Fatal(err)
				}
			}
			if restart {
				h.restart()
			}
			time.Sleep(2100 * time.Millisecond)
			c = mustV3(t, h.addr, "exp3", "alice", "alicepw", false)
			if m := c.next(t); string(m.Payload()) != "forever" {
				t.Fatalf("got %q, want only the message without expiry", m.Payload())
			}
			c.none(t, 300*time.Millisecond)
		})
	}
}

// TestDroppedCopyIsQueuedAgain: a copy mochi takes out of a persistent
// session's in-flight table because the client's outbound queue was full
// goes back in under a new packet id, stored, and reaches the client when
// it returns; the connection is closed as a slow consumer.
func TestDroppedCopyIsQueuedAgain(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "overflow", "alice", "alicepw", false)
	c.sub(t, "ov/#", 1)
	c.c.Disconnect(100)
	waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("overflow"); return ok && cl.Closed() })
	ctx := context.Background()
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "ov/x", Payload: []byte("kept"), QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.a.metrics.fromBus.Load() == 1 })
	cl, _ := h.a.srv.Clients.Get("overflow")
	pks := cl.State.Inflight.GetAll(false)
	if len(pks) != 1 {
		t.Fatalf("%d in flight, want 1", len(pks))
	}
	// What mochi does after OnPublishDropped.
	cl.State.Inflight.Delete(pks[0].PacketID)
	if _, ok := h.a.requeue(cl, pks[0]); !ok {
		t.Fatal("requeue failed")
	}
	again := cl.State.Inflight.GetAll(false)
	if len(again) != 1 || again[0].PacketID == pks[0].PacketID {
		t.Fatalf("in flight after requeue: %+v", again)
	}
	h.a.sessions.behind.flush() // the old record's deletion
	kv, _ := h.st.KVList(ctx, bucketInflight)
	if len(kv) != 1 || kv[0].Key != inflightKey("overflow", again[0].PacketID) {
		t.Fatalf("stored: %d records, want one under the new packet id", len(kv))
	}
	if h.a.metrics.slowConsumers.Load() != 1 {
		t.Error("slow consumer not counted")
	}
	h.restart()
	c = mustV3(t, h.addr, "overflow", "alice", "alicepw", false)
	if m := c.next(t); string(m.Payload()) != "kept" {
		t.Fatalf("got %q", m.Payload())
	}
	c.none(t, 300*time.Millisecond)
}
