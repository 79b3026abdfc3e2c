package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestSharedSubscriptionHubDies: MQTT members of $share/g/t on hubs A and
// B at QoS 1, a publisher on A. While nothing fails every publish reaches
// the group exactly once. Then B's hub dies mid-load: its NATS connection
// goes first (a cut: nothing it had out is acknowledged or handed back),
// then its MQTT sessions, while B's member holds the deliveries it got
// unacknowledged. Every publish A acknowledged reaches the group at
// least once: what B had out comes again to A after nats.ack_wait; the
// ones B's member had received before its hub could acknowledge them to
// JetStream are the duplicates, counted.
func TestSharedSubscriptionHubDies(t *testing.T) {
	srv := natsServer(t)
	proxy := newCutProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	const ackWait = 2 * time.Second
	a := hubtest.Start(t, func(c *gateway.Config) { c.Node = "a"; c.NATS.URL = srv.ClientURL(); c.NATS.AckWait = ackWait })
	b := hubtest.Start(t, func(c *gateway.Config) { c.Node = "b"; c.NATS.URL = "nats://" + proxy.addr; c.NATS.AckWait = ackWait })
	memA := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "worker-a", "", "", true)
	memA.subscribe(t, "$share/g/t", 1)
	memB, holdB := dialHolding(t, b.Addr(t, "mqtt.mqtt"), "worker-b")
	memB.subscribe(t, "$share/g/t", 1)
	pub := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "producer", "", "", true)

	got := map[string]int{} // payload → deliveries to the group
	onB := 0
	var killed time.Time
	var redone []time.Duration // after the kill, at A, of what was published before it
	var before map[string]bool // published before the kill
	drain := func() {
		for {
			select {
			case m := <-memA.msgs:
				got[m.Payload]++
				if before[m.Payload] {
					redone = append(redone, time.Since(killed))
				}
			case m := <-memB.msgs:
				got[m.Payload]++
				onB++
			default:
				return
			}
		}
	}
	// Phase 1, nothing fails: each publish once.
	const phase1 = 100
	for i := range phase1 {
		pub.publish(t, "t", 1, false, fmt.Sprint("p1-", i))
	}
	within(t, "phase 1 delivered to the group", 10*time.Second, func() bool { drain(); return len(got) == phase1 })
	memA.none(t, 200*time.Millisecond)
	memB.none(t, 50*time.Millisecond)
	for p, n := range got {
		if n != 1 {
			t.Fatalf("while nothing failed %s reached the group %d times", p, n)
		}
	}
	if onB == 0 || onB == phase1 {
		t.Fatalf("phase 1: %d of %d on B, want the group to spread", onB, phase1)
	}
	t.Logf("phase 1: %d publishes, each delivered once (%d on B)", phase1, onB)
	phase1B := onB

	// Phase 2: B dies after a third of the load.
	const total, killAt = 300, 100
	acked := map[string]bool{}
	var stopB time.Duration
	stopped := make(chan struct{})
	bBefore := 0
	// The publishes go out without waiting for each PUBACK, and B's
	// member stops acknowledging after its first delivery of phase 2, so
	// that B's hub has deliveries out, unacknowledged, when it dies.
	holdB.Store(true)
	toks := make([]paho.Token, total)
	for i := range total {
		if i == killAt {
			// B's member is taking its share when its hub dies.
			for end := time.Now().Add(5 * time.Second); onB == phase1B && time.Now().Before(end); {
				drain()
				time.Sleep(time.Millisecond)
			}
			bBefore = onB
			before = map[string]bool{}
			for j := range killAt {
				if p := fmt.Sprint("p2-", j); got[p] == 0 {
					before[p] = true // not delivered yet: out to B, or on its way
				}
			}
			proxy.Cut()
			killed = time.Now()
			go func() {
				defer close(stopped)
				b.Close(t)
				stopB = time.Since(killed)
			}()
		}
		toks[i] = pub.Publish("t", 1, false, fmt.Sprint("p2-", i))
		drain()
	}
	for i, tok := range toks {
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			acked[fmt.Sprint("p2-", i)] = true
		}
	}
	drain()
	missing := func() int {
		drain()
		n := 0
		for p := range acked {
			if got[p] == 0 {
				n++
			}
		}
		return n
	}
	d := within(t, "every acknowledged publish at the group", 30*time.Second, func() bool { return missing() == 0 })
	dups := 0
	for p := range acked {
		dups += got[p] - 1
	}
	<-stopped
	last, redelivered := time.Duration(0), 0
	for _, r := range redone {
		last = max(last, r)
		if r > ackWait/2 {
			redelivered++ // out to B when it died: after AckWait
		}
	}
	t.Logf("phase 2: B took %d before its hub died (stopped in %v); %d of %d publishes acknowledged, all reached the group "+
		"(the last %v after the load); %d published before the kill came to A after it, %d of them redelivered after AckWait, the last %v after the kill; %d twice",
		bBefore-phase1B, stopB.Round(time.Millisecond), len(acked), total, d.Round(time.Millisecond), len(redone), redelivered, last.Round(time.Millisecond), dups)
	if redelivered == 0 {
		t.Error("nothing was redelivered: B had nothing out when it died, the case did not test what it is for")
	}
}

// dialHolding is dialMQTT (clean session) whose message handler, once
// hold is set, passes its message on and then blocks until the test
// ends: the client acknowledges nothing more (paho acknowledges when the
// handler returns), as a member whose hub dies mid-delivery.
func dialHolding(t *testing.T, addr, id string) (*mqttClient, *atomic.Bool) {
	t.Helper()
	c := &mqttClient{msgs: make(chan mqttMessage, 1000)}
	hold := new(atomic.Bool)
	release := make(chan struct{})
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(wait).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			c.msgs <- mqttMessage{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
			if hold.Load() {
				<-release
			}
		})
	c.Client = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { close(release); c.Disconnect(100) })
	return c, hold
}

// TestSharedSubscriptionPersistentMembers: the members of $share/g/p/#
// are MQTT persistent sessions, one made on A and one on B. While both
// are away, 20 QoS 1 publishes wait for the group; the first member back,
// reconnecting to the other hub, gets each of them once.
func TestSharedSubscriptionPersistentMembers(t *testing.T) {
	srv := natsServer(t)
	hubs := natsHubs(t, srv, "a", "b")
	a, b := hubs[0], hubs[1]
	for _, m := range []struct {
		h  *hubtest.Hub
		id string
	}{{a, "member-1"}, {b, "member-2"}} {
		c := dialMQTT(t, m.h.Addr(t, "mqtt.mqtt"), m.id, "", "", false)
		c.subscribe(t, "$share/g/p/#", 1)
		c.Disconnect(100)
	}
	pub := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "producer", "", "", true)
	const n = 20
	for i := range n {
		pub.publish(t, fmt.Sprint("p/", i%3), 1, false, fmt.Sprint(i))
	}
	back := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "member-1", "", "", false)
	got := map[string]int{}
	end := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case m := <-back.msgs:
			got[m.Payload]++
			if m.QoS != 1 {
				t.Errorf("queued group delivery %q at QoS %d, want 1", m.Payload, m.QoS)
			}
		case <-end:
			t.Fatalf("member-1, back on B, got %d of the %d publishes made while the group was away", len(got), n)
		}
	}
	back.none(t, 300*time.Millisecond)
	for p, k := range got {
		if k != 1 {
			t.Errorf("%s delivered %d times", p, k)
		}
	}
}
