package broker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMemory(t *testing.T, spool broker.Spool) broker.Bus {
	b, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMemoryConformance(t *testing.T) { bustest.Run(t, newMemory) }

// BenchmarkPublish measures publish → delivery through the in-process bus
// to 1 and to 1000 subscribers of the same topic.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			bus, err := broker.NewMemory(broker.MemoryConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			var got atomic.Int64
			done := make(chan struct{})
			want := int64(b.N) * int64(n)
			h := func(context.Context, *broker.Envelope) error {
				if got.Add(1) == want {
					close(done)
				}
				return nil
			}
			for i := range n {
				if _, err := bus.Subscribe(context.Background(), broker.SubscribeOptions{
					Filters: []string{fmt.Sprintf("bench/+/%d", i%1), "other/" + fmt.Sprint(i)}, QueueLen: b.N + 1,
				}, h); err != nil {
					b.Fatal(err)
				}
			}
			payload := make([]byte, 64)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := bus.Publish(ctx, &broker.Envelope{Topic: "bench/x/0", Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			<-done
			b.StopTimer()
			b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
