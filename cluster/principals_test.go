package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/store"
)

// TestPrincipalsJoinAndFollow: a hub joining takes the cluster's version
// of a record both hold and pushes what only it has; afterwards changes
// and removals on either side reach the other, and a removal is reported
// for revocation.
func TestPrincipalsJoinAndFollow(t *testing.T) {
	js := testJetStream(t, "princtest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func() *store.Store {
		s, err := store.Open(ctx, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.SetSCRAMIterations(store.MinSCRAMIterations); err != nil {
			t.Fatal(err)
		}
		return s
	}
	sa, sb := open(), open()
	if err := sa.AddUser(ctx, "alice", "from-a", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	if err := sb.AddUser(ctx, "alice", "from-b", adapters.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := sb.AddUser(ctx, "bob", "bobpw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	removed := make(chan string, 4)
	start := func(s *store.Store) *Principals {
		p, err := StartPrincipals(ctx, PrincipalsConfig{JS: js, Prefix: "pt", Store: s, Rescan: 100 * time.Millisecond,
			Applied: func(_ context.Context, name string, gone bool) {
				if gone {
					removed <- name
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		return p
	}
	start(sa)
	start(sb)
	wait := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Joined: B took A's alice, A got B's bob.
	if role, err := sb.VerifyPassword(ctx, "alice", "from-a"); err != nil || role != adapters.RoleUser {
		t.Fatalf("alice on B after joining: %q %v, want A's", role, err)
	}
	wait("bob on A", func() bool { _, err := sa.VerifyPassword(ctx, "bob", "bobpw"); return err == nil })

	// A change on B reaches A; a removal on A reaches B and is reported.
	if err := sb.SetPassword(ctx, "alice", "newpw"); err != nil {
		t.Fatal(err)
	}
	wait("the new password on A", func() bool { _, err := sa.VerifyPassword(ctx, "alice", "newpw"); return err == nil })
	if err := sa.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	wait("bob gone on B", func() bool { _, err := sb.GetUser(ctx, "bob"); return err != nil })
	select {
	case name := <-removed:
		if name != "bob" {
			t.Fatalf("removal reported for %q", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the removal was not reported")
	}
	if marks, err := sb.KVList(ctx, store.RevokedBucket); err != nil || len(marks) != 1 || marks[0].Key != "bob" {
		t.Fatalf("revocation marks on B: %v %v", marks, err)
	}
}
