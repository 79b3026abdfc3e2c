package natsbus

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkGroupQoS1: a QoS 1 publish to a consumer group with members
// on two hubs, from the publish to the member's ack (through the stream
// and the group's durable consumer).
func BenchmarkGroupQoS1(b *testing.B) {
	a := newBus(b, "bench", Config{Node: "a"})
	defer a.Close()
	o := newBus(b, "bench", Config{Node: "b"})
	defer o.Close()
	ctx := context.Background()
	var got atomic.Int64
	done := make(chan struct{}, 1)
	h := func(d *broker.Delivery) {
		d.Ack()
		if got.Add(1) == int64(b.N) {
			done <- struct{}{}
		}
	}
	for _, bus := range []*Bus{a, o} {
		s, err := bus.Consume(ctx, broker.SubscribeOptions{QoS: 1, MaxAckPending: 100,
			Specs: []broker.Filter{{Topic: "bench/#", QoS: 1, Group: "g"}}}, h)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = s.Unsubscribe() }()
	}
	payload := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := a.Publish(ctx, &broker.Envelope{Topic: "bench/x", Payload: payload, QoS: 1}); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}
