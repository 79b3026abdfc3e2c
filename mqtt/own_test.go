package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hubsmith/hub/broker"
)

// A user may subscribe to and read its own $hub/clients/{id}/..., and
// still no other client's, nor other $ topics.
func TestOwnClientTopicsReadable(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV5(t, h.addr, "alice-1", "alice", "alicepw")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "$hub/clients/alice-1/#", QoS: 1},
		{Topic: "$hub/clients/alice-1/dropped", QoS: 0},
		{Topic: "$hub/clients/bob-1/#", QoS: 1},
		{Topic: "$hub/clients/+/dropped", QoS: 1},
		{Topic: "$hub/devices/#", QoS: 1},
	}})
	if sa == nil { // err says some were refused, as they should be
		t.Fatalf("subscribe: %v", err)
	}
	want := []byte{1, 0, 0x87, 0x87, 0x87}
	if len(sa.Reasons) != len(want) {
		t.Fatalf("SUBACK reasons %v, want %v", sa.Reasons, want)
	}
	for i, r := range sa.Reasons {
		if r != want[i] {
			t.Errorf("SUBACK reason %d: 0x%02x, want 0x%02x", i, r, want[i])
		}
	}
	// The bus delivers the client's own report, and checks every delivery.
	for _, topic := range []string{"$hub/clients/bob-1/dropped", "$hub/clients/alice-1/dropped"} {
		if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: topic, Payload: []byte(`{"dropped":1}`), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	m := c.next(t)
	if m.Topic != "$hub/clients/alice-1/dropped" {
		t.Fatalf("got %q, want the client's own topic", m.Topic)
	}
	select {
	case m := <-c.msgs:
		if m.Topic != "$hub/clients/alice-1/dropped" { // the overlapping subscription may deliver it twice
			t.Fatalf("got %q", m.Topic)
		}
	case <-time.After(100 * time.Millisecond):
	}
}
