package coap

import (
	"context"
	"strings"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

var _ adapters.Revoker = (*Adapter)(nil)

// Revoke implements adapters.Revoker: the DTLS sessions whose PSK identity
// is principal are closed, their observations ended with their durable
// queues, and so are the queues the device left while away (with
// Config.Durables); observations principal made over plain UDP with query
// credentials end too, their endpoint kept. It returns how many DTLS
// sessions and UDP observations it ended.
func (a *Adapter) Revoke(ctx context.Context, principal string) int {
	if principal == "" {
		return 0
	}
	a.mu.Lock()
	var sessions []*connState
	var udpObs []*observation
	for _, cs := range a.conns {
		if cs.secure && cs.device == principal {
			sessions = append(sessions, cs)
			continue
		}
		cs.mu.Lock()
		for _, o := range cs.obs {
			if o.principal.Name == principal {
				udpObs = append(udpObs, o)
			}
		}
		cs.mu.Unlock()
	}
	a.mu.Unlock()
	obs := udpObs
	for _, cs := range sessions {
		cs.mu.Lock()
		for _, o := range cs.obs {
			obs = append(obs, o)
		}
		cs.mu.Unlock()
	}
	// Ended, not detached: nothing is kept for an observer that is gone
	// for good. Their subscriptions end before the sessions close, which
	// would only detach them.
	ended := make([]<-chan struct{}, 0, len(obs))
	for _, o := range obs {
		ended = append(ended, o.end("principal revoked", false))
	}
	for _, done := range ended {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	for _, cs := range sessions {
		_ = cs.cc.Close()
		a.connClosed(cs)
	}
	a.forgetDurables(ctx, principal)
	a.log.Info("coap: principal revoked", "principal", principal, "sessions", len(sessions), "udp_observations", len(udpObs))
	return len(sessions) + len(udpObs)
}

// forgetDurables drops the durable queues of device's observations
// ("coap/{device}/{filter}") that no session holds.
func (a *Adapter) forgetDurables(ctx context.Context, device string) {
	if a.cfg.Durables == nil {
		return
	}
	ids, err := a.cfg.Durables(ctx)
	if err != nil {
		a.log.Warn("coap: revoke: durable subscriptions", "device", device, "err", err)
		return
	}
	prefix := "coap/" + device + "/"
	for _, id := range ids {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		if err := broker.Forget(ctx, a.cfg.Bus, id); err != nil {
			a.log.Warn("coap: revoke: forget subscription", "device", device, "subscription", id, "err", err)
		}
	}
}
