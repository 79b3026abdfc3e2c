package adapters

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrTooManyAttempts refuses a login from an address or to an account that
// failed too often lately; the password is not even checked. It matches
// ErrBadCredentials, so protocols that have no better code answer with
// theirs for bad credentials.
var ErrTooManyAttempts = fmt.Errorf("%w: too many failed logins", ErrBadCredentials)

// ErrTLSRequired refuses credentials sent in clear on a listener that is
// not loopback-only while require_tls is set: use the protocol's TLS
// listener (mqtts, https, STARTTLS, coaps).
var ErrTLSRequired = errors.New("credentials in clear are refused off loopback (require_tls): use TLS")

// GuardConfig bounds failed logins. Zero fields take the defaults.
type GuardConfig struct {
	// Free is the number of failures (per address, per account) allowed
	// before back-off starts (default 5: a few typos cost nothing).
	Free int `yaml:"free"`
	// Base is the first back-off (default 1s); each further failure
	// doubles it, up to Max (default 60s).
	Base time.Duration `yaml:"base"`
	Max  time.Duration `yaml:"max"`
	// Forget drops what is known of an address or account quiet for this
	// long (default 15m).
	Forget time.Duration `yaml:"forget"`
	// Off disables the guard (tests of other things, trusted networks).
	Off bool `yaml:"off"`
}

// LoginEvent is published when an address or account enters (or stays in)
// back-off: on $hub/security/backoff.
type LoginEvent struct {
	Protocol string `json:"protocol"`
	// Scope is "address" or "account": which of the two backs off.
	Scope string `json:"scope"`
	// Remote is the client's address (no port); Name the account tried.
	Remote   string `json:"remote,omitempty"`
	Name     string `json:"name,omitempty"`
	Failures int    `json:"failures"`
	// RetryInMS is how long logins from there (or to it) are refused.
	RetryInMS int64     `json:"retry_in_ms"`
	Time      time.Time `json:"time"`
}

// SecurityTopic is where LoginEvents are published.
const SecurityTopic = "$hub/security/backoff"

// guardMax bounds the addresses and accounts a LoginGuard tracks, so a
// flood from many addresses costs bounded memory.
const guardMax = 1 << 16

// LoginGuard backs off failed logins per source address and per account,
// exponentially to a cap, in every protocol: while an address or account
// is backing off, its logins are refused at once (ErrTooManyAttempts)
// without the slow password check. A success clears both.
type LoginGuard struct {
	cfg GuardConfig
	now func() time.Time

	mu sync.Mutex
	m  map[guardKey]*guardEntry

	onEvent atomic.Pointer[func(LoginEvent)]

	statsMu   sync.Mutex
	failures  map[string]uint64 // by protocol
	throttled map[string]uint64
}

type guardKey struct {
	account bool
	v       string
}

type guardEntry struct {
	fails int
	until time.Time // refused before this
	last  time.Time
}

// NewLoginGuard returns a guard with cfg (zero fields: defaults).
func NewLoginGuard(cfg GuardConfig) *LoginGuard {
	if cfg.Free <= 0 {
		cfg.Free = 5
	}
	if cfg.Base <= 0 {
		cfg.Base = time.Second
	}
	if cfg.Max <= 0 {
		cfg.Max = time.Minute
	}
	if cfg.Max < cfg.Base {
		cfg.Max = cfg.Base
	}
	if cfg.Forget <= 0 {
		cfg.Forget = 15 * time.Minute
	}
	return &LoginGuard{cfg: cfg, now: time.Now, m: make(map[guardKey]*guardEntry),
		failures: make(map[string]uint64), throttled: make(map[string]uint64)}
}

// OnEvent sets the function told of each back-off (the gateway publishes
// it on SecurityTopic). It must not block.
func (g *LoginGuard) OnEvent(f func(LoginEvent)) { g.onEvent.Store(&f) }

// Allow says whether a login of name from remote may be tried now: nil, or
// ErrTooManyAttempts saying when to retry. An empty name checks only the
// address; an empty remote only the account.
func (g *LoginGuard) Allow(protocol, remote, name string) error {
	if g == nil || g.cfg.Off {
		return nil
	}
	now := g.now()
	g.mu.Lock()
	var wait time.Duration
	for _, k := range g.keys(remote, name) {
		if e := g.m[k]; e != nil && now.Before(e.until) {
			wait = max(wait, e.until.Sub(now))
		}
	}
	g.mu.Unlock()
	if wait == 0 {
		return nil
	}
	g.count(g.throttled, protocol)
	return &backoffError{wait: wait}
}

// backoffError is ErrTooManyAttempts with the time to wait.
type backoffError struct{ wait time.Duration }

func (e *backoffError) Error() string {
	return fmt.Sprintf("%v; retry in %s", ErrTooManyAttempts, e.wait.Round(100*time.Millisecond))
}

func (e *backoffError) Unwrap() error { return ErrTooManyAttempts }

