package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// BenchmarkPublishDurable measures QoS 1 publishes that must be stored
// before Publish returns (WriteThrough over the SQLite store) and delivered
// to one durable subscriber, with several concurrent publishers so that
// the store's group commit can batch.
func BenchmarkPublishDurable(b *testing.B) {
	for _, publishers := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			st, err := store.Open(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st, WriteThrough: true})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			var got atomic.Int64
			done := make(chan struct{})
			want := int64(b.N)
			_, err = bus.Subscribe(context.Background(), broker.SubscribeOptions{ID: "d", Durable: true, Filters: []string{"d/#"}, QoS: 1},
				func(context.Context, *broker.Envelope) error {
					if got.Add(1) == want {
						close(done)
					}
					return nil
				})
			if err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 64)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N / publishers
			for p := range publishers {
				n := per
				if p == 0 {
					n += b.N - per*publishers
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range n {
						if err := bus.Publish(context.Background(), &broker.Envelope{Topic: "d/x", Payload: payload, QoS: 1}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
