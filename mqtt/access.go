package mqtt

import (
	"context"
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

// authorize is adapters.Auth.Authorize bounded in time. Auth caches each
// principal's role and rules itself (and forgets them at once when they
// change), so no second cache sits here.
func (a *Adapter) authorize(p adapters.Principal, action adapters.Action, topic string) error {
	// Per PUBLISH: a cached answer costs no context and timer.
	if err, ok := a.auth.AuthorizeCached(p, action, topic); ok {
		return err
	}
	ctx, cancel := context.WithTimeout(a.ctx, authTimeout)
	defer cancel()
	return a.auth.Authorize(ctx, p, action, topic)
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
