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
