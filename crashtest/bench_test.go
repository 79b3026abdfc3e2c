package crashtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchWorkers is the number of concurrent publishers, each waiting for
// its acknowledgement before the next publish.
const benchWorkers = 16

// BenchmarkDurableQoS1 measures acknowledged QoS 1 messages per second
// through the real hub binary with durability on (the default
// write_through), to an MQTT subscriber with a persistent session
// (online: delivered as published; away: queued in the store). Each op is
// one message published, acknowledged and, for the online subscriber,
// received (when some are lost, the rate is of acknowledgements).
func BenchmarkDurableQoS1(b *testing.B) {
	for _, k := range publisherKinds[:3] { // mqtt, rest, coap
		for _, online := range []bool{true, false} {
			name := k.name + "-to-mqtt-persistent"
			if !online {
				name += "-away"
			}
			b.Run(name, func(b *testing.B) {
				benchDurable(b, k.name, k.dial, online)
			})
		}
	}
}

func benchDurable(b *testing.B, kind string, dial func(*hubProc, string) (publisher, error), online bool) {
	h := newHub(b, "")
	h.start()
	topic := "bench/" + kind
	sub := dialMQTTSub(b, h, "bench-sub", false)
	sub.subscribe(b, topic, 1)
	if !online {
		sub.c.Disconnect(100)
	}
	pubs := make([]publisher, benchWorkers)
	for i := range pubs {
		var err error
		d := dial
		if kind == "mqtt" {
			d = func(h *hubProc, topic string) (publisher, error) {
				return dialMQTTPub(h, fmt.Sprintf("bench-pub-%d", i), topic, 1)
			}
		}
		if pubs[i], err = d(h, topic); err != nil {
			b.Fatal(err)
		}
		defer pubs[i].close()
	}
	var next, failed atomic.Int64
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
				err := pubs[w].send(ctx, fmt.Sprintf("b-%d", i))
				cancel()
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	ackEl := time.Since(t0)
	got := 0
	if online {
		deadline := time.After(30 * time.Second)
	wait:
		for got < b.N-int(failed.Load()) {
			select {
			case <-sub.msgs:
				got++
			case <-time.After(3 * time.Second):
				break wait
			case <-deadline:
				break wait
			}
		}
	}
	el := time.Since(t0)
	b.StopTimer()
	if online {
		// Lost deliveries are TestOnlinePersistentSubscriberGetsAll's
		// subject; here they are reported, not failed.
		b.ReportMetric(100*float64(got)/float64(b.N), "%delivered")
		if got < b.N {
			el = ackEl
		}
	}
	if failed.Load() > 0 {
		b.Errorf("%d publishes failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(h.rssKB())/1024, "hub-RSS-MiB")
}
