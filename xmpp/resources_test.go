package xmpp

import (
	"context"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// TestTopicMessagesReachEveryResource: a user's topic subscription
// delivers to each of their available resources, and to the one left when
// the first goes.
func TestTopicMessagesReachEveryResource(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	topicJID := "res.t@topics.localhost"
	first := connect(t, h, "alice", "alicepw")
	first.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	first.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == topicJID })
	second := connect(t, h, "alice", "alicepw")
	for end := time.Now().Add(5 * time.Second); len(h.a.availableOf("alice@localhost")) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("second resource never available")
		}
	}
	pub := func(v string) {
		t.Helper()
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "res/t", Payload: []byte(v), ContentType: "text/plain", Origin: broker.Origin{Protocol: broker.ProtoMQTT}}); err != nil {
			t.Fatal(err)
		}
	}
	pub("1")
	for name, c := range map[string]*client{"first": first, "second": second} {
		if got := c.expect(t, name+" resource", isMessageFrom(topicJID)); got.Body != "1" {
			t.Errorf("%s resource got %q", name, got.Body)
		}
	}
	_ = first.s.Close()
	for end := time.Now().Add(5 * time.Second); len(h.a.availableOf("alice@localhost")) > 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("first resource never gone")
		}
	}
	pub("2")
	if got := second.expect(t, "second resource after the first left", isMessageFrom(topicJID)); got.Body != "2" {
		t.Errorf("second resource got %q", got.Body)
	}
}

// TestResourcesArrivingTogether: two resources of a user becoming
// available at once, each seeing the other already available, attach the
// user's topic subscriptions once, and both get their messages.
func TestResourcesArrivingTogether(t *testing.T) {
	h := startHub(t, nil)
	const bare = "alice@localhost"
	topicJID := "together.t@topics.localhost"
	first := connect(t, h, "alice", "alicepw")
	first.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	first.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == topicJID })
	_ = first.s.Close()
	mu := h.a.topics.userLock(bare)
	for end := time.Now().Add(10 * time.Second); len(h.a.availableOf(bare)) > 0 || h.a.topics.attached(bare); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the first resource never left")
		}
	}

	// Both presences are taken while the user's changes wait on the lock.
	mu.Lock()
	a, b := connect(t, h, "alice", "alicepw"), connect(t, h, "alice", "alicepw")
	for end := time.Now().Add(10 * time.Second); len(h.a.availableOf(bare)) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			mu.Unlock()
			t.Fatal("the two resources never became available")
		}
	}
	mu.Unlock()
	// QoS 1: kept for the user if it comes before the attach is done.
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "together/t", Payload: []byte("1"), QoS: 1,
		ContentType: "text/plain", Origin: broker.Origin{Protocol: broker.ProtoMQTT}}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client{"first": a, "second": b} {
		if got := c.expect(t, name+" resource", isMessageFrom(topicJID)); got.Body != "1" {
			t.Errorf("%s resource got %q", name, got.Body)
		}
	}
}
