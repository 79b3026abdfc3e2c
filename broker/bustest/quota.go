package bustest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// Quoted is a bus whose storage quotas can be set (broker.Memory, the
// NATS bus); the quota cases skip a bus that is not.
type Quoted interface {
	SetQuotas(q broker.Quotas) error
}

func quoted(t *testing.T, b broker.Bus, q broker.Quotas) {
	t.Helper()
	qb, ok := b.(Quoted)
	if !ok {
		t.Skip("the bus has no quotas")
	}
	if err := qb.SetQuotas(q); err != nil {
		t.Fatal(err)
	}
}

// pubAs publishes as principal p.
func pubAs(b broker.Bus, p, topic, payload string, qos byte, retain bool) error {
	return b.Publish(context.Background(), &broker.Envelope{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain,
		Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: p}})
}

func isQuota(err error) bool {
	return errors.Is(err, broker.ErrQuota) && errors.Is(err, broker.ErrStorage)
}

// testQuotaRetained: a principal past its count of retained values is
// refused with ErrQuota (which carries ErrStorage, so every adapter
// answers its storage error); an overwrite, another principal's value,
// the hub's own and a clear are not; a clear frees a place.
func testQuotaRetained(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	quoted(t, b, broker.Quotas{RetainedPerPrincipal: 2, RetainedTotal: 4})
	for i, c := range []struct {
		p, topic, payload string
		qos               byte
		refused           bool
	}{
		{"p", "r/1", "a", 0, false},
		{"p", "r/2", "b", 1, false},
		{"p", "r/3", "c", 1, true},
		{"p", "r/3", "c", 0, true},
		{"p", "r/1", "a2", 1, false}, // an overwrite
		{"o", "r/4", "d", 0, false},
		{"o", "r/5", "e", 0, false},
		{"o", "r/6", "f", 0, true}, // the total
		{"p", "r/2", "", 0, false}, // a clear
		{"p", "r/3", "c", 1, false},
	} {
		err := pubAs(b, c.p, c.topic, c.payload, c.qos, true)
		if got := err != nil; got != c.refused || c.refused && !isQuota(err) {
			t.Fatalf("%d: %s sets %s=%q: %v, want refused %v with ErrQuota", i, c.p, c.topic, c.payload, err, c.refused)
		}
	}
	rs, err := b.Retained(context.Background(), "r/#")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(topics(rs), " "); got != "r/1=a2 r/3=c r/4=d r/5=e" {
		t.Fatalf("retained values %s, want r/1=a2 r/3=c r/4=d r/5=e", got)
	}
	if err := b.Publish(context.Background(), &broker.Envelope{Topic: "$hub/x", Payload: []byte("h"), Retain: true,
		Origin: broker.Origin{Protocol: broker.ProtoHub}}); err != nil {
		t.Fatalf("the hub's own retained value past the total: %v", err)
	}
}

// testQuotaQueued: a principal whose durable subscription is away and
// holds its queued-bytes quota is refused with ErrQuota when it
// publishes more for it; QoS 0, topics it does not queue and other
// principals go on; once it has taken its queue it may publish again.
func testQuotaQueued(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	quoted(t, b, broker.Quotas{QueuedBytesPerPrincipal: 4096})
	s := sub(t, b, broker.SubscribeOptions{ID: "greedy", Durable: true, QoS: 1, Filters: []string{"q/#"}, Principal: "p"},
		func(context.Context, *broker.Envelope) error { return nil })
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 1000)
	var err error
	n := 0
	for ; n < 20; n++ {
		if err = pubAs(b, "p", "q/x", payload, 1, false); err != nil {
			break
		}
	}
	if !isQuota(err) || n < 3 || n > 5 {
		t.Fatalf("publish %d of 1 KB into a 4 KiB quota: %v, want ErrQuota after 3 to 5", n+1, err)
	}
	for _, c := range []struct {
		p, topic string
		qos      byte
	}{{"p", "q/x", 0}, {"p", "other", 1}, {"o", "q/x", 1}} {
		if err := pubAs(b, c.p, c.topic, payload, c.qos, false); err != nil {
			t.Fatalf("%s publishes %s at QoS %d with p past its quota: %v", c.p, c.topic, c.qos, err)
		}
	}
	got := NewDeliveries()
	r := consume(t, b, broker.SubscribeOptions{ID: "greedy", Durable: true, QoS: 1, KeepFilters: true, Principal: "p"},
		func(d *broker.Delivery) { got.Handle(d); d.Ack() })
	defer func() { _ = r.Unsubscribe() }()
	got.Wait(t, n)
	deadline := time.Now().Add(wait)
	for {
		if err = pubAs(b, "p", "q/x", "again", 1, false); err == nil {
			break
		}
		if !isQuota(err) || time.Now().After(deadline) {
			t.Fatalf("publish once the queue was taken: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
