package adapters

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"
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
	// Local is true for an anonymous client of a loopback-only listener
	// when no anonymous rules are configured: it may do anything, as in
	// Mosquitto 2.0's local-only mode. Other anonymous clients are under
	// the anonymous rules (Auth.Anonymous).
	Local bool
	// External is true for a principal the hub's store does not hold (a
	// user of the XMPP server the hub is a component of): its Role is
	// taken as given, since there is nothing to look up.
	External bool
}

// ACLRule allows or denies an action on a topic filter (see acl.go for
// how rules are applied).
type ACLRule struct {
	// Action is ActionPublish, ActionSubscribe, ActionCommand or ActionAll
	// (publish and subscribe).
	Action string `json:"action" yaml:"action"`
	// Filter is a topic filter, or for ActionCommand a device id ("+" or
	// "#": any); "%u" stands for the principal's name.
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
	// cur holds the configured rules; SetRules and SetPeerPolicy swap it
	// while requests are being decided (a configuration reload).
	cur atomic.Pointer[ruleSet]
	// reads caches CanRead's decisions (access.go).
	reads readCache
	// guard backs off failed logins (guard.go).
	guard *LoginGuard
	// limits are the hub's connection and subscription bounds (limits.go).
	limits atomic.Pointer[Limits]
}

// ruleSet is what the configuration file says about access.
type ruleSet struct {
	// static are rules from the configuration file, keyed by principal
	// name; they are consulted before the stored rules.
	static map[string][]ACLRule
	// anon are the rules of anonymous clients (AnonymousName in the
	// configuration, else DefaultAnonymousRules); anonConfigured says
	// whether the configuration named them.
	anon           []ACLRule
	anonConfigured bool
	// peerRules stand for the rules of an external principal that has
	// none of its own (PeerPolicy).
	peerRules []ACLRule
}

func (a *Auth) rulesNow() *ruleSet { return a.cur.Load() }

// Policies for external principals (users of the XMPP server the hub is a
// component of) that have no ACL rules of their own, keyed by their JID.
const (
	// PeerDeny: nothing (the default).
	PeerDeny = "deny"
	// PeerRead: subscribe and read every topic but $ ones and device
	// commands; no publish, no command.
	PeerRead = "read"
	// PeerUser: what a user without rules may do.
	PeerUser = "user"
)

func peerRules(policy string) ([]ACLRule, error) {
	switch policy {
	case PeerDeny, "":
		return []ACLRule{{Action: ActionAll, Filter: "#", Allow: false}}, nil
	case PeerRead:
		return []ACLRule{{Action: string(ActionSubscribe), Filter: "#", Allow: true}}, nil
	case PeerUser:
		return nil, nil
	}
	return nil, fmt.Errorf("component peer policy %q: want %s, %s or %s", policy, PeerDeny, PeerRead, PeerUser)
}

// SetPeerPolicy sets what external principals without rules of their own
// may do: PeerDeny, PeerRead or PeerUser. Rules configured (or stored)
// under a peer's bare JID replace the policy for that peer. It applies at
// once, to decisions cached too.
func (a *Auth) SetPeerPolicy(policy string) error {
	pr, err := peerRules(policy)
	if err != nil {
		return err
	}
	rs := *a.rulesNow()
	rs.peerRules = pr
	a.cur.Store(&rs)
	a.reads.forgetAll()
	return nil
}

// SetRules replaces the configured ACL rules (keyed by principal name, the
// key AnonymousName holding the anonymous clients'), at once, for
// decisions cached too: a configuration reload. The rules are assumed
// valid (ValidateRule).
func (a *Auth) SetRules(static map[string][]ACLRule) {
	old := a.rulesNow()
	rs := &ruleSet{static: make(map[string][]ACLRule, len(static)), anon: DefaultAnonymousRules}
	if old != nil {
		rs.peerRules = old.peerRules
	}
	for name, rules := range static {
		if name == AnonymousName {
			rs.anon, rs.anonConfigured = rules, true
			continue
		}
		rs.static[name] = rules
	}
	a.cur.Store(rs)
	a.reads.forgetAll()
}

// FailedLogins is how many logins were refused for bad credentials (a
// password, a SCRAM proof, a token, a PSK identity), in every protocol,
// since the hub started, as the LoginGuard counted them: an alarm on the
// dashboard.
func (a *Auth) FailedLogins() uint64 {
	if a.guard == nil {
		return 0
	}
	failures, _ := a.guard.Stats()
	var n uint64
	for _, v := range failures {
		n += v
	}
	return n
}

