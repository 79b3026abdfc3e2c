package adapters

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hubsmith/hub/broker"
)

// Roles of principals.
const (
	RoleAdmin  = "admin"
	RoleUser   = "user"
	RoleDevice = "device"
)

// Actions checked by Authorize.
type Action string

// The actions an ACL rule can name.
const (
	ActionPublish   Action = "publish"
	ActionSubscribe Action = "subscribe"
)

// Errors of authentication and authorization; each adapter maps them to its
// protocol's refusal (MQTT bad username or password / not authorized, CoAP
// 4.01 / 4.03, HTTP 401 / 403, XMPP not-authorized / forbidden).
var (
	ErrBadCredentials = errors.New("bad username or password")
	ErrAuthRequired   = errors.New("authentication required")
	ErrForbidden      = errors.New("not authorized")
	// ErrUnknownPrincipal is what Credentials.PrincipalRole answers for a
	// name the store does not hold (a deleted user or device); CanRead
	// then refuses with ErrForbidden as well.
	ErrUnknownPrincipal = errors.New("unknown principal")
)

// Principal is an authenticated (or anonymous) party.
type Principal struct {
	// Name is the user or device name; "" when anonymous.
	Name string
	// Role is RoleAdmin, RoleUser or RoleDevice ("" when anonymous).
	Role string
	// Anonymous is true for a client that gave no credentials on a
	// listener that allows that.
	Anonymous bool
	// External is true for a principal the hub's store does not hold (a
	// user of the XMPP server the hub is a component of): its Role is
	// taken as given, since there is nothing to look up.
	External bool
}

// ACLRule allows or denies an action on a topic filter.
type ACLRule struct {
	// Action is ActionPublish, ActionSubscribe, or "all".
	Action string `json:"action" yaml:"action"`
	// Filter is a topic filter; "%u" stands for the principal's name.
	Filter string `json:"filter" yaml:"filter"`
	// Allow is true to allow, false to deny.
	Allow bool `json:"allow" yaml:"allow"`
}

// Credentials is what Auth needs from the user store.
type Credentials interface {
	// VerifyPassword checks name's password and returns the role.
	// A wrong password or unknown name is ErrBadCredentials.
	VerifyPassword(ctx context.Context, name, password string) (role string, err error)
	// ACL returns the principal's rules in order (none: role defaults).
	ACL(ctx context.Context, name string) ([]ACLRule, error)
	// PrincipalRole returns the current role of a principal: a user's
	// role, or RoleDevice for a device registered without a login (CoAP
	// over DTLS). A name that is neither is ErrUnknownPrincipal.
	PrincipalRole(ctx context.Context, name string) (string, error)
}

// Auth checks principals for every adapter against the store.
type Auth struct {
	creds Credentials
	// StaticACL are rules from the configuration file, keyed by principal
	// name; they are consulted before the stored rules.
	static map[string][]ACLRule
	// reads caches CanRead's decisions (access.go).
	reads readCache
}

// NewAuth returns an Auth over creds with optional configured ACL rules.
func NewAuth(creds Credentials, static map[string][]ACLRule) *Auth {
	a := &Auth{creds: creds, static: static}
	a.reads.init(ReadCacheTTL, readCacheMax, time.Now)
	return a
}

// Authenticate checks a name and password. An empty name means the client
// gave no credentials: it is accepted as anonymous when anonymousOK, and
// refused with ErrAuthRequired otherwise.
func (a *Auth) Authenticate(ctx context.Context, name, password string, anonymousOK bool) (Principal, error) {
	if name == "" {
		if anonymousOK {
			return Principal{Anonymous: true}, nil
		}
		return Principal{}, ErrAuthRequired
	}
	if a.creds == nil {
		return Principal{}, ErrBadCredentials
	}
	role, err := a.creds.VerifyPassword(ctx, name, password)
	if err != nil {
		if errors.Is(err, ErrBadCredentials) {
			return Principal{}, ErrBadCredentials
		}
		return Principal{}, fmt.Errorf("auth: verify %q: %w", name, err)
	}
	return Principal{Name: name, Role: role}, nil
}

// Authorize says whether p may do action on topic (a filter for
// subscribe). Anonymous principals and admins may do anything; the first
// matching rule decides for others; with no matching rule users may use any
// topic but $hub/ ones, and devices only devices/{name}/#.
func (a *Auth) Authorize(ctx context.Context, p Principal, action Action, topic string) error {
	if p.Anonymous || p.Role == RoleAdmin {
		return nil
	}
	rules, err := a.rules(ctx, p.Name)
	if err != nil {
		return err
	}
	return decide(p, rules, action, topic)
}

// rules returns the configured rules of name followed by its stored ones.
func (a *Auth) rules(ctx context.Context, name string) ([]ACLRule, error) {
	rules := a.static[name]
	if a.creds != nil {
		stored, err := a.creds.ACL(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("auth: acl of %q: %w", name, err)
		}
		rules = append(rules[:len(rules):len(rules)], stored...)
	}
	return rules, nil
}

// decide applies rules (first match wins), then p's role default, to
// action on topic. It looks nothing up.
func decide(p Principal, rules []ACLRule, action Action, topic string) error {
	if p.Anonymous || p.Role == RoleAdmin {
		return nil
	}
	for _, r := range rules {
		if r.Action != "all" && r.Action != string(action) {
			continue
		}
		f := strings.ReplaceAll(r.Filter, "%u", p.Name)
		if ruleCovers(f, topic, action) {
			if r.Allow {
				return nil
			}
			return fmt.Errorf("%w: %s %q by %q", ErrForbidden, action, topic, p.Name)
		}
	}
	switch p.Role {
	case RoleDevice:
		if ruleCovers("devices/"+p.Name+"/#", topic, action) {
			return nil
		}
	case RoleUser:
		if !strings.HasPrefix(topic, "$") {
			return nil
		}
	}
	return fmt.Errorf("%w: %s %q by %q", ErrForbidden, action, topic, p.Name)
}

// ruleCovers reports whether rule filter f covers topic; for a subscribe,
// topic is itself a filter and must be no wider than f.
func ruleCovers(f, topic string, action Action) bool {
	if action == ActionSubscribe && broker.IsFilter(topic) {
		return filterWithin(topic, f)
	}
	return broker.Match(f, topic)
}

// filterWithin reports whether every topic matched by sub is matched by f.
func filterWithin(sub, f string) bool {
	sl := strings.Split(sub, "/")
	fl := strings.Split(f, "/")
	for i, l := range fl {
		if l == "#" {
			return true
		}
		if i >= len(sl) {
			return false
		}
		switch {
		case sl[i] == "#":
			return false
		case l == "+":
		case sl[i] == "+" || sl[i] != l:
			return false
		}
	}
	return len(sl) == len(fl)
}

// AnonymousAllowed applies the Mosquitto 2.0 rule of DESIGN.md: a listener
// bound only to loopback accepts anonymous clients; any other address
// requires authentication unless allowAnonymous is set explicitly.
func AnonymousAllowed(listenAddr string, allowAnonymous bool) bool {
	if allowAnonymous {
		return true
	}
	return IsLoopback(listenAddr)
}

// IsLoopback reports whether a listen address binds only loopback.
func IsLoopback(listenAddr string) bool {
	host, _, err := net.SplitHostPort(listenAddr)
	if err != nil {
		host = listenAddr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
