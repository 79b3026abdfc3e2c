package mqtt

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkMQTTToMQTT measures MQTT publisher -> hub -> MQTT subscriber
// throughput over loopback with paho 3.1.1 clients and 64-byte payloads.
// Each message also goes through Bus.Publish (to the in-process bus over
// the SQLite store), as in production; "alice" subscribes as a user, whose
// read permission the bus checks on every delivery (adapters.Auth.CanRead, cached). At QoS 1 the publisher keeps up to
// 256 messages unacknowledged; MQTT has no flow control from subscriber to
// publisher, so when the publisher outruns the subscriber the broker's
// per-client bound (Config.MaxQueued, like Mosquitto's
// max_queued_messages) drops the excess: "dropped" counts it.
func BenchmarkMQTTToMQTT(b *testing.B) {
	for _, tc := range []struct {
		qos        byte
		user       string // the subscriber's; "" = anonymous (no ACL lookups)
		persistent bool   // the subscriber's session: a durable bus subscription
	}{{0, "", false}, {1, "", false}, {1, "alice", false}, {1, "alice", true}} {
		qos := tc.qos
		name := fmt.Sprintf("qos%d", qos)
		if tc.user != "" {
			name += "-" + tc.user
		}
		if tc.persistent {
			name += "-persistent"
		}
		b.Run(name, func(b *testing.B) {
			h := newHub(b, nil)
			var got, last atomic.Int64
			so := pahov3.NewClientOptions().AddBroker("tcp://" + h.addr).SetClientID("bench-sub").SetCleanSession(!tc.persistent)
			if tc.user != "" {
				so.SetUsername(tc.user).SetPassword(tc.user + "pw")
			}
			sub := pahov3.NewClient(so)
			if tok := sub.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			defer sub.Disconnect(0)
			if tok := sub.Subscribe("bench/t", qos, func(pahov3.Client, pahov3.Message) {
				got.Add(1)
				last.Store(time.Now().UnixNano())
			}); !tok.WaitTimeout(wait) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			po := pahov3.NewClientOptions().AddBroker("tcp://" + h.addr).SetClientID("bench-pub").SetCleanSession(true)
			pub := pahov3.NewClient(po)
			if tok := pub.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			defer pub.Disconnect(0)
			payload := make([]byte, 64)
			window := make(chan pahov3.Token, 256)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				tok := pub.Publish("bench/t", qos, false, payload)
				if qos == 0 {
					continue
				}
				select {
				case window <- tok:
				default:
					old := <-window
					old.Wait()
					window <- tok
				}
			}
			for len(window) > 0 {
				(<-window).Wait()
			}
			// Wait until the subscriber has everything or stops getting more.
			for prev := int64(-1); got.Load() < int64(b.N) && got.Load() != prev; {
				prev = got.Load()
				time.Sleep(500 * time.Millisecond)
			}
			b.StopTimer()
			n := got.Load()
			el := time.Duration(last.Load() - start.UnixNano())
			b.ReportMetric(float64(int64(b.N)-n), "dropped")
			b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(n)/float64(b.N)*100, "%delivered")
		})
	}
}