// RetryAfter returns how long a login refused with ErrTooManyAttempts
// should wait (false for other errors).
func RetryAfter(err error) (time.Duration, bool) {
	var b *backoffError
	if errors.As(err, &b) {
		return b.wait, true
	}
	return 0, false
}

// Fail records a failed login of name from remote.
func (g *LoginGuard) Fail(protocol, remote, name string) {
	if g == nil || g.cfg.Off {
		return
	}
	g.count(g.failures, protocol)
	now := g.now()
	var events []LoginEvent
	g.mu.Lock()
	for _, k := range g.keys(remote, name) {
		e := g.m[k]
		if e == nil {
			if len(g.m) >= guardMax {
				g.sweepLocked(now)
			}
			e = &guardEntry{}
			g.m[k] = e
		} else if now.Sub(e.last) > g.cfg.Forget {
			*e = guardEntry{}
		}
		e.fails++
		e.last = now
		if over := e.fails - g.cfg.Free; over > 0 {
			d := g.cfg.Base << min(over-1, 30)
			if d <= 0 || d > g.cfg.Max {
				d = g.cfg.Max
			}
			e.until = now.Add(d)
			ev := LoginEvent{Protocol: protocol, Scope: "address", Remote: hostOnly(remote), Name: name,
				Failures: e.fails, RetryInMS: d.Milliseconds(), Time: now.UTC()}
			if k.account {
				ev.Scope = "account"
			}
			events = append(events, ev)
		}
	}
	g.mu.Unlock()
	if f := g.onEvent.Load(); f != nil {
		for _, ev := range events {
			(*f)(ev)
		}
	}
}

// Succeed clears what is known of remote and name after a good login.
func (g *LoginGuard) Succeed(remote, name string) {
	if g == nil || g.cfg.Off {
		return
	}
	g.mu.Lock()
	for _, k := range g.keys(remote, name) {
		delete(g.m, k)
	}
	g.mu.Unlock()
}

// Stats returns the failed and the refused (backing off) logins so far, by
// protocol.
func (g *LoginGuard) Stats() (failures, throttled map[string]uint64) {
	g.statsMu.Lock()
	defer g.statsMu.Unlock()
	failures, throttled = make(map[string]uint64, len(g.failures)), make(map[string]uint64, len(g.throttled))
	for k, v := range g.failures {
		failures[k] = v
	}
	for k, v := range g.throttled {
		throttled[k] = v
	}
	return failures, throttled
}

func (g *LoginGuard) count(m map[string]uint64, protocol string) {
	g.statsMu.Lock()
	m[protocol]++
	g.statsMu.Unlock()
}

func (g *LoginGuard) keys(remote, name string) []guardKey {
	ks := make([]guardKey, 0, 2)
	if h := hostOnly(remote); h != "" {
		ks = append(ks, guardKey{v: h})
	}
	if name != "" {
		ks = append(ks, guardKey{account: true, v: name})
	}
	return ks
}

// sweepLocked forgets quiet entries; if none is, an arbitrary half, so
// the map stays bounded under a flood from many addresses.
func (g *LoginGuard) sweepLocked(now time.Time) {
	for k, e := range g.m {
		if now.Sub(e.last) > g.cfg.Forget && !now.Before(e.until) {
			delete(g.m, k)
		}
	}
	for k := range g.m {
		if len(g.m) < guardMax/2 {
			break
		}
		delete(g.m, k)
	}
}

// hostOnly strips the port of an address ("" stays "").
func hostOnly(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// LoginSource says where a login comes from, for the guard.
type LoginSource struct {
	Protocol string
	Remote   string // the client's address (host:port or host)
}

type loginSourceKey struct{}

// WithLoginSource returns ctx carrying src: Auth.Authenticate under it
// goes through the LoginGuard.
func WithLoginSource(ctx context.Context, src LoginSource) context.Context {
	return context.WithValue(ctx, loginSourceKey{}, src)
}

func loginSource(ctx context.Context) (LoginSource, bool) {
	src, ok := ctx.Value(loginSourceKey{}).(LoginSource)
	return src, ok
}

// Guard returns the Auth's LoginGuard, for logins Authenticate does not
// see (SCRAM, tokens, DTLS PSK identities).
func (a *Auth) Guard() *LoginGuard { return a.guard }

// SetGuard replaces the LoginGuard (nil: none).
func (a *Auth) SetGuard(g *LoginGuard) { a.guard = g }

// guardedAuthenticate wraps a password check with the guard when ctx says
// where the login comes from.
func (a *Auth) guardedAuthenticate(ctx context.Context, name string, check func() (Principal, error)) (Principal, error) {
	src, ok := loginSource(ctx)
	if !ok || a.guard == nil {
		return check()
	}
	if err := a.guard.Allow(src.Protocol, src.Remote, name); err != nil {
		return Principal{}, err
	}
	p, err := check()
	switch {
	case err == nil:
		a.guard.Succeed(src.Remote, name)
	case errors.Is(err, ErrBadCredentials):
		a.guard.Fail(src.Protocol, src.Remote, name)
	}
	return p, err
}
