package adapters

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCachedAnswersAgree: the cache-only answers are "don't know" until
// the full check has run, then the full check's answer, and "don't know"
// again once the cache entry has expired.
func TestCachedAnswersAgree(t *testing.T) {
	t.Parallel()
	user := func(n string) Principal { return Principal{Name: n, Role: RoleUser} }
	cases := []struct {
		name   string
		p      Principal
		action Action
		topic  string
	}{
		{"allowed read", user("alice"), ActionSubscribe, "public/x"},
		{"denied read", user("alice"), ActionSubscribe, "secret/x"},
		{"allowed publish", user("bob"), ActionPublish, "private/x"},
		{"denied publish", user("bob"), ActionPublish, "public/x"},
		{"unknown principal", user("nobody"), ActionSubscribe, "public/x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, clk := newTestAuth(newMemCreds(), 100)
			ctx := context.Background()
			if _, ok := a.CanReadCached(tc.p, tc.topic); ok {
				t.Fatal("CanReadCached answered before anything was cached")
			}
			if _, ok := a.AuthorizeCached(tc.p, tc.action, tc.topic); ok {
				t.Fatal("AuthorizeCached answered before anything was cached")
			}
			wantRead := a.CanRead(ctx, tc.p, tc.topic)
			gotRead, ok := a.CanReadCached(tc.p, tc.topic)
			if !ok || !sameDecision(gotRead, wantRead) {
				t.Errorf("CanReadCached = %v, %v; CanRead said %v", gotRead, ok, wantRead)
			}
			wantAuth := a.Authorize(ctx, tc.p, tc.action, tc.topic)
			gotAuth, ok := a.AuthorizeCached(tc.p, tc.action, tc.topic)
			if !ok || !sameDecision(gotAuth, wantAuth) {
				t.Errorf("AuthorizeCached = %v, %v; Authorize said %v", gotAuth, ok, wantAuth)
			}
			clk.advance(ReadCacheTTL + time.Second)
			if _, ok := a.CanReadCached(tc.p, tc.topic); ok {
				t.Error("CanReadCached answered from an expired entry")
			}
			if _, ok := a.AuthorizeCached(tc.p, tc.action, tc.topic); ok {
				t.Error("AuthorizeCached answered from an expired entry")
			}
		})
	}
	// A local anonymous client may publish without any lookup, as Authorize says.
	a, _ := newTestAuth(newMemCreds(), 100)
	if err, ok := a.AuthorizeCached(Principal{Anonymous: true, Local: true}, ActionPublish, "x"); !ok || err != nil {
		t.Errorf("local anonymous publish: %v, %v", err, ok)
	}
}

// sameDecision: both nil, or both wrapping the same sentinel.
func sameDecision(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	for _, s := range []error{ErrForbidden, ErrUnknownPrincipal} {
		if errors.Is(b, s) {
			return errors.Is(a, s)
		}
	}
	return a.Error() == b.Error()
}
