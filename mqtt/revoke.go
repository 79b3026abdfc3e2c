package mqtt

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/adapters"
)

var _ adapters.Revoker = (*Adapter)(nil)

// revokePoll is how often Revoke looks whether the clients it closed have
// gone.
const revokePoll = 10 * time.Millisecond

// Revoke implements adapters.Revoker: every client connected as principal
// is closed (MQTT 5 clients get DISCONNECT 0x87 Not authorized first; no
// will is sent), and every persistent session of principal, connected or
// not, is forgotten: its bus subscription and queue, its record, and what
// mochi keeps of it. It returns how many connections it closed.
func (a *Adapter) Revoke(ctx context.Context, principal string) int {
	if principal == "" {
		return 0
	}
	a.mu.Lock()
	srv := a.srv
	started := a.state == stateStarted
	a.mu.Unlock()
	a.roles.Delete(principal)
	if !started || srv == nil {
		return 0
	}
	var closed []*mochi.Client
	for _, cl := range srv.Clients.GetAll() {
		if cl.Net.Inline || string(cl.Properties.Username) != principal {
			continue
		}
		if cl.Closed() {
			// A persistent session mochi keeps for an absent client.
			a.dropMochiSession(srv, cl)
			continue
		}
		a.revoked.Store(cl, struct{}{})
		// A revoked client publishes nothing more, its will included
		// (mochi's sendLWT reads the flag atomically).
		atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
		if cl.Properties.ProtocolVersion == 5 {
			_ = srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		} else {
			cl.Stop(packets.ErrNotAuthorized) // MQTT 3.1.1 has no server DISCONNECT
		}
		closed = append(closed, cl)
	}
	// OnDisconnect forgets the sessions of the closed clients; wait for it
	// so that what follows, and the caller, see them gone.
	for _, cl := range closed {
		for {
			if _, pending := a.revoked.Load(cl); !pending {
				break
			}
			select {
			case <-ctx.Done():
				a.log.Warn("mqtt: revoke: a client has not ended yet", "client", cl.ID, "err", ctx.Err())
				return len(closed)
			case <-time.After(revokePoll):
			}
		}
	}
	a.forgetSessionsOf(principal)
	a.log.Info("mqtt: principal revoked", "principal", principal, "closed", len(closed))
	return len(closed)
}

// isRevoked reports whether cl was closed by Revoke: OnDisconnect then
// ends its session for good, as if it had expired.
func (a *Adapter) isRevoked(cl *mochi.Client) bool {
	_, ok := a.revoked.Load(cl)
	return ok
}

// revokeDone finishes the revocation of cl once OnDisconnect has ended its
// session on the bus: mochi forgets it too, so that a new client of the
// same id inherits nothing.
func (a *Adapter) revokeDone(cl *mochi.Client) {
	a.mu.Lock()
	srv := a.srv
	a.mu.Unlock()
	if srv != nil {
		a.dropMochiSession(srv, cl)
	}
	a.revoked.Delete(cl)
}

// dropMochiSession removes what mochi keeps of cl's session: its
// subscriptions, inflight messages and its entry among the clients, unless
// a new connection has that client id now.
func (a *Adapter) dropMochiSession(srv *mochi.Server, cl *mochi.Client) {
	cl.ClearInflights()
	srv.UnsubscribeClient(cl)
	if cur, ok := srv.Clients.Get(cl.ID); ok && cur == cl {
		srv.Clients.Delete(cl.ID)
	}
}

// forgetSessionsOf forgets every stored persistent session that belongs
// to principal and has no connection.
func (a *Adapter) forgetSessionsOf(principal string) {
	if a.cfg.Sessions == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), storeTimeout)
	kvs, err := a.cfg.Sessions.KVList(ctx, bucketSessions)
	cancel()
	if err != nil {
		a.log.Warn("mqtt: revoke: list sessions", "principal", principal, "err", err)
		return
	}
	for _, kv := range kvs {
		var r sessionRecord
		if json.Unmarshal(kv.Value, &r) != nil || r.User != principal {
			continue
		}
		a.smu.Lock()
		s := a.sessions[kv.Key]
		a.smu.Unlock()
		if s != nil && s.conn() != nil {
			continue // a connection of another principal now (refused by OnConnect, but be safe)
		}
		a.forget(kv.Key)
	}
}
