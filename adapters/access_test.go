package adapters

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// memCreds is a small real Credentials: users with roles and rules in
// maps, counting the lookups and failing on demand.
type memCreds struct {
	mu      sync.Mutex
	roles   map[string]string // users and devices; a device without login has RoleDevice
	acl     map[string][]ACLRule
	lookups int
	fail    error
}

func newMemCreds() *memCreds {
	return &memCreds{
		roles: map[string]string{
			"admin": RoleAdmin, "alice": RoleUser, "bob": RoleUser, "carol": RoleUser, "dave": RoleUser,
			"d1": RoleDevice, "psk1": RoleDevice,
		},
		acl: map[string][]ACLRule{
			"alice": {{Action: "all", Filter: "secret/#", Allow: false}, {Action: "all", Filter: "#", Allow: true}},
			"bob":   {{Action: "subscribe", Filter: "$hub/devices/#", Allow: true}, {Action: "publish", Filter: "private/#", Allow: true}, {Action: "all", Filter: "private/#", Allow: false}},
		},
	}
}

func (c *memCreds) VerifyPassword(_ context.Context, name, _ string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.roles[name]; ok {
		return r, nil
	}
	return "", ErrBadCredentials
}

func (c *memCreds) ACL(_ context.Context, name string) ([]ACLRule, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
	if c.fail != nil {
		return nil, c.fail
	}
	return append([]ACLRule(nil), c.acl[name]...), nil
}

func (c *memCreds) PrincipalRole(_ context.Context, name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
	if c.fail != nil {
		return "", c.fail
	}
	if r, ok := c.roles[name]; ok {
		return r, nil
	}
	return "", fmt.Errorf("mem: %q: %w", name, ErrUnknownPrincipal)
}

func (c *memCreds) set(f func(c *memCreds)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

func (c *memCreds) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookups
}

// clock is a manual time source for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestAuth(creds Credentials, max int) (*Auth, *clock) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	a := NewAuth(creds, map[string][]ACLRule{"carol": {{Action: "all", Filter: "conf/#", Allow: false}}})
	a.reads.init(ReadCacheTTL, max, clk.now)
	return a, clk
}

