package broker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkConsumeOneByOne measures one publish, its delivery and its ack
// to one Consume subscriber, the publisher waiting for each delivery
// before the next publish (a paced flow: the subscription is idle at
// every publish), with the delivery made by the subscription's goroutine
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
			for range b.N {
				if err := bus.Publish(ctx, &broker.Envelope{Topic: "bench/x", QoS: 1, Payload: payload}); err != nil {
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
