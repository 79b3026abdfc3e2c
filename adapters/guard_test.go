package adapters

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newTestGuard(cfg GuardConfig) (*LoginGuard, *fakeClock) {
	g := NewLoginGuard(cfg)
	c := &fakeClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	g.now = c.now
	return g, c
}

func TestLoginGuardBackoff(t *testing.T) {
	g, clock := newTestGuard(GuardConfig{Free: 3, Base: time.Second, Max: 8 * time.Second})
	var events []LoginEvent
	g.OnEvent(func(ev LoginEvent) { events = append(events, ev) })
	const addr, name = "192.0.2.7:4000", "alice"
	for i := range 3 {
		if err := g.Allow("mqtt", addr, name); err != nil {
			t.Fatalf("free failure %d refused: %v", i, err)
		}
		g.Fail("mqtt", addr, name)
	}
	if len(events) != 0 {
		t.Fatalf("events before back-off: %v", events)
	}
	// Each failure past the free ones doubles the wait, to the cap.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		g.Fail("mqtt", addr, name)
		err := g.Allow("mqtt", addr, name)
		if !errors.Is(err, ErrTooManyAttempts) || !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("step %d: Allow = %v", i, err)
		}
		clock.add(want - time.Millisecond)
		if g.Allow("mqtt", addr, name) == nil {
			t.Fatalf("step %d: allowed before %v", i, want)
		}
		clock.add(time.Millisecond)
		if err := g.Allow("mqtt", addr, name); err != nil {
			t.Fatalf("step %d: refused after %v: %v", i, want, err)
		}
	}
	// Two scopes per failure: the address and the account.
	if len(events) != 10 || events[0].Scope != "address" || events[1].Scope != "account" ||
		events[0].Remote != "192.0.2.7" || events[1].Name != name || events[9].RetryInMS != 8000 {
		t.Fatalf("events %+v", events)
	}
	// Another port of the same host is the same address; another account
	// from another host is free; the tried account backs off everywhere.
	g.Fail("mqtt", addr, name)
	if g.Allow("xmpp", "192.0.2.7:5000", "bob") == nil {
		t.Error("same host, other port: allowed")
	}
	if err := g.Allow("xmpp", "198.51.100.1:1", "bob"); err != nil {
		t.Errorf("other host and account: %v", err)
	}
	if g.Allow("rest", "198.51.100.1:1", name) == nil {
		t.Error("backing-off account from another host: allowed")
	}
	failures, throttled := g.Stats()
	if failures["mqtt"] != 9 || throttled["mqtt"] == 0 || throttled["xmpp"] != 1 || throttled["rest"] != 1 {
		t.Errorf("stats %v %v", failures, throttled)
	}
	// A success clears both.
	g.Succeed(addr, name)
	if err := g.Allow("mqtt", addr, name); err != nil {
		t.Errorf("after success: %v", err)
	}
	// Quiet long enough, what was known is forgotten.
	for range 4 {
		g.Fail("coap", "203.0.113.9", "")
	}
	clock.add(16 * time.Minute)
	g.Fail("coap", "203.0.113.9", "")
	if err := g.Allow("coap", "203.0.113.9", ""); err != nil {
		t.Errorf("after forgetting: %v", err)
	}
}

func TestLoginGuardBounded(t *testing.T) {
	g, _ := newTestGuard(GuardConfig{})
	for i := range guardMax + 100 {
		g.Fail("mqtt", fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), "")
	}
	g.mu.Lock()
	n := len(g.m)
	g.mu.Unlock()
	if n > guardMax {
		t.Fatalf("%d entries, bound %d", n, guardMax)
	}
}

func TestLoginGuardOff(t *testing.T) {
	g, _ := newTestGuard(GuardConfig{Off: true, Free: 1})
	for range 10 {
		g.Fail("mqtt", "192.0.2.1:1", "a")
	}
	if err := g.Allow("mqtt", "192.0.2.1:1", "a"); err != nil {
		t.Fatal(err)
	}
}

type countingCreds struct{ checks int }

func (c *countingCreds) VerifyPassword(_ context.Context, name, password string) (string, error) {
	c.checks++
	if name == "alice" && password == "pw" {
		return RoleUser, nil
	}
	return "", ErrBadCredentials
}

func (c *countingCreds) ACL(context.Context, string) ([]ACLRule, error) { return nil, nil }
func (c *countingCreds) PrincipalRole(context.Context, string) (string, error) {
	return RoleUser, nil
}

// TestAuthenticateGuarded: under a login source Authenticate backs off, and
// a refused attempt costs no password check.
func TestAuthenticateGuarded(t *testing.T) {
	creds := &countingCreds{}
	a := NewAuth(creds, nil)
	g, _ := newTestGuard(GuardConfig{Free: 2})
	a.SetGuard(g)
	ctx := WithLoginSource(context.Background(), LoginSource{Protocol: "mqtt", Remote: "192.0.2.1:9"})
	for range 3 {
		if _, err := a.Authenticate(ctx, "alice", "nope", AnonymousRefused); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	checks := creds.checks
	if _, err := a.Authenticate(ctx, "alice", "pw", AnonymousRefused); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("right password while backing off: %v", err)
	}
	if creds.checks != checks {
		t.Errorf("a refused attempt checked the password")
	}
	// Without a source (an internal check) nothing is guarded.
	if _, err := a.Authenticate(context.Background(), "alice", "pw", AnonymousRefused); err != nil {
		t.Fatal(err)
	}
}
