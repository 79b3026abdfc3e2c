package xmpp

import (
	"context"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// TestSubscriptionSurvivesRestart stops the adapter and the bus, publishes
// on a new bus over the same store while the subscriber is away, and
// checks that the subscriber gets it at its next login.
func TestSubscriptionSurvivesRestart(t *testing.T) {
	h := startHub(t, nil)
	topicJID := "garage.door@topics.localhost"
	alice := connect(t, h, "alice", "alicepw")
	alice.send(t, `<presence to='`+topicJID+`' type='subscribe'/>`)
	alice.expect(t, "subscribed", func(v rx) bool { return v.Type == "subscribed" && v.From == topicJID })
	_ = alice.s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Close(); err != nil {
		t.Fatal(err)
	}
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: h.st, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, &broker.Envelope{Topic: "garage/door", Payload: []byte("opened at night"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Addr: "127.0.0.1:0", Bus: bus, Auth: adapters.NewAuth(h.st, nil), Store: h.st, DataDir: h.dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h2 := &testHub{a: a, bus: bus, st: h.st, addr: a.Addrs()["xmpp"], dir: h.dir}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
		_ = bus.Close()
	})
	alice = connect(t, h2, "alice", "alicepw")
	if got := alice.expect(t, "message published during the restart", isMessageFrom(topicJID)); got.Body != "opened at night" {
		t.Errorf("body %q", got.Body)
	}
}
