package natsbus

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// TestQuotasAcrossHubs: retained values a principal set on hub A count on
// hub B (every hub holds the bucket's values), so B refuses the one past
// the bound with ErrQuota; a value larger than ColdRetainedAbove is held
// as a stub on every hub and read back whole from the KV bucket, on
// replay and on a read.
func TestQuotasAcrossHubs(t *testing.T) {
	q := broker.Quotas{RetainedPerPrincipal: 2}
	a := newBus(t, "quota", Config{Node: "a", Quotas: q, ColdRetainedAbove: 256})
	defer a.Close()
	b := newBus(t, "quota", Config{Node: "b", Quotas: q, ColdRetainedAbove: 256})
	defer b.Close()
	ctx := context.Background()
	big := bytes.Repeat([]byte("z"), 4096)
	for _, e := range []*broker.Envelope{
		{Topic: "v/1", Payload: []byte("small"), Retain: true, QoS: 1},
		{Topic: "v/2", Payload: big, Retain: true},
	} {
		e.Origin = broker.Origin{Protocol: broker.ProtoMQTT, Principal: "p"}
		if err := a.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both values counted on B", func() bool { return b.Usage("p").Retained == 2 })
	err := b.Publish(ctx, &broker.Envelope{Topic: "v/3", Payload: []byte("x"), Retain: true,
		Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: "p"}})
	if !errors.Is(err, broker.ErrQuota) || !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("third retained value of p on B: %v, want ErrQuota", err)
	}
	if got := b.QuotaStats().Refused; got != 1 {
		t.Errorf("B refused %d, want 1", got)
	}
	if got := b.Usage("p").RetainedBytes; got < int64(len(big)) {
		t.Errorf("p's retained bytes on B %d, want the cold value's whole size counted", got)
	}
	if st := b.mem.Stats(); st.RetainedCold != 1 {
		t.Fatalf("B holds %d cold values, want 1 (v/2)", st.RetainedCold)
	}
	rs, err := b.Retained(ctx, "v/#")
	if err != nil || len(rs) != 2 || !bytes.Equal(rs[1].Payload, big) {
		t.Fatalf("read of the values on B: %d values, %v; want v/2 read back whole", len(rs), err)
	}
	c := bustest.NewCollector()
	s, err := b.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"v/2"}, SendRetained: true}, c.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Unsubscribe() }()
	if got := c.Wait(t, 1)[0]; !bytes.Equal(got.Payload, big) {
		t.Fatalf("replayed cold value of %d bytes, want %d", len(got.Payload), len(big))
	}
}
