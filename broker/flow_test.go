package broker_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// TestFlows counts envelopes in by publisher protocol and QoS, out by
// subscriber protocol and delivery QoS, and drops of a full queue.
func TestFlows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, err := broker.NewMemory(broker.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var got atomic.Int64
	if _, err := m.Subscribe(ctx, broker.SubscribeOptions{ID: "x", Protocol: broker.ProtoXMPP, Filters: []string{"a/#"}, QoS: 0},
		func(context.Context, *broker.Envelope) error { got.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	// A subscriber whose handler never returns until the end: its queue of
	// 1 fills and the rest is dropped.
	block := make(chan struct{})
	defer close(block)
	if _, err := m.Subscribe(ctx, broker.SubscribeOptions{ID: "slow", Protocol: broker.ProtoCoAP, Filters: []string{"a/#"}, QueueLen: 1},
		func(context.Context, *broker.Envelope) error { <-block; return nil }); err != nil {
		t.Fatal(err)
	}
	pubs := []struct {
		proto string
		qos   byte
		n     int
	}{{broker.ProtoMQTT, 0, 3}, {broker.ProtoMQTT, 1, 2}, {broker.ProtoREST, 0, 1}}
	total := 0
	for _, p := range pubs {
		for range p.n {
			if err := m.Publish(ctx, &broker.Envelope{Topic: "a/b", QoS: p.qos, Origin: broker.Origin{Protocol: p.proto}}); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < int64(total) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got.Load() != int64(total) {
		t.Fatalf("xmpp subscriber got %d of %d", got.Load(), total)
	}
	flows := m.Flows()
	find := func(proto string, qos byte) broker.Flow {
		i := slices.IndexFunc(flows, func(f broker.Flow) bool { return f.Protocol == proto && f.QoS == qos })
		if i < 0 {
			return broker.Flow{Protocol: proto, QoS: qos}
		}
		return flows[i]
	}
	for _, c := range []struct {
		proto            string
		qos              byte
		in, out, dropped uint64
	}{
		{broker.ProtoMQTT, 0, 3, 0, 0},
		{broker.ProtoMQTT, 1, 2, 0, 0},
		{broker.ProtoREST, 0, 1, 0, 0},
		{broker.ProtoXMPP, 0, 0, 6, 0},
	} {
		f := find(c.proto, c.qos)
		if f.In != c.in || f.Out != c.out || f.Dropped != c.dropped {
			t.Errorf("%s qos %d: in %d out %d dropped %d, want in %d out %d dropped %d", c.proto, c.qos, f.In, f.Out, f.Dropped, c.in, c.out, c.dropped)
		}
	}
	// The slow subscriber: at most one in its handler (out), one queued,
	// the rest dropped.
	if f := find(broker.ProtoCoAP, 0); f.Out > 1 || f.Dropped < 4 || f.Out+f.Dropped > 6 {
		t.Errorf("slow coap subscriber: out %d dropped %d, want out <= 1 and dropped >= 4 of 6", f.Out, f.Dropped)
	}
	if !slices.IsSortedFunc(flows, func(a, b broker.Flow) int {
		if a.Protocol != b.Protocol {
			if a.Protocol < b.Protocol {
				return -1
			}
			return 1
		}
		return int(a.QoS) - int(b.QoS)
	}) {
		t.Errorf("flows not sorted: %+v", flows)
	}
}
