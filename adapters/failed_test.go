package adapters

import (
	"context"
	"testing"
)

// TestFailedLogins counts refused credentials only: not a good login, not
// an anonymous client refused on a listener that needs credentials.
func TestFailedLogins(t *testing.T) {
	t.Parallel()
	a := NewAuth(newMemCreds(), nil)
	ctx := WithLoginSource(context.Background(), LoginSource{Protocol: "mqtt", Remote: "192.0.2.1:1"})
	steps := []struct {
		name string
		m    AnonymousAccess
		want uint64
	}{
		{"alice", AnonymousRefused, 0},
		{"", AnonymousRefused, 0},
		{"mallory", AnonymousRefused, 1},
		{"mallory", AnonymousLocal, 2},
	}
	for _, s := range steps {
		_, _ = a.Authenticate(ctx, s.name, "pw", s.m)
		if got := a.FailedLogins(); got != s.want {
			t.Fatalf("after %q: FailedLogins %d, want %d", s.name, got, s.want)
		}
	}
	a.Guard().Fail("xmpp", "192.0.2.2:1", "eve") // a SCRAM failure
	if got := a.FailedLogins(); got != 3 {
		t.Fatalf("after a guard failure: %d, want 3", got)
	}
}
