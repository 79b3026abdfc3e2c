package adapters

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ReadCacheTTL is how long CanRead trusts what it looked up: a changed ACL
// rule, a changed role or a deleted principal is seen by every open stream,
// observation and subscription within it.
const ReadCacheTTL = time.Second

// readCacheMax bounds the decisions (and, separately, the principals)
// CanRead keeps; past it the expired ones go, and all of them if none has
// expired.
const readCacheMax = 1 << 16

// CanRead says whether p may receive an envelope of topic: the one check
// every adapter makes for every read (REST GET, CoAP GET, PubSub items,
// disco and /.well-known/core listings) and for every envelope it delivers
// to a subscriber (SSE, WebSocket, CoAP observers, XMPP topic and PubSub
// subscribers, MQTT sessions), retained or live, right before sending it.
// It returns nil, an error matching ErrForbidden (skip the envelope), or
// another error when the store could not answer (nothing is sent then
// either).
//
// topic is a concrete topic. The rules are Authorize's for
// ActionSubscribe on that topic (acl.go), applied to the principal as the
// store knows it now: its current role, and ErrForbidden (with
// ErrUnknownPrincipal) once the user or device is deleted. A device's
// command topics are read by that device only. A $-topic is
// granted only by the role (admins) or by a rule whose filter names the
// $-level explicitly, since a filter starting with a wildcard never
// matches it; the bus does not route $-topics to such filters either
// (MQTT-4.7.2-1), so a wildcard read never yields them.
//
// Decisions are cached for ReadCacheTTL, so the cost per delivery is a map
// lookup and a change takes effect within that time.
func (a *Auth) CanRead(ctx context.Context, p Principal, topic string) error {
	k := readKey{p: p, topic: topic}
	if err, ok := a.reads.decision(k); ok {
		return err
	}
	st, err := a.principalState(ctx, p)
	if err != nil {
		return err
	}
	if st.err != nil {
		err = fmt.Errorf("%w: read %q by %q: %w", ErrForbidden, topic, p.Name, st.err)
	} else {
		q := p
		q.Role = st.role
		err = decide(q, st.rules, ActionSubscribe, topic)
	}
	a.reads.putDecision(k, err, st.expires)
	return err
}

// principalState returns what CanRead needs to know of p: its current
// role and rules, from the cache while they are fresh.
func (a *Auth) principalState(ctx context.Context, p Principal) (principalState, error) {
	if st, ok := a.reads.principal(p); ok {
		return st, nil
	}
	st := principalState{role: p.Role}
	if p.Anonymous {
		st.rules = a.rulesNow().anon
	} else {
		if a.creds != nil && !p.External {
			role, err := a.creds.PrincipalRole(ctx, p.Name)
			switch {
			case errors.Is(err, ErrUnknownPrincipal):
				st.err = fmt.Errorf("%w %q", ErrUnknownPrincipal, p.Name)
			case err != nil:
				return principalState{}, fmt.Errorf("auth: role of %q: %w", p.Name, err)
			default:
				st.role = role
			}
		}
		if st.err == nil && st.role != RoleAdmin {
			rules, err := a.rules(ctx, p.Name)
			if err != nil {
				return principalState{}, err
			}
			if p.External && len(rules) == 0 {
				rules = a.rulesNow().peerRules
			}
			st.rules = rules
		}
	}
	st.expires = a.reads.put(p, st)
	return st, nil
}

// readKey is one cached CanRead decision. The whole principal is part of
// it, so that principals built with different roles (or anonymous ones)
// never share an answer.
type readKey struct {
	p     Principal
	topic string
}

type readEntry struct {
	err     error
	expires time.Time
}

// principalState is a principal as the store knows it, for ReadCacheTTL.
type principalState struct {
	role    string
	rules   []ACLRule
	err     error // ErrUnknownPrincipal: deleted
	expires time.Time
}

// readCache holds CanRead's decisions and the principal states they were
// made from. A decision never outlives the state it came from, so the
// answer is at most one TTL older than the store.
type readCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu         sync.RWMutex
	decisions  map[readKey]readEntry
	principals map[Principal]principalState
}

func (c *readCache) init(ttl time.Duration, max int, now func() time.Time) {
	c.ttl, c.max, c.now = ttl, max, now
	c.decisions = make(map[readKey]readEntry)
	c.principals = make(map[Principal]principalState)
}

func (c *readCache) decision(k readKey) (error, bool) {
	c.mu.RLock()
	e, ok := c.decisions[k]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		return nil, false
	}
	return e.err, true
}

func (c *readCache) putDecision(k readKey, err error, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	makeRoom(c.decisions, c.max, c.now(), func(e readEntry) time.Time { return e.expires })
	c.decisions[k] = readEntry{err: err, expires: expires}
}

// makeRoom keeps m under max entries: a full map loses its expired
// entries, and everything when none had expired.
func makeRoom[K comparable, V any](m map[K]V, max int, now time.Time, expires func(V) time.Time) {
	if len(m) < max {
		return
	}
	for k, v := range m {
		if !now.Before(expires(v)) {
			delete(m, k)
		}
	}
	if len(m) >= max {
		clear(m)
	}
}

func (c *readCache) principal(p Principal) (principalState, bool) {
	c.mu.RLock()
	st, ok := c.principals[p]
	c.mu.RUnlock()
	if !ok || !c.now().Before(st.expires) {
		return principalState{}, false
	}
	return st, true
}

// put stores st for p and returns when it expires.
func (c *readCache) put(p Principal, st principalState) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	makeRoom(c.principals, c.max, now, func(s principalState) time.Time { return s.expires })
	st.expires = now.Add(c.ttl)
	c.principals[p] = st
	return st.expires
}

// Forget drops what Authorize and CanRead cached about name, so that a
// change made through the hub (an ACL replaced, a user deleted or given
// another role) applies to the next check at once; changes made to the
// store from outside (the command line) take up to ReadCacheTTL.
func (a *Auth) Forget(name string) {
	a.reads.forget(name)
}

// forgetAll drops every cached decision (the configured rules changed).
func (c *readCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.principals)
	clear(c.decisions)
}

func (c *readCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.principals {
		if p.Name == name {
			delete(c.principals, p)
		}
	}
	for k := range c.decisions {
		if k.p.Name == name {
			delete(c.decisions, k)
		}
	}
}
