package xmpp

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// TestResourceSwapKeepsTopicSubscription swaps a user's availability
// between two resources at once, over and over: one goes unavailable as
// the other becomes available. The topic subscription must stay attached
// for the one left available (a detach taken after the newcomer's attach
// once left the user without deliveries until all his resources had
// gone).
func TestResourceSwapKeepsTopicSubscription(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	topicJID := "swap.t@topics.localhost"
	a := connect(t, h, "alice", "alicepw")
	a.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	a.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == topicJID })
	b := connect(t, h, "alice", "alicepw")
	b.send(t, `<presence type='unavailable'/>`)
	waitAvailable := func(want *client) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			av := h.a.availableOf("alice@localhost")
			if len(av) == 1 && av[0].jid == want.jid {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s never the only available resource (%d available)", want.jid, len(av))
			}
		}
	}
	waitAvailable(a)
	// Deliveries in flight while the swaps happen make a detach take a
	// while, as it waits for the one being delivered.
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	pubs.Add(1)
	go func() {
		defer pubs.Done()
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			_ = h.bus.Publish(ctx, &broker.Envelope{Topic: "swap/t", Payload: []byte("filler"), ContentType: "text/plain", QoS: 1,
				Origin: broker.Origin{Protocol: broker.ProtoMQTT}})
		}
	}()
	defer func() { close(stop); pubs.Wait() }()
	cur, next := a, b
	for i := range 30 {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); cur.send(t, `<presence type='unavailable'/>`) }()
		go func() { defer wg.Done(); next.send(t, `<presence/>`) }()
		wg.Wait()
		waitAvailable(next)
		body := strconv.Itoa(i)
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "swap/t", Payload: []byte(body), ContentType: "text/plain", QoS: 1,
			Origin: broker.Origin{Protocol: broker.ProtoMQTT}}); err != nil {
			t.Fatal(err)
		}
		if got := next.expect(t, "swap "+body, func(v rx) bool { return isMessageFrom(topicJID)(v) && v.Body == body }); got.Body != body {
			t.Fatalf("swap %d: got %q", i, got.Body)
		}
		cur, next = next, cur
	}
}
