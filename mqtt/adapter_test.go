package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hubsmith/hub/broker"
)

func TestPubSubBetweenMQTTClients(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	for _, tc := range []struct {
		pub, sub, want byte
	}{
		{0, 0, 0}, {1, 1, 1}, {2, 2, 2}, {2, 1, 1}, {1, 2, 1}, {0, 2, 0},
	} {
		t.Run(fmt.Sprintf("pub%d-sub%d", tc.pub, tc.sub), func(t *testing.T) {
			topic := fmt.Sprintf("pubsub/%d/%d", tc.pub, tc.sub)
			s := mustV3(t, h.addr, "sub-"+topic, "alice", "alicepw", true)
			s.sub(t, topic, tc.sub)
			p := mustV3(t, h.addr, "pub-"+topic, "", "", true)
			p.pub(t, topic, tc.pub, false, "hello")
			m := s.next(t)
			if m.Topic() != topic || string(m.Payload()) != "hello" || m.Qos() != tc.want {
				t.Fatalf("got %q %q qos %d, want %q hello qos %d", m.Topic(), m.Payload(), m.Qos(), topic, tc.want)
			}
			s.none(t, 50*time.Millisecond) // exactly once: not echoed back from the bus
		})
	}
}

func TestV5PubSubKeepsProperties(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	s := mustV5(t, h.addr, "v5-sub", "alice", "alicepw")
	s.sub(t, "v5/#", 2)
	p := mustV5(t, h.addr, "v5-pub", "", "")
	exp := uint32(60)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := p.c.Publish(ctx, &paho.Publish{Topic: "v5/a", QoS: 2, Payload: []byte(`{"t":1}`),
		Properties: &paho.PublishProperties{ContentType: "application/json", ResponseTopic: "v5/reply",
			CorrelationData: []byte{1, 2}, MessageExpiry: &exp, User: paho.UserProperties{{Key: "k", Value: "v"}}}}); err != nil {
		t.Fatal(err)
	}
	m := s.next(t)
	if m.QoS != 2 || m.Properties.ContentType != "application/json" || m.Properties.ResponseTopic != "v5/reply" ||
		!bytes.Equal(m.Properties.CorrelationData, []byte{1, 2}) || m.Properties.User.Get("k") != "v" ||
		m.Properties.MessageExpiry == nil || *m.Properties.MessageExpiry == 0 || *m.Properties.MessageExpiry > 60 {
		t.Fatalf("got %+v props %+v", m, m.Properties)
	}
}

func TestBusEnvelopeReachesMQTTSubscriber(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	v5 := mustV5(t, h.addr, "bus-v5", "alice", "alicepw")
	v5.sub(t, "bus/#", 1)
	v3 := mustV3(t, h.addr, "bus-v3", "alice", "alicepw", true)
	v3.sub(t, "bus/#", 2)
	for _, qos := range []byte{0, 1, 2} {
		e := &broker.Envelope{
			Topic: fmt.Sprintf("bus/q%d", qos), Payload: []byte("23.5"), QoS: qos,
			ContentType: "text/plain", ResponseTopic: "bus/reply", CorrelationData: []byte("c1"),
			Expiry:     time.Now().Add(time.Minute),
			Properties: []broker.Property{{Key: "unit", Value: "C"}, {Key: "unit", Value: "K"}},
			Origin:     broker.Origin{Protocol: broker.ProtoREST, ClientID: "curl"},
		}
		if err := h.bus.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		m := v5.next(t)
		if m.Topic != e.Topic || string(m.Payload) != "23.5" || m.QoS != min(qos, 1) {
			t.Fatalf("v5 got %q %q qos %d", m.Topic, m.Payload, m.QoS)
		}
		pr := m.Properties
		if pr.ContentType != "text/plain" || pr.ResponseTopic != "bus/reply" || string(pr.CorrelationData) != "c1" ||
			len(pr.User) != 2 || pr.User[0] != (paho.UserProperty{Key: "unit", Value: "C"}) || pr.User[1].Value != "K" ||
			pr.MessageExpiry == nil || *pr.MessageExpiry > 60 || *pr.MessageExpiry < 55 {
			t.Fatalf("v5 properties %+v", pr)
		}
		m3 := v3.next(t)
		if m3.Topic() != e.Topic || m3.Qos() != qos {
			t.Fatalf("v3 got %q qos %d, want qos %d", m3.Topic(), m3.Qos(), qos)
		}
	}
	// An envelope that has expired is not delivered.
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "bus/old", Payload: []byte("x"),
		Expiry: time.Now().Add(-time.Second), Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	v3.none(t, 100*time.Millisecond)
}

