package store

import (
	"context"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// TestSubscriptionPrincipal checks that a durable subscription's owner is
// stored, replaced and loaded again (the queued-bytes quota charges it).
func TestSubscriptionPrincipal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openDir(t, dir)
	for _, d := range []broker.DurableSubscription{
		{ID: "a", Filters: []string{"x/#"}, QoS: 1, Principal: "alice"},
		{ID: "b", Filters: []string{"y"}, QoS: 1},
		{ID: "a", Filters: []string{"x/#"}, QoS: 1, Principal: "bob"}, // replaced
	} {
		if err := s.SaveSubscription(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openDir(t, dir)
	ds, err := s.LoadSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range ds {
		got[d.ID] = d.Principal
	}
	if len(got) != 2 || got["a"] != "bob" || got["b"] != "" {
		t.Errorf("principals after a reopen %v, want a: bob, b: none", got)
	}
}
