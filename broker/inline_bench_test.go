package broker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkConsumeOneByOne measures one publish, its delivery and its ack
// to one Consume subscriber, the publisher waiting for each delivery
// before the next publish and the envelopes stamped 200 µs apart (a
// paced flow of 5,000 msg/s: the subscription is idle at every publish), with the delivery made by the subscription's goroutine
// or inline by the publisher, and how many goroutines that starts.
func BenchmarkConsumeOneByOne(b *testing.B) {
	for _, inline := range []bool{false, true} {
		b.Run(fmt.Sprintf("inline=%v", inline), func(b *testing.B) {
			bus, err := broker.NewMemory(broker.MemoryConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			delivered := make(chan struct{}, 1)
			var n atomic.Int64
			if _, err := bus.Consume(context.Background(), broker.SubscribeOptions{ID: "one", Filters: []string{"bench/#"}, QoS: 1, Inline: inline},
				func(d *broker.Delivery) {
					n.Add(1)
					d.Ack()
					delivered <- struct{}{}
				}); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 64)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			t0 := time.Now()
			for i := range b.N {
				// Stamped 200 µs apart, as at 5,000 msg/s.
				e := &broker.Envelope{Topic: "bench/x", QoS: 1, Payload: payload, Time: t0.Add(time.Duration(i) * 200 * time.Microsecond)}
				if err := bus.Publish(ctx, e); err != nil {
					b.Fatal(err)
				}
				<-delivered
			}
			b.StopTimer()
			if n.Load() != int64(b.N) {
				b.Fatalf("%d deliveries, want %d", n.Load(), b.N)
			}
		})
	}
}
