package mqtt

import (
	"context"
	"errors"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// principal returns who a client is (from the username it authenticated
// with, or for an anonymous client from its listener).
func (a *Adapter) principal(cl *mochi.Client) adapters.Principal {
	name := string(cl.Properties.Username)
	if name == "" {
		p, _ := a.auth.Anonymous(adapters.AnonymousAllowed(a.lnAddr[cl.Net.Listener], a.cfg.AllowAnonymous))
		return p
	}
	p := adapters.Principal{Name: name}
	if r, ok := a.roles.Load(name); ok {
		p.Role = r.(string)
	}
	return p
}

// ACL decisions are cached briefly: mochi checks the subscriber's read
// permission on every delivery, and for users and devices that is a store
// query. A changed rule takes effect within aclTTL.
const (
	aclTTL      = 2 * time.Second
	aclCacheMax = 16384
)

type aclKey struct {
	p      adapters.Principal
	action adapters.Action
	topic  string
}

type aclEntry struct {
	err     error
	expires time.Time
}

// authorize is adapters.Auth.Authorize behind the decision cache; errors
// other than a denial (a failing store) are not cached.
func (a *Adapter) authorize(p adapters.Principal, action adapters.Action, topic string) error {
	if p.Anonymous && p.Local {
		return nil // Auth allows these without looking anything up
	}
	k := aclKey{p, action, topic}
	now := time.Now()
	a.aclMu.Lock()
	e, ok := a.aclCache[k]
	a.aclMu.Unlock()
	if ok && now.Before(e.expires) {
		return e.err
	}
	ctx, cancel := context.WithTimeout(a.ctx, authTimeout)
	defer cancel()
	err := a.auth.Authorize(ctx, p, action, topic)
	if err == nil || errors.Is(err, adapters.ErrForbidden) {
		a.aclMu.Lock()
		if a.aclCache == nil || len(a.aclCache) >= aclCacheMax {
			a.aclCache = make(map[aclKey]aclEntry)
		}
		a.aclCache[k] = aclEntry{err: err, expires: now.Add(aclTTL)}
		a.aclMu.Unlock()
	}
	return err
}

// presenceChange counts a device's connections and tells the sink when the
// first one opens or the last one closes. It holds the lock while calling
// the sink so that the sink sees changes in order.
func (a *Adapter) presenceChange(device string, delta int, quiet bool) {
	a.presMu.Lock()
	defer a.presMu.Unlock()
	n := a.presence[device] + delta
	if n <= 0 {
		delete(a.presence, device)
		n = 0
	} else {
		a.presence[device] = n
	}
	if quiet || !(delta > 0 && n == 1 || delta < 0 && n == 0) {
		return
	}
	sp := a.sink.Load()
	if sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	(*sp).DevicePresence(ctx, device, broker.ProtoMQTT, n > 0, time.Now())
}
