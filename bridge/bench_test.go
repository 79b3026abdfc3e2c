package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// BenchmarkOut measures bus → upstream throughput at QoS 1 (one publish in
// flight at a time, write-through spool).
func BenchmarkOut(b *testing.B) {
	up := startUpstream(b, "127.0.0.1:0", "#")
	bus := newBus(b)
	br, err := New(Options{Config: Config{Name: "bench", URL: "tcp://" + up.addr, Out: []Rule{{Filter: "#"}}}, Bus: bus, Node: "n1", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = br.Stop(context.Background()) }()
	for br.Healthy() != nil {
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := bus.Publish(context.Background(), &broker.Envelope{Topic: fmt.Sprintf("m/%d", i%100), Payload: []byte("x"), QoS: 1}); err != nil {
			b.Fatal(err)
		}
	}
	published := b.Elapsed()
	for len(up.received()) < b.N {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(published.Nanoseconds())/float64(b.N), "publish-ns/op")
}