func TestCanRead(t *testing.T) {
	t.Parallel()
	user := func(n string) Principal { return Principal{Name: n, Role: RoleUser} }
	cases := []struct {
		name  string
		p     Principal
		topic string
		want  error // nil, ErrForbidden or ErrUnknownPrincipal
	}{
		{"denied by a rule", user("alice"), "secret/x", ErrForbidden},
		{"denied by a rule, deeper", user("alice"), "secret/a/b", ErrForbidden},
		{"the parent of a denied tree", user("alice"), "secret", ErrForbidden},
		{"allowed by the next rule", user("alice"), "public/x", nil},
		{"a # rule never grants a $-topic", user("alice"), "$hub/devices/d1/presence", ErrForbidden},
		{"user default allows plain topics", user("dave"), "public/x", nil},
		{"user default refuses $-topics", user("dave"), "$SYS/uptime", ErrForbidden},
		{"user default refuses command topics", user("dave"), "devices/d1/commands/on", ErrForbidden},
		{"user default reads a device's state", user("dave"), "devices/d1/state", nil},
		{"a principal with rules gets no default", user("bob"), "public/x", ErrForbidden},
		{"an explicit $ rule grants it", user("bob"), "$hub/devices/d1/presence", nil},
		{"an explicit $ rule grants only its tree", user("bob"), "$hub/clients/x/dropped", ErrForbidden},
		{"a publish rule grants no read", user("bob"), "private/x", ErrForbidden},
		{"configured rules come first", user("carol"), "conf/x", ErrForbidden},
		{"configured rules count as rules", user("carol"), "other/x", ErrForbidden},
		{"a rule cannot grant another device's commands", user("alice"), "devices/d1/commands/on", ErrForbidden},
		{"admin reads everything", Principal{Name: "admin", Role: RoleAdmin}, "$SYS/uptime", nil},
		{"admin reads secrets", Principal{Name: "admin", Role: RoleAdmin}, "secret/x", nil},
		{"device in its tree", Principal{Name: "d1", Role: RoleDevice}, "devices/d1/commands/on", nil},
		{"device outside its tree", Principal{Name: "d1", Role: RoleDevice}, "devices/d2/commands/on", ErrForbidden},
		{"device elsewhere", Principal{Name: "d1", Role: RoleDevice}, "public/x", ErrForbidden},
		{"psk device without login", Principal{Name: "psk1", Role: RoleDevice}, "devices/psk1/x", nil},
		{"anonymous under the default rules", Principal{Anonymous: true}, "secret/x", nil},
		{"anonymous: no device topics", Principal{Anonymous: true}, "devices/d1/state", ErrForbidden},
		{"anonymous: no $-topics", Principal{Anonymous: true}, "$SYS/uptime", ErrForbidden},
		{"local anonymous reads everything", Principal{Anonymous: true, Local: true}, "$SYS/uptime", nil},
		{"deleted user", user("mallory"), "public/x", ErrUnknownPrincipal},
		{"the current role, not the given one", Principal{Name: "alice", Role: RoleAdmin}, "secret/x", ErrForbidden},
		{"the current role lifts too", Principal{Name: "admin", Role: RoleUser}, "$SYS/uptime", nil},
		{"external principal: denied by default", Principal{Name: "eve@example.org", Role: RoleUser, External: true}, "public/x", ErrForbidden},
		{"external principal: no $-topics", Principal{Name: "eve@example.org", Role: RoleUser, External: true}, "$SYS/x", ErrForbidden},
	}
	a, _ := newTestAuth(newMemCreds(), 1024)
	for _, c := range cases {
		for pass := range 2 { // the second answer comes from the cache
			err := a.CanRead(context.Background(), c.p, c.topic)
			switch {
			case c.want == nil && err != nil:
				t.Errorf("%s (pass %d): CanRead(%+v, %q) = %v, want nil", c.name, pass, c.p, c.topic, err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Errorf("%s (pass %d): CanRead(%+v, %q) = %v, want %v", c.name, pass, c.p, c.topic, err, c.want)
			case c.want != nil && !errors.Is(err, ErrForbidden):
				t.Errorf("%s (pass %d): %v does not match ErrForbidden", c.name, pass, err)
			}
		}
	}
}

// TestPeerPolicy: external principals (component peers) without rules get
// the policy's access; rules under their JID replace it.
func TestPeerPolicy(t *testing.T) {
	t.Parallel()
	eve := Principal{Name: "eve@example.org", Role: RoleUser, External: true}
	ruled := Principal{Name: "rita@example.org", Role: RoleUser, External: true}
	static := map[string][]ACLRule{"rita@example.org": {{Action: ActionAll, Filter: "rita/#", Allow: true}}}
	type check struct {
		p      Principal
		action Action
		topic  string
		want   error
	}
	for _, tt := range []struct {
		policy string
		checks []check
	}{
		{PeerDeny, []check{{eve, ActionSubscribe, "public/x", ErrForbidden}, {eve, ActionPublish, "public/x", ErrForbidden},
			{ruled, ActionPublish, "rita/x", nil}, {ruled, ActionSubscribe, "public/x", ErrForbidden}}},
		{PeerRead, []check{{eve, ActionSubscribe, "public/x", nil}, {eve, ActionPublish, "public/x", ErrForbidden},
			{eve, ActionSubscribe, "$SYS/x", ErrForbidden}, {eve, ActionSubscribe, "devices/d1/commands/on", ErrForbidden},
			{eve, ActionCommand, "d1", ErrForbidden}, {ruled, ActionSubscribe, "public/x", ErrForbidden}}},
		{PeerUser, []check{{eve, ActionSubscribe, "public/x", nil}, {eve, ActionPublish, "public/x", nil},
			{eve, ActionSubscribe, "$SYS/x", ErrForbidden}, {ruled, ActionPublish, "public/x", ErrForbidden}}},
	} {
		a := NewAuth(newMemCreds(), static)
		if err := a.SetPeerPolicy(tt.policy); err != nil {
			t.Fatal(err)
		}
		for _, c := range tt.checks {
			err := a.Authorize(context.Background(), c.p, c.action, c.topic)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("policy %s: %s %s %q = %v, want %v", tt.policy, c.p.Name, c.action, c.topic, err, c.want)
			}
			if c.action == ActionSubscribe {
				if rerr := a.CanRead(context.Background(), c.p, c.topic); (rerr == nil) != (err == nil) {
					t.Errorf("policy %s: CanRead %s %q = %v, Authorize %v", tt.policy, c.p.Name, c.topic, rerr, err)
				}
			}
		}
	}
	if err := NewAuth(nil, nil).SetPeerPolicy("maybe"); err == nil {
		t.Error("policy maybe accepted")
	}
}

// TestCanReadAgreesWithAuthorize: for a principal whose role is current,
// CanRead of a concrete topic is Authorize(ActionSubscribe, topic).
func TestCanReadAgreesWithAuthorize(t *testing.T) {
	t.Parallel()
	creds := newMemCreds()
	a, _ := newTestAuth(creds, 1024)
	ps := []Principal{{Anonymous: true}, {Anonymous: true, Local: true}}
	for n, r := range creds.roles {
		ps = append(ps, Principal{Name: n, Role: r})
	}
	topics := []string{"secret/x", "secret", "public/x", "$hub/devices/d1/presence", "$SYS/x",
		"private/x", "conf/x", "devices/d1/x", "devices/psk1/x", "devices/d2/x", "a/b/c",
		"devices/d1/commands/on", "devices/d1/commands", "devices/d2/commands/on", "devices/d1/state", "devices/d1/responses/r1"}
	ctx := context.Background()
	for _, p := range ps {
		for _, topic := range topics {
			got := a.CanRead(ctx, p, topic)
			want := a.Authorize(ctx, p, ActionSubscribe, topic)
			if (got == nil) != (want == nil) {
				t.Errorf("%+v %q: CanRead %v, Authorize %v", p, topic, got, want)
			}
		}
	}
}