func TestMQTTPublishReachesBus(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ch := busSub(t, h.bus, "up/#")
	p := mustV5(t, h.addr, "up-pub", "alice", "alicepw")
	exp := uint32(30)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := p.c.Publish(ctx, &paho.Publish{Topic: "up/t", QoS: 1, Payload: []byte("<x/>"),
		Properties: &paho.PublishProperties{ContentType: "application/xml", ResponseTopic: "up/r",
			CorrelationData: []byte("id-7"), MessageExpiry: &exp, User: paho.UserProperties{{Key: "a", Value: "1"}}}}); err != nil {
		t.Fatal(err)
	}
	e := nextEnv(t, ch)
	if e.Topic != "up/t" || string(e.Payload) != "<x/>" || e.QoS != 1 || e.ContentType != "application/xml" ||
		e.ResponseTopic != "up/r" || string(e.CorrelationData) != "id-7" || len(e.Properties) != 1 || e.Properties[0] != (broker.Property{Key: "a", Value: "1"}) {
		t.Fatalf("envelope %+v", e)
	}
	if d := time.Until(e.Expiry); d < 25*time.Second || d > 30*time.Second {
		t.Fatalf("expiry in %v", d)
	}
	o := e.Origin
	if o.Protocol != broker.ProtoMQTT || o.ClientID != "up-pub" || o.Principal != "alice" || o.Node != "test-node" || o.Remote == "" {
		t.Fatalf("origin %+v", o)
	}
	if e.ID == "" || e.Time.IsZero() {
		t.Fatalf("id %q time %v", e.ID, e.Time)
	}
}

func TestRetainedFromBothSides(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ctx := context.Background()
	p := mustV3(t, h.addr, "ret-pub", "", "", true)

	// Set from MQTT: the bus has it, a late MQTT subscriber gets it.
	p.pub(t, "ret/mqtt", 1, true, "on")
	rs, err := h.bus.Retained(ctx, "ret/#")
	if err != nil || len(rs) != 1 || string(rs[0].Payload) != "on" {
		t.Fatalf("bus retained %v %v", rs, err)
	}
	s := mustV3(t, h.addr, "ret-sub1", "", "", true)
	s.sub(t, "ret/mqtt", 1)
	if m := s.next(t); string(m.Payload()) != "on" || !m.Retained() {
		t.Fatalf("late subscriber got %q retained=%v", m.Payload(), m.Retained())
	}

	// Set from the bus: a late MQTT subscriber gets it.
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "ret/bus", Payload: []byte("21"), QoS: 1, Retain: true,
		Origin: broker.Origin{Protocol: broker.ProtoCoAP}}); err != nil {
		t.Fatal(err)
	}
	s2 := mustV3(t, h.addr, "ret-sub2", "", "", true)
	s2.sub(t, "ret/bus", 1)
	if m := s2.next(t); string(m.Payload()) != "21" || !m.Retained() {
		t.Fatalf("late subscriber got %q retained=%v", m.Payload(), m.Retained())
	}

	// Retained values survive a restart (the bus's, from the store).
	h.restart()
	s3 := mustV3(t, h.addr, "ret-sub3", "", "", true)
	s3.sub(t, "ret/#", 1)
	got := map[string]string{}
	for range 2 {
		m := s3.next(t)
		got[m.Topic()] = string(m.Payload())
	}
	if got["ret/mqtt"] != "on" || got["ret/bus"] != "21" {
		t.Fatalf("after restart %v", got)
	}

	// Cleared from MQTT and from the bus.
	p = mustV3(t, h.addr, "ret-pub2", "", "", true)
	p.pub(t, "ret/mqtt", 1, true, "")
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "ret/bus", Payload: nil, Retain: true, QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	if rs, _ := h.bus.Retained(ctx, "ret/#"); len(rs) != 0 {
		t.Fatalf("bus still retains %v", rs)
	}
	s4 := mustV3(t, h.addr, "ret-sub4", "", "", true)
	s4.sub(t, "ret/#", 1)
	s4.none(t, 100*time.Millisecond)
}

func TestPersistentSessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "keeper", "alice", "alicepw", false)
	c.sub(t, "keep/#", 1)
	c.c.Disconnect(100)

	// Queued while offline, before the restart: from MQTT and from the bus.
	p := mustV3(t, h.addr, "keep-pub", "", "", true)
	p.pub(t, "keep/1", 1, false, "one")
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "keep/2", Payload: []byte("two"), QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.queued("keeper") == 2 })
	h.close()

	// Published while the adapter is down: the bus keeps it in the
	// session's durable queue.
	h.open()
	h.a.Stop(context.Background())
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "keep/3", Payload: []byte("three"), QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	h.bus.Close()
	h.st.Close()
	h.a = nil
	h.open()

	c = mustV3(t, h.addr, "keeper", "alice", "alicepw", false)
	got := map[string]string{}
	for range 3 {
		m := c.next(t)
		got[m.Topic()] = string(m.Payload())
		if m.Qos() != 1 {
			t.Fatalf("%s qos %d", m.Topic(), m.Qos())
		}
	}
	if got["keep/1"] != "one" || got["keep/2"] != "two" || got["keep/3"] != "three" {
		t.Fatalf("got %v", got)
	}
	// The subscription itself survived too.
	p = mustV3(t, h.addr, "keep-pub2", "", "", true)
	p.pub(t, "keep/4", 1, false, "four")
	if m := c.next(t); m.Topic() != "keep/4" {
		t.Fatalf("got %q", m.Topic())
	}
	c.none(t, 100*time.Millisecond)
}

func TestCleanSessionLeavesNothingStored(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "tmp", "alice", "alicepw", false)
	c.sub(t, "tmp/#", 1)
	c.c.Disconnect(100)
	ctx := context.Background()
	waitFor(t, func() bool { kv, _ := h.st.KVList(ctx, bucketSessions); return len(kv) == 1 && h.durable("tmp") })
	// Reconnecting with a clean session discards the stored one.
	c = mustV3(t, h.addr, "tmp", "alice", "alicepw", true)
	// (mochi runs OnSessionEstablished just after CONNACK.)
	waitFor(t, func() bool {
		kv, err := h.st.KVList(ctx, bucketSessions)
		return err == nil && len(kv) == 0 && !h.durable("tmp")
	})
	c.sub(t, "tmp/#", 1)
	if h.durable("tmp") {
		t.Fatal("a clean session is stored")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCleanConnectDropsDamagedRecord: a clean start deletes its client
// id's session record even when the record does not decode.
func TestCleanConnectDropsDamagedRecord(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ctx := context.Background()
	if err := h.st.KVPut(ctx, bucketSessions, "torn", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	mustV3(t, h.addr, "torn", "alice", "alicepw", true)
	waitFor(t, func() bool { _, err := h.st.KVGet(ctx, bucketSessions, "torn"); return err != nil })
}

func TestQueuedForOfflineSessionIsStoredBeforePuback(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "away", "alice", "alicepw", false)
	c.sub(t, "away/#", 1)
	c.c.Disconnect(100)
	waitFor(t, func() bool { cl, ok := h.a.srv.Clients.Get("away"); return ok && cl.Closed() })
	p := mustV3(t, h.addr, "away-pub", "", "", true)
	ctx := context.Background()
	for i := range 5 {
		p.pub(t, "away/x", 1, false, fmt.Sprint(i)) // returns on PUBACK
		if n, err := h.st.QueueLen(ctx, subscriberID("away")); err != nil || n != i+1 {
			t.Fatalf("after PUBACK %d: %d stored (%v)", i, n, err)
		}
	}
}

func TestV5NoLocal(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV5(t, h.addr, "nolocal", "", "")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "nl/#", QoS: 1, NoLocal: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.c.Publish(ctx, &paho.Publish{Topic: "nl/own", QoS: 1, Payload: []byte("mine")}); err != nil {
		t.Fatal(err)
	}
	mustV3(t, h.addr, "nl-other", "", "", true).pub(t, "nl/other", 1, false, "theirs")
	if m := c.next(t); m.Topic != "nl/other" {
		t.Fatalf("got %q, want only the other client's message", m.Topic)
	}
}