// NewAuth returns an Auth over creds with optional configured ACL rules,
// keyed by principal name; the key AnonymousName holds the rules of
// anonymous clients. The rules are assumed valid (ValidateRule).
func NewAuth(creds Credentials, static map[string][]ACLRule) *Auth {
	a := &Auth{creds: creds, guard: NewLoginGuard(GuardConfig{})}
	a.limits.Store(NewLimits(LimitsConfig{}))
	a.reads.init(ReadCacheTTL, readCacheMax, time.Now)
	pr, _ := peerRules(PeerDeny)
	a.cur.Store(&ruleSet{peerRules: pr})
	a.SetRules(static)
	return a
}

// ConfiguredRules returns the rules the configuration file gives name
// (consulted before the stored ones, and read-only through the API).
func (a *Auth) ConfiguredRules(name string) []ACLRule {
	return append([]ACLRule(nil), a.rulesNow().static[name]...)
}

// AnonymousAccess is what a listener lets clients without credentials do.
type AnonymousAccess uint8

// The kinds of anonymous access, from AnonymousAllowed.
const (
	// AnonymousRefused: credentials are required.
	AnonymousRefused AnonymousAccess = iota
	// AnonymousRules: anonymous clients are in, under the anonymous
	// rules (allow_anonymous on a listener that is not loopback-only).
	AnonymousRules
	// AnonymousLocal: a loopback-only listener; anonymous clients may do
	// anything unless anonymous rules are configured, which then apply.
	AnonymousLocal
)

// Allowed reports whether clients without credentials are let in at all.
func (m AnonymousAccess) Allowed() bool { return m != AnonymousRefused }

func (m AnonymousAccess) String() string {
	switch m {
	case AnonymousRules:
		return "rules"
	case AnonymousLocal:
		return "local"
	}
	return "refused"
}

// Anonymous returns the principal of a client that gave no credentials on
// a listener with access m, or ErrAuthRequired when m refuses it.
func (a *Auth) Anonymous(m AnonymousAccess) (Principal, error) {
	switch m {
	case AnonymousLocal:
		return Principal{Anonymous: true, Local: !a.rulesNow().anonConfigured}, nil
	case AnonymousRules:
		return Principal{Anonymous: true}, nil
	}
	return Principal{}, ErrAuthRequired
}

// Authenticate checks a name and password. An empty name means the client
// gave no credentials: it is the anonymous principal of access m
// (Anonymous), or ErrAuthRequired. Under a ctx from WithLoginSource the
// check goes through the LoginGuard: refused at once (ErrTooManyAttempts)
// while the address or the account backs off, a failure counted.
func (a *Auth) Authenticate(ctx context.Context, name, password string, m AnonymousAccess) (Principal, error) {
	if name == "" {
		return a.Anonymous(m)
	}
	return a.guardedAuthenticate(ctx, name, func() (Principal, error) {
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
	})
}

// Authorize says whether p may do action on topic: a topic to publish, a
// filter to subscribe to, a device id to command (ActionCommand). It
// returns nil, an error matching ErrForbidden, or another error when the
// store could not answer. The rules are acl.go's, applied to the principal
// as the store knows it now (its current role and rules, cached for
// ReadCacheTTL), exactly as CanRead applies them: for a concrete topic,
// Authorize(ActionSubscribe) and CanRead agree.
func (a *Auth) Authorize(ctx context.Context, p Principal, action Action, topic string) error {
	if p.Anonymous && p.Local {
		return nil
	}
	st, err := a.principalState(ctx, p)
	if err != nil {
		return err
	}
	return authorizeState(st, p, action, topic)
}

// authorizeState decides action on topic by p given p's current state.
func authorizeState(st principalState, p Principal, action Action, topic string) error {
	if st.err != nil {
		return fmt.Errorf("%w: %s %q by %q: %w", ErrForbidden, action, topic, p.Name, st.err)
	}
	q := p
	q.Role = st.role
	return decide(q, st.rules, action, topic)
}

// rules returns the configured rules of name followed by its stored ones.
func (a *Auth) rules(ctx context.Context, name string) ([]ACLRule, error) {
	rules := a.rulesNow().static[name]
	if a.creds != nil {
		stored, err := a.creds.ACL(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("auth: acl of %q: %w", name, err)
		}
		rules = append(rules[:len(rules):len(rules)], stored...)
	}
	return rules, nil
}

// AnonymousAllowed applies the Mosquitto 2.0 rule of DESIGN.md: a listener
// bound only to loopback accepts anonymous clients (AnonymousLocal); any
// other address requires authentication unless allowAnonymous is set
// explicitly, and then anonymous clients are under the anonymous rules
// (AnonymousRules).
func AnonymousAllowed(listenAddr string, allowAnonymous bool) AnonymousAccess {
	switch {
	case IsLoopback(listenAddr):
		return AnonymousLocal
	case allowAnonymous:
		return AnonymousRules
	}
	return AnonymousRefused
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
