package coap

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkPostToBus measures CoAP POST (CON, so QoS 1) → bus subscriber:
// each iteration is one acknowledged POST from one of several clients,
// and the benchmark ends when the subscriber has them all.
func BenchmarkPostToBus(b *testing.B) {
	e := start(b, nil)
	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	sub, err := e.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"bench/#"}, QoS: 1, QueueLen: 1 << 16},
		func(context.Context, *broker.Envelope) error {
			if got.Add(1) == target {
				close(done)
			}
			return nil
		})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	payload := []byte(`{"t":21.5}`)
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cc := e.dial(b, "")
		for pb.Next() {
			resp, err := cc.Post(context.Background(), "/ps/bench/t", message.AppJSON, bytes.NewReader(payload))
			if err != nil {
				b.Error(err)
				return
			}
			if resp.Code() != codes.Changed {
				b.Errorf("code %v", resp.Code())
				return
			}
		}
	})
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("subscriber got %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkPostAfterHistory measures one client's acknowledged POSTs
// after it has sent prior of them: go-coap keeps the response to each
// message ID for EXCHANGE_LIFETIME (247 s), and a datagram's cost must
// not grow with that history (third_party/go-coap, patch 1).
func BenchmarkPostAfterHistory(b *testing.B) {
	for _, prior := range []int{0, 20000} {
		b.Run(fmt.Sprintf("prior=%d", prior), func(b *testing.B) {
			e := start(b, nil)
			cc := e.dial(b, "")
			payload := []byte(`{"t":21.5}`)
			post := func() {
				resp, err := cc.Post(context.Background(), "/ps/bench/t", message.AppJSON, bytes.NewReader(payload))
				if err != nil {
					b.Fatal(err)
				}
				if resp.Code() != codes.Changed {
					b.Fatalf("code %v", resp.Code())
				}
			}
			for range prior {
				post()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				post()
			}
		})
	}
}
