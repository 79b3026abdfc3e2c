package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// BenchmarkPublishQuota measures what the storage quotas add to a
// publish: QoS 1 to 8 away durable subscriptions of one principal over
// the in-memory spool (the accounting, not the disk), and a retained
// publish, with and without quotas.
func BenchmarkPublishQuota(b *testing.B) {
	for _, on := range []bool{false, true} {
		q := broker.Quotas{}
		if on {
			q = broker.Quotas{QueuedBytesPerPrincipal: 1 << 40, RetainedPerPrincipal: 1 << 30, RetainedBytesPerPrincipal: 1 << 40,
				RetainedTotal: 1 << 30, RetainedBytesTotal: 1 << 40}
		}
		b.Run(fmt.Sprintf("quotas=%v/queued", on), func(b *testing.B) {
			bus, err := broker.NewMemory(broker.MemoryConfig{Spool: bustest.NewMemSpool(), WriteThrough: true, Quotas: q})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			ctx := context.Background()
			for i := range 8 {
				s, err := bus.Subscribe(ctx, broker.SubscribeOptions{ID: fmt.Sprint("s", i), Durable: true, Filters: []string{"q/#"}, QoS: 1,
					Principal: "p"}, func(context.Context, *broker.Envelope) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Detach(); err != nil {
					b.Fatal(err)
				}
			}
			payload := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := bus.Publish(ctx, &broker.Envelope{Topic: "q/x", Payload: payload, QoS: 1,
					Origin: broker.Origin{Principal: "p"}}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("quotas=%v/retained", on), func(b *testing.B) {
			bus, err := broker.NewMemory(broker.MemoryConfig{Quotas: q})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			ctx := context.Background()
			payload := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := bus.Publish(ctx, &broker.Envelope{Topic: fmt.Sprint("r/", i%1000), Payload: payload, Retain: true,
					Origin: broker.Origin{Principal: "p"}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
