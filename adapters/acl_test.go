package adapters

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestAuthorize is the table of acl.go's steps for every action: the role
// defaults, first match wins, no default for a principal with rules, the
// device topics no rule can grant, command rules, and anonymous clients.
func TestAuthorize(t *testing.T) {
	t.Parallel()
	creds := newMemCreds()
	creds.set(func(c *memCreds) {
		c.roles["erin"] = RoleUser
		c.acl["erin"] = []ACLRule{{Action: "command", Filter: "d1", Allow: true}}
		c.acl["frank"] = []ACLRule{
			{Action: "command", Filter: "d2", Allow: false},
			{Action: "command", Filter: "+", Allow: true},
			{Action: "all", Filter: "#", Allow: true},
		}
		c.roles["frank"] = RoleUser
		c.acl["d1"] = nil
	})
	a := NewAuth(creds, map[string][]ACLRule{
		AnonymousName: {{Action: "subscribe", Filter: "public/#", Allow: true}, {Action: "command", Filter: "d1", Allow: true}},
		"carol":       {{Action: "all", Filter: "conf/#", Allow: false}},
	})
	user := func(n string) Principal { return Principal{Name: n, Role: RoleUser} }
	dev := func(n string) Principal { return Principal{Name: n, Role: RoleDevice} }
	anon := Principal{Anonymous: true}
	local := Principal{Anonymous: true, Local: true}
	admin := Principal{Name: "admin", Role: RoleAdmin}
	const pub, sub, cmd = ActionPublish, ActionSubscribe, ActionCommand
	cases := []struct {
		p      Principal
		action Action
		topic  string
		allow  bool
	}{
		// Role defaults.
		{user("dave"), pub, "a/b", true},
		{user("dave"), sub, "#", true},
		{user("dave"), sub, "$SYS/#", false},
		{user("dave"), pub, "$hub/x", false},
		{user("dave"), cmd, "d1", false},
		{dev("d1"), pub, "devices/d1/state", true},
		{dev("d1"), pub, "devices/d1/responses/r1", true},
		{dev("d1"), sub, "devices/d1/commands/#", true},
		{dev("d1"), sub, "devices/d1/commands/on", true},
		{dev("d1"), pub, "a/b", false},
		{dev("d1"), sub, "devices/#", false},
		{dev("d1"), cmd, "d1", false},
		{admin, cmd, "d2", true},
		{admin, sub, "devices/+/commands/#", true},
		{admin, pub, "$hub/x", true},
		// First match wins; with rules, nothing else.
		{user("alice"), pub, "secret/x", false},
		{user("alice"), sub, "secret/#", false},
		{user("alice"), sub, "#", true}, // deliveries are checked one by one
		{user("alice"), pub, "open/x", true},
		{user("bob"), pub, "private/x", true},
		{user("bob"), sub, "private/x", false},
		{user("bob"), pub, "public/x", false},
		{user("carol"), pub, "other/x", false},
		// Device topics: no rule grants them to anyone but the device.
		{user("alice"), sub, "devices/+/commands/#", false},
		{user("alice"), sub, "devices/d1/commands/on", false},
		{user("alice"), sub, "devices/d1/commands", false},
		{user("alice"), sub, "devices/#", true},
		{user("alice"), pub, "devices/d1/responses/r1", false},
		{user("alice"), pub, "devices/d1/state", false},
		{user("alice"), pub, "devices/d1/commands/on", false}, // a command: no command rule
		{user("alice"), pub, "devices/d1/telemetry", true},
		{dev("d2"), pub, "devices/d1/responses/r1", false},
		{dev("d2"), sub, "devices/+/commands/#", false},
		{dev("d2"), sub, "devices/d1/commands/on", false},
		// Command rules: their own action, not counted as topic rules.
		{user("erin"), cmd, "d1", true},
		{user("erin"), cmd, "d2", false},
		{user("erin"), pub, "devices/d1/commands/on", true},
		{user("erin"), sub, "devices/d1/commands/on", false},
		{user("erin"), pub, "a/b", true}, // still the user default
		{user("frank"), cmd, "d2", false},
		{user("frank"), cmd, "d3", true},
		{user("alice"), cmd, "d1", false}, // "all" does not cover commands
		// Anonymous clients: the configured rules, never $-topics.
		{anon, sub, "public/x", true},
		{anon, pub, "public/x", false},
		{anon, cmd, "d1", true},
		{anon, cmd, "d2", false},
		{anon, sub, "$SYS/#", false},
		{local, pub, "$hub/x", true},
		{local, cmd, "d2", true},
	}
	ctx := context.Background()
	for _, c := range cases {
		err := a.Authorize(ctx, c.p, c.action, c.topic)
		if c.allow != (err == nil) || err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("Authorize(%+v, %s, %q) = %v, want allowed %v", c.p, c.action, c.topic, err, c.allow)
		}
		if c.action == sub && !strings.ContainsAny(c.topic, "+#") {
			if got := a.CanRead(ctx, c.p, c.topic); (got == nil) != (err == nil) {
				t.Errorf("CanRead(%+v, %q) = %v, Authorize %v", c.p, c.topic, got, err)
			}
		}
	}
}

