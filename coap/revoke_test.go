package coap

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/store"
)

// TestRevokeDTLS: Revoke closes the device's DTLS session, ends its
// observation and drops its durable queue, so a new session of the same
// identity gets nothing of what was published after.
func TestRevokeDTLS(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	durables := func(ctx context.Context) ([]string, error) {
		subs, err := st.LoadSubscriptions(ctx)
		ids := make([]string, 0, len(subs))
		for _, s := range subs {
			ids = append(ids, s.ID)
		}
		return ids, err
	}
	e := startSpool(t, st, func(c *Config) { c.DTLSAddr = "127.0.0.1:0"; c.Durables = durables })
	cc, err := dialDTLS(t, e.dtlsAddr, "sensor1", testPSK)
	if err != nil {
		t.Fatal(err)
	}
	ch, f := observeChan(t)
	if _, err := cc.Observe(ctx5(t), "/ps/devices/sensor1/commands/+", f); err != nil {
		t.Fatal(err)
	}
	nextNote(t, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n := e.a.Revoke(ctx, "sensor1"); n != 1 {
		t.Fatalf("Revoke ended %d sessions, want 1", n)
	}
	waitFor(t, "offline", func() bool { return slices.Contains(e.presence.snapshot(), "sensor1 coap offline") })
	if e.a.observations() != 0 {
		t.Fatal("observation left")
	}
	ids, err := durables(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if strings.HasPrefix(id, "coap/sensor1/") {
			t.Fatalf("durable subscription %q left", id)
		}
	}
	select {
	case <-cc.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the client's DTLS session did not end")
	}
}
