package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRevokeClosesAndForgets: Revoke closes every client of the principal
// (an MQTT 5 client with DISCONNECT 0x87 first) and forgets their
// persistent sessions, connected or away, and nobody else's.
func TestRevokeClosesAndForgets(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	// alice: a persistent 3.1.1 session away, one connected, and an MQTT 5 client.
	away := mustV3(t, h.addr, "alice-away", "alice", "alicepw", false)
	away.sub(t, "a/#", 1)
	away.c.Disconnect(100)
	waitFor(t, func() bool { return h.detached("alice-away") })
	v3 := mustV3(t, h.addr, "alice-v3", "alice", "alicepw", false)
	v3.sub(t, "a/#", 1)
	cp := &paho.Connect{ClientID: "alice-v5", KeepAlive: 30, Username: "alice", UsernameFlag: true,
		Password: []byte("alicepw"), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(3600))}}
	v5, _, err := dialV5(t, h.addr, cp)
	if err != nil {
		t.Fatal(err)
	}
	v5.sub(t, "a/#", 1)
	other := mustV3(t, h.addr, "admin-1", "admin", "adminpw", false)
	other.sub(t, "a/#", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n := h.a.Revoke(ctx, "alice"); n != 2 {
		t.Fatalf("Revoke closed %d connections, want 2", n)
	}
	select {
	case d := <-v5.disc:
		if d.ReasonCode != 0x87 {
			t.Fatalf("DISCONNECT reason %#x, want 0x87", d.ReasonCode)
		}
	case <-time.After(wait):
		t.Fatal("no DISCONNECT for the MQTT 5 client")
	}
	waitFor(t, func() bool { return !v3.c.IsConnectionOpen() })
	for _, id := range []string{"alice-away", "alice-v3", "alice-v5"} {
		if h.durable(id) {
			t.Errorf("session %q still on the bus", id)
		}
		if _, ok := h.a.record(id); ok {
			t.Errorf("session %q still recorded", id)
		}
		if _, ok := h.a.srv.Clients.Get(id); ok {
			t.Errorf("session %q still in mochi", id)
		}
	}
	if !h.durable("admin-1") || !other.c.IsConnectionOpen() {
		t.Fatal("another principal's session was touched")
	}
}

func ptr[T any](v T) *T { return &v }
