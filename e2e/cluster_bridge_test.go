package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/cluster"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestBridgeOncePerCluster: hubs configured with the same bridge run it
// on one hub at a time. A message upstream arrives once in the cluster
// and a local one goes up once; when the holder is cut off from NATS (as
// good as dead) another hub takes the bridge over within the lease's TTL
// and a third of it, and when that one stops, the next takes over within
// a third of the TTL.
func TestBridgeOncePerCluster(t *testing.T) {
	srv := natsServer(t)
	up := startUpstream(t)
	qos := byte(1)
	withBridge := func(name, url string) hubtest.Option {
		return func(c *gateway.Config) {
			c.Node = name
			c.NATS.URL = url
			c.Bridges = []bridge.Config{{
				Name: "cloud", URL: "tcp://" + up, ClientID: "site1", QoS: &qos,
				In:  []bridge.Rule{{Filter: "cmd/#", LocalPrefix: "cloud/"}},
				Out: []bridge.Rule{{Filter: "sensors/#", RemotePrefix: "site1/"}},
			}}
		}
	}
	proxy := newCutProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	a := hubtest.Start(t, withBridge("a", "nats://"+proxy.addr))
	eventually(t, "the bridge running on A", func() bool { return a.BridgeHealthy("cloud") == nil })
	b := hubtest.Start(t, withBridge("b", srv.ClientURL()))
	c := hubtest.Start(t, withBridge("c", srv.ClientURL()))
	running := func(hs ...*hubtest.Hub) int {
		n := 0
		for _, h := range hs {
			if h.BridgeHealthy("cloud") == nil {
				n++
			}
		}
		return n
	}
	if n := running(a, b, c); n != 1 {
		t.Fatalf("the bridge runs on %d hubs, want 1", n)
	}

	cloud := dialMQTT(t, up, "cloud-app", "", "", true)
	cloud.subscribe(t, "site1/#", 1)
	localB := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "local-b", "", "", true)
	localB.subscribe(t, "cloud/#", 1)
	time.Sleep(100 * time.Millisecond) // B's subscription reaches the other hubs' interest
	cloud.publish(t, "cmd/lamp", 1, false, "on")
	if m := localB.next(t); m.Topic != "cloud/cmd/lamp" || m.Payload != "on" {
		t.Fatalf("B got %+v", m)
	}
	localB.none(t, 300*time.Millisecond)
	localB.publish(t, "sensors/t1", 1, false, "20.1")
	if m := cloud.next(t); m.Topic != "site1/sensors/t1" || m.Payload != "20.1" {
		t.Fatalf("upstream got %+v", m)
	}
	cloud.none(t, 300*time.Millisecond)

	// The holder is cut off: B or C takes over once the lease expired.
	proxy.Cut()
	within(t, "the bridge taken over after its holder was cut off", cluster.DefaultLeaseTTL*3, func() bool { return running(b, c) == 1 })
	within(t, "the cut-off hub gave the bridge up", cluster.DefaultLeaseTTL*2, func() bool { return running(a) == 0 })
	holder, other := b, c
	if running(c) == 1 {
		holder, other = c, b
	}
	eventually(t, "the new holder connected upstream", func() bool { return holder.BridgeHealthy("cloud") == nil })
	// Right after a takeover the old holder may still hold the upstream
	// session for a moment (the upstream then redelivers to the new one):
	// the message may come late, but once.
	t1 := time.Now()
	cloud.publish(t, "cmd/lamp", 1, false, "off")
	select {
	case m := <-localB.msgs:
		if m.Payload != "off" {
			t.Fatalf("B got %+v after the takeover", m)
		}
		t.Logf("an upstream message after the takeover reached B in %v", time.Since(t1).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("an upstream message after the takeover did not reach B")
	}
	localB.none(t, 300*time.Millisecond)

	// The holder stops: it gives the lease up, the other takes over.
	holder.Close(t)
	within(t, "the bridge taken over after its holder stopped", cluster.DefaultLeaseTTL*2, func() bool { return running(other) == 1 })
	proxy.Heal()
}
