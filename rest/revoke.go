package rest

import (
	"context"
	"errors"
	"time"

	"github.com/hubsmith/hub/adapters"
)

var _ adapters.Revoker = (*Adapter)(nil)

// errRevoked is the cause with which a revoked principal's streams end.
var errRevoked = errors.New("rest: principal revoked")

// revokeTimeout bounds the revocation a deletion triggers: the protocols
// have two seconds to close the principal's connections.
const revokeTimeout = 2 * time.Second

// liveStream is a running SSE or WebSocket stream, ended by cancel.
type liveStream struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// track registers a stream of principal p (none for an anonymous one) and
// returns its context, which Revoke cancels, and the function that
// unregisters it when the stream ends.
func (a *Adapter) track(ctx context.Context, p adapters.Principal) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if p.Anonymous || p.Name == "" {
		return ctx, func() { cancel(nil) }
	}
	ls := &liveStream{cancel: cancel, done: make(chan struct{})}
	a.smu.Lock()
	if a.live == nil {
		a.live = map[string]map[*liveStream]struct{}{}
	}
	if a.live[p.Name] == nil {
		a.live[p.Name] = map[*liveStream]struct{}{}
	}
	a.live[p.Name][ls] = struct{}{}
	a.smu.Unlock()
	return ctx, func() {
		a.smu.Lock()
		delete(a.live[p.Name], ls)
		if len(a.live[p.Name]) == 0 {
			delete(a.live, p.Name)
		}
		a.smu.Unlock()
		cancel(nil)
		close(ls.done)
	}
}

// Revoke implements adapters.Revoker: every SSE and WebSocket stream of
// principal ends (a WebSocket with close code 1008, policy violation). The
// principal's tokens go with the user in the store. It returns how many
// streams it ended, once they have, or when ctx is done.
func (a *Adapter) Revoke(ctx context.Context, principal string) int {
	a.smu.Lock()
	streams := make([]*liveStream, 0, len(a.live[principal]))
	for ls := range a.live[principal] {
		streams = append(streams, ls)
	}
	a.smu.Unlock()
	for _, ls := range streams {
		ls.cancel(errRevoked)
	}
	for _, ls := range streams {
		select {
		case <-ls.done:
		case <-ctx.Done():
			return len(streams)
		}
	}
	if len(streams) > 0 {
		a.log.Info("rest: principal revoked", "principal", principal, "streams", len(streams))
	}
	return len(streams)
}

// revoke ends what principal has open in every protocol (Config.Revoke,
// else this adapter's streams), after its deletion.
func (a *Adapter) revoke(ctx context.Context, principal string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if a.cfg.Revoke != nil {
		a.cfg.Revoke(ctx, principal)
		return
	}
	a.Revoke(ctx, principal)
}