// TestCanReadFollowsChanges: a changed rule, a changed role and a deleted
// user take effect once the cached answer is one TTL old, and not before.
func TestCanReadFollowsChanges(t *testing.T) {
	t.Parallel()
	alice := Principal{Name: "alice", Role: RoleUser}
	cases := []struct {
		name   string
		p      Principal
		topic  string
		change func(c *memCreds)
		before error
		after  error
	}{
		{"rule revoked", Principal{Name: "dave", Role: RoleUser}, "secret/x",
			func(c *memCreds) { c.acl["dave"] = []ACLRule{{Action: "all", Filter: "secret/#"}} }, nil, ErrForbidden},
		{"rule granted", alice, "secret/x",
			func(c *memCreds) { c.acl["alice"] = nil }, ErrForbidden, nil},
		{"role raised", alice, "$SYS/x",
			func(c *memCreds) { c.roles["alice"] = RoleAdmin }, ErrForbidden, nil},
		{"role lowered", Principal{Name: "admin", Role: RoleAdmin}, "$SYS/x",
			func(c *memCreds) { c.roles["admin"] = RoleUser }, nil, ErrForbidden},
		{"user deleted", Principal{Name: "dave", Role: RoleUser}, "public/x",
			func(c *memCreds) { delete(c.roles, "dave") }, nil, ErrUnknownPrincipal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			creds := newMemCreds()
			a, clk := newTestAuth(creds, 1024)
			ctx := context.Background()
			check := func(when string, want error) {
				t.Helper()
				err := a.CanRead(ctx, c.p, c.topic)
				if want == nil && err != nil || want != nil && !errors.Is(err, want) {
					t.Fatalf("%s: CanRead = %v, want %v", when, err, want)
				}
			}
			check("before the change", c.before)
			creds.set(c.change)
			clk.advance(ReadCacheTTL / 2)
			check("within the TTL (cached)", c.before)
			clk.advance(ReadCacheTTL / 2)
			check("one TTL after the first lookup", c.after)
		})
	}
}

// TestCanReadCache: a cached decision costs no lookup, a decision never
// outlives the principal state it came from, store failures are not
// cached, and the cache stays bounded.
func TestCanReadCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	alice := Principal{Name: "alice", Role: RoleUser}

	creds := newMemCreds()
	a, clk := newTestAuth(creds, 8)
	_ = a.CanRead(ctx, alice, "public/x")
	n := creds.count()
	for range 100 {
		_ = a.CanRead(ctx, alice, "public/x")
	}
	if got := creds.count(); got != n {
		t.Fatalf("cached reads looked up %d more times", got-n)
	}
	// A second topic reuses the principal state (no lookup) and expires
	// with it.
	clk.advance(ReadCacheTTL * 3 / 4)
	_ = a.CanRead(ctx, alice, "public/y")
	if got := creds.count(); got != n {
		t.Fatalf("a new topic looked the principal up again (%d)", got-n)
	}
	creds.set(func(c *memCreds) { c.acl["alice"] = []ACLRule{{Action: "all", Filter: "public/#"}} })
	clk.advance(ReadCacheTTL / 2)
	if err := a.CanRead(ctx, alice, "public/y"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("public/y after its principal state expired: %v, want ErrForbidden", err)
	}

	// A failing store answers an error that is not a denial, and is asked
	// again next time.
	boom := errors.New("disk on fire")
	creds.set(func(c *memCreds) { c.fail = boom })
	clk.advance(ReadCacheTTL)
	if err := a.CanRead(ctx, alice, "public/z"); !errors.Is(err, boom) || errors.Is(err, ErrForbidden) {
		t.Fatalf("with a failing store: %v, want %v and no ErrForbidden", err, boom)
	}
	creds.set(func(c *memCreds) { c.fail = nil })
	if err := a.CanRead(ctx, alice, "public/z"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("after the store recovered: %v, want the rule's denial", err)
	}

	// Bounded: many topics never grow the cache past its limit.
	for i := range 100 {
		_ = a.CanRead(ctx, alice, fmt.Sprintf("t/%d", i))
		a.reads.mu.RLock()
		nd, np := len(a.reads.decisions), len(a.reads.principals)
		a.reads.mu.RUnlock()
		if nd > 8 || np > 8 {
			t.Fatalf("cache grew to %d decisions, %d principals (limit 8)", nd, np)
		}
	}
}

func BenchmarkCanReadCached(b *testing.B) {
	a := NewAuth(newMemCreds(), nil)
	p := Principal{Name: "alice", Role: RoleUser}
	ctx := context.Background()
	_ = a.CanRead(ctx, p, "public/x")
	b.ReportAllocs()
	for b.Loop() {
		_ = a.CanRead(ctx, p, "public/x")
	}
}
