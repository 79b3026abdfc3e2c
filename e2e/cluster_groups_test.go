package e2e

import (
	"testing"
	"time"
)

// TestSharedSubscriptionAcrossHubs: MQTT shared subscriptions
// ($share/g/t) on hub A and on hub B form one group across the cluster:
// 100 publishes (QoS 0 and 1, from both hubs) make 100 deliveries in all,
// some on each hub.
func TestSharedSubscriptionAcrossHubs(t *testing.T) {
	srv := natsServer(t)
	hubs := natsHubs(t, srv, "a", "b")
	a, b := hubs[0], hubs[1]
	memA := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "worker-a", "", "", true)
	memA.subscribe(t, "$share/g/jobs/#", 1)
	memB := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "worker-b", "", "", true)
	memB.subscribe(t, "$share/g/jobs/#", 1)
	pubA := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "pub-a", "", "", true)
	pubB := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "pub-b", "", "", true)
	time.Sleep(100 * time.Millisecond) // the queue subscriptions reach NATS
	const n = 100
	for i := range n {
		p := pubA
		if i%2 == 1 {
			p = pubB
		}
		p.publish(t, "jobs/"+string(rune('a'+i%26)), byte(i%2), false, "job")
	}
	gotA, gotB := 0, 0
	end := time.After(10 * time.Second)
	for gotA+gotB < n {
		select {
		case <-memA.msgs:
			gotA++
		case <-memB.msgs:
			gotB++
		case <-end:
			t.Fatalf("%d deliveries on A, %d on B, want %d in all", gotA, gotB, n)
		}
	}
	memA.none(t, 200*time.Millisecond)
	memB.none(t, 200*time.Millisecond)
	if gotA == 0 || gotB == 0 {
		t.Fatalf("%d deliveries on A, %d on B: want some on each", gotA, gotB)
	}
	t.Logf("100 publishes to $share/g/jobs/#: %d delivered on A, %d on B", gotA, gotB)
}