// TestDefaultAnonymousRules: without acl.anonymous, anonymous clients may
// publish and subscribe to anything but device and $-topics, and command
// nothing.
func TestDefaultAnonymousRules(t *testing.T) {
	t.Parallel()
	a := NewAuth(newMemCreds(), nil)
	anon, err := a.Anonymous(AnonymousRules)
	if err != nil || !anon.Anonymous || anon.Local {
		t.Fatalf("Anonymous(AnonymousRules) = %+v, %v", anon, err)
	}
	if p, _ := a.Anonymous(AnonymousLocal); !p.Local {
		t.Errorf("Anonymous(AnonymousLocal) without anonymous rules = %+v, want Local", p)
	}
	if _, err := a.Anonymous(AnonymousRefused); !errors.Is(err, ErrAuthRequired) {
		t.Errorf("Anonymous(AnonymousRefused) = %v, want ErrAuthRequired", err)
	}
	configured := NewAuth(newMemCreds(), map[string][]ACLRule{AnonymousName: nil})
	if p, _ := configured.Anonymous(AnonymousLocal); p.Local {
		t.Errorf("Anonymous(AnonymousLocal) with acl.anonymous = %+v, want the rules", p)
	}
	ctx := context.Background()
	for _, c := range []struct {
		action Action
		topic  string
		allow  bool
	}{
		{ActionPublish, "home/x", true},
		{ActionSubscribe, "#", true},
		{ActionSubscribe, "devices/#", false},
		{ActionPublish, "devices/d1/x", false},
		{ActionSubscribe, "$SYS/#", false},
		{ActionPublish, "$hub/x", false},
		{ActionCommand, "d1", false},
	} {
		if err := a.Authorize(ctx, anon, c.action, c.topic); c.allow != (err == nil) {
			t.Errorf("anonymous %s %q: %v, want allowed %v", c.action, c.topic, err, c.allow)
		}
	}
}

func TestValidateRule(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		r   ACLRule
		msg string // "" when valid
	}{
		{ACLRule{Action: "publish", Filter: "home/#"}, ""},
		{ACLRule{Action: "all", Filter: "users/%u/#"}, ""},
		{ACLRule{Action: "command", Filter: "lamp1"}, ""},
		{ACLRule{Action: "command", Filter: "+"}, ""},
		{ACLRule{Action: "fly", Filter: "home/#"}, `action "fly"`},
		{ACLRule{Action: "all", Filter: "home/#/x"}, "wildcard"},
		{ACLRule{Action: "command", Filter: "devices/lamp1"}, "device id"},
		{ACLRule{Action: "command", Filter: "lamp+"}, "device id"},
	} {
		err := ValidateRule(c.r)
		if c.msg == "" && err != nil || c.msg != "" && (err == nil || !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("ValidateRule(%+v) = %v, want %q", c.r, err, c.msg)
		}
	}
	if err := ValidateAnonymousRule(ACLRule{Action: "subscribe", Filter: "$SYS/#"}); err == nil {
		t.Error("an anonymous rule naming $SYS/# was accepted")
	}
}

// TestForget: a change made through the hub applies at once once the
// cached state of that principal is forgotten.
func TestForget(t *testing.T) {
	t.Parallel()
	creds := newMemCreds()
	a, _ := newTestAuth(creds, 1024)
	ctx := context.Background()
	dave := Principal{Name: "dave", Role: RoleUser}
	if err := a.Authorize(ctx, dave, ActionPublish, "x/y"); err != nil {
		t.Fatal(err)
	}
	creds.set(func(c *memCreds) { c.acl["dave"] = []ACLRule{{Action: "all", Filter: "x/#"}} })
	if err := a.Authorize(ctx, dave, ActionPublish, "x/y"); err != nil {
		t.Fatalf("within the TTL the cached state answers: %v", err)
	}
	a.Forget("dave")
	if err := a.Authorize(ctx, dave, ActionPublish, "x/y"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("after Forget: %v, want ErrForbidden", err)
	}
}
