package mqtt

import (
	"context"
	"errors"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// This file applies the hub's limits (adapters.Limits) to MQTT clients:
// connections, persistent sessions, filters per client and topic length.
// The pending write bound is the connection's (asyncConn).

// admitAddress refuses a client whose connection was over the global or
// per-address bound when it was accepted (see listenerBase.track).
func admitAddress(cl *mochi.Client) error {
	if ac, ok := cl.Net.Conn.(*asyncConn); ok {
		return ac.limitErr
	}
	return nil
}

// admit counts a client that passed authentication against its user's
// bound of connections and, when it asks for a persistent session that
// does not exist yet, of persistent sessions. Its place is given back
// when its connection ends.
func (a *Adapter) admit(cl *mochi.Client, name string) error {
	ac, ok := cl.Net.Conn.(*asyncConn)
	if !ok {
		return nil // not one of the hub's listeners (the inline client)
	}
	l := a.auth.Limits()
	if err := ac.limit.SetUser(name); err != nil {
		return err
	}
	if name != "" && persistent(cl) && a.cfg.Sessions != nil {
		if a.sessionExists(cl.ID, name) {
			l.KeepSession(name, cl.ID)
		} else if err := l.ClaimSession(name, cl.ID); err != nil {
			return err
		}
	}
	return nil
}

// sessionExists reports whether the client id has a persistent session of
// user's to resume, in memory or in the store.
func (a *Adapter) sessionExists(id, user string) bool {
	a.smu.Lock()
	s := a.sessions[id]
	a.smu.Unlock()
	if s != nil && s.durable {
		return true
	}
	r, ok := a.record(id)
	return ok && r.User == user
}

// dropRecord forgets a client id's persistent session: its place in the
// per-user count and its record, damaged or not. Without a record nothing
// is written: a delete waits for the store's writer, and a clean client's
// packets are not read until OnSessionEstablished returns.
func (a *Adapter) dropRecord(ctx context.Context, id string) {
	b, err := a.cfg.Sessions.KVGet(ctx, bucketSessions, id)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err == nil { // a store that fails to read is still asked to delete
		if r, ok := a.decodeRecord(id, b); ok && r.User != "" {
			a.auth.Limits().ReleaseSession(r.User, id)
		}
	}
	_ = a.cfg.Sessions.KVDelete(ctx, bucketSessions, id)
}

// limitRefusal is the CONNACK of a client refused by a limit: MQTT 5
// 0x89 (server busy) for the hub-wide bound, 0x97 (quota exceeded) for
// the per-address, per-user and persistent session bounds, with the
// limit as reason string; MQTT 3.1.1 0x03 (server unavailable).
func limitRefusal(err error) packets.Code {
	code := packets.ErrQuotaExceeded
	if errors.Is(err, adapters.ErrServerBusy) {
		code = packets.ErrServerBusy
	}
	return packets.Code{Code: code.Code, Reason: err.Error()}
}

// overCap remembers, between OnSubscribe and OnSubscribed, the filters of
// a SUBSCRIBE refused for the per-client bound.
type overCap struct {
	mu sync.Mutex
	m  map[*mochi.Client]map[int]bool
}

func (o *overCap) set(cl *mochi.Client, idx map[int]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[*mochi.Client]map[int]bool{}
	}
	o.m[cl] = idx
}

func (o *overCap) take(cl *mochi.Client) map[int]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	idx := o.m[cl]
	delete(o.m, cl)
	return idx
}

// heldFilters are the filters the client's session holds, by their MQTT
// form ($share/{group}/{filter} for a shared one).
func (a *Adapter) heldFilters(cl *mochi.Client) map[string]bool {
	held := map[string]bool{}
	var sub broker.Subscription
	if s := a.sessionOf(cl); s != nil {
		sub = s.subscription()
	}
	if sub != nil {
		for _, f := range sub.Filters() {
			if f.Group != "" {
				held["$share/"+f.Group+"/"+f.Topic] = true
			} else {
				held[f.Topic] = true
			}
		}
	}
	for f := range cl.State.Subscriptions.GetAll() {
		held[f] = true
	}
	return held
}

// capFilters makes the filters of pk that are too long, or new beyond the
// client's bound of filters, ones mochi refuses (invalidFilter). It
// returns the indexes of those over the bound, whose SUBACK code
// OnSubscribed then makes 0x97 (quota exceeded; 0x80 in 3.1.1), and
// whether pk.Filters was copied.
func (a *Adapter) capFilters(cl *mochi.Client, pk *packets.Packet, cloned bool) map[int]bool {
	l := a.auth.Limits()
	var held map[string]bool
	var allowed int
	var over map[int]bool
	clone := func() {
		if !cloned {
			pk.Filters = append(packets.Subscriptions(nil), pk.Filters...)
			cloned = true
		}
	}
	for i, sub := range pk.Filters {
		if sub.Filter == invalidFilter {
			continue
		}
		if err := l.CheckTopic(sub.Filter); err != nil {
			clone()
			pk.Filters[i].Filter = invalidFilter
			continue
		}
		if held == nil {
			held = a.heldFilters(cl)
			allowed = l.AllowedSubscriptions(len(held))
		}
		if held[sub.Filter] {
			continue
		}
		if allowed <= 0 {
			if over == nil {
				over = map[int]bool{}
			}
			over[i] = true
			clone()
			pk.Filters[i].Filter = invalidFilter
			continue
		}
		held[sub.Filter] = true
		allowed--
	}
	if len(over) > 0 {
		l.CountSubscriptionRefusals(len(over))
	}
	return over
}

// quotaCodes sets the SUBACK code of the filters refused for the bound.
func quotaCodes(codes []byte, over map[int]bool, version byte) {
	for i := range over {
		if i < len(codes) {
			codes[i] = packets.ErrQuotaExceeded.Code
			if version < 5 {
				codes[i] = packets.ErrUnspecifiedError.Code
			}
		}
	}
}
