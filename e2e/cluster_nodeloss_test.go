package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestNodeLossUnderLoad: three hubs embedding a three-node JetStream
// cluster (replicas 3); while an MQTT client on A publishes at QoS 1 to a
// persistent subscriber on B, C's NATS node is shut down (abruptly, for
// the cluster: no hub stop first). Every publish A acknowledged reaches
// B (what the lost node had out unacknowledged comes again after
// AckWait); publishes refused while the stream elects a new leader are
// the client's to send again.
func TestNodeLossUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	hubs := startCluster(t, clusterConfigs(t))
	a, b, c := hubs[0], hubs[1], hubs[2]
	sub := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "collector", "", "", false)
	sub.subscribe(t, "load/#", 1)
	time.Sleep(200 * time.Millisecond) // the subscription reaches every node's interest graph
	pub := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "loader", "", "", true)

	const total, killAt = 300, 100
	acked := map[string]bool{}
	afterKill, refused := 0, 0
	var t0 time.Time
	// Each phase has its own time bound: on a loaded machine the first
	// 100 replicated publishes may take most of a shared one, leaving
	// none for after the loss (the test then failed).
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < total && (i == killAt || time.Now().Before(deadline)); i++ {
		if i == killAt {
			t0 = time.Now()
			deadline = t0.Add(30 * time.Second)
			c.NATSNode().Shutdown()
			t.Logf("C's NATS node shut down after %d publishes", i)
		}
		p := fmt.Sprint(i)
		tok := pub.Publish("load/x", 1, false, p)
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			acked[p] = true
			if i >= killAt {
				afterKill++
			}
			continue
		}
		refused++
		if !pub.IsConnectionOpen() {
			pub = dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "loader", "", "", true)
		}
	}
	if t0.IsZero() {
		t.Fatalf("only %d publishes within 30 s, the node never shut down", len(acked)+refused)
	}
	if afterKill == 0 {
		t.Fatalf("no publish acknowledged in the 30 s after the node loss (%d refused)", refused)
	}
	got := map[string]bool{}
	missing := func() int {
		n := 0
		for p := range acked {
			if !got[p] {
				n++
			}
		}
		return n
	}
	// What a lost node's consumer leader had out and unacknowledged comes
	// again after AckWait (30 s).
	end := time.After(45 * time.Second)
	tw := time.Now()
	for missing() > 0 {
		select {
		case m := <-sub.msgs:
			got[m.Payload] = true
		case <-end:
			t.Fatalf("%d acknowledged publishes of %d never reached B", missing(), len(acked))
		}
	}
	t.Logf("%d publishes acknowledged (%d after the node loss, %v), all reached B (the last %v after the load ended); %d refused meanwhile",
		len(acked), afterKill, time.Since(t0).Round(time.Millisecond), time.Since(tw).Round(time.Millisecond), refused)
}
