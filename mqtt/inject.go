package mqtt

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// busOriginPrefix starts the Origin of a packet injected from the bus; the
// envelope id follows, so that OnQosPublish knows which envelope a queued
// copy belongs to (and the stored in-flight record keeps it). No client
// can have such an id (the inline client id is refused at CONNECT), so
// MQTT 5 no-local subscriptions are unaffected.
const busOriginPrefix = mochi.InlineClientId + "/"

// busOrigin is the packet Origin of envelope id.
func busOrigin(envID string) string { return busOriginPrefix + envID }

// envelopeOf returns the envelope id a packet Origin carries, if any.
func envelopeOf(origin string) (string, bool) {
	id, ok := strings.CutPrefix(origin, busOriginPrefix)
	if !ok || id == "" {
		return "", false
	}
	return id, true
}

// errNotStored is why a QoS 1/2 publish is refused when a copy for an
// offline persistent session could not be stored: the store is what
// broke, so it maps to the bus's storage error (MQTT 5 reason 0x97).
var errNotStored = fmt.Errorf("mqtt: copy for an offline persistent session not stored: %w", broker.ErrStorage)

// injections tracks, by packet Origin, the routings in progress (a
// client's publish through its stand-in, or an envelope from the bus) and
// the copies each queued for offline persistent sessions that the session
// store failed to keep. Concurrent routings with the same Origin (two
// connections of one client id during a takeover) share the record, which
// errs on the side of refusing.
type injections struct {
	mu sync.Mutex
	m  map[string]*injection
}

type injection struct {
	refs     int
	failed   []queuedCopy // not stored: the publish is refused
	dups     []queuedCopy // second copies of an envelope: taken back quietly
	overflow []packetCopy // copies mochi dropped for a full outbound queue: queued again
	last     map[*mochi.Client]uint16
	behind   bool // a copy for a connected persistent session is written behind
}

// packetCopy is a copy mochi took out of a client's in-flight table.
type packetCopy struct {
	cl *mochi.Client
	pk packets.Packet
}

// queuedCopy is a message in a client's in-flight table.
type queuedCopy struct {
	cl  *mochi.Client
	pid uint16
}

func newInjections() *injections { return &injections{m: make(map[string]*injection)} }

// begin opens the record of origin.
func (in *injections) begin(origin string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := in.m[origin]
	if r == nil {
		r = &injection{}
		in.m[origin] = r
	}
	r.refs++
}

// notStored records a copy that could not be stored; it reports false when
// no routing of origin is in progress (mochi delivering on its own, as for
// a will), where nobody can be told.
func (in *injections) notStored(origin string, cl *mochi.Client, pid uint16) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := in.m[origin]
	if r == nil {
		return false
	}
	r.failed = append(r.failed, queuedCopy{cl, pid})
	return true
}

// duplicate records a second copy of an envelope queued for an offline
// session that holds it already (see queueOrder.add); false as for
// notStored.
func (in *injections) duplicate(origin string, cl *mochi.Client, pid uint16) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := in.m[origin]
	if r == nil {
		return false
	}
	r.dups = append(r.dups, queuedCopy{cl, pid})
	return true
}

// queued notes the packet id of the copy for persistent session cl that
// the routing of origin just queued (see overflowed).
func (in *injections) queued(origin string, cl *mochi.Client, pid uint16) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if r := in.m[origin]; r != nil {
		if r.last == nil {
			r.last = make(map[*mochi.Client]uint16)
		}
		r.last[cl] = pid
	}
}

// wroteBehind records that the routing of origin left a copy's record to
// the write-behind (see inflightWriter.sync).
func (in *injections) wroteBehind(origin string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if r := in.m[origin]; r != nil {
		r.behind = true
	}
}

// overflowed records that mochi dropped the copy the routing of origin
// queued last for cl, its outbound queue being full: mochi takes such a
// copy out of the in-flight table right after, so it is kept here to be
// queued again (see route).
func (in *injections) overflowed(origin string, cl *mochi.Client) {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := in.m[origin]
	if r == nil {
		return
	}
	pid, ok := r.last[cl]
	if !ok {
		return
	}
	if pk, ok := cl.State.Inflight.Get(pid); ok {
		r.overflow = append(r.overflow, packetCopy{cl, pk})
	}
}

// end closes the record of origin and returns what the routing left to
// do: the copies not stored, the duplicates and the overflowed copies.
func (in *injections) end(origin string) injection {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := in.m[origin]
	if r == nil {
		return injection{}
	}
	out := injection{failed: r.failed, dups: r.dups, overflow: r.overflow, behind: r.behind}
	r.failed, r.dups, r.overflow, r.last, r.behind = nil, nil, nil, nil, false
	if r.refs--; r.refs == 0 {
		delete(in.m, origin)
	}
	return out
}

// errNotStoredBecause is errNotStored caused by err.
func errNotStoredBecause(err error) error { return fmt.Errorf("%w: %w", errNotStored, err) }

// route routes pk as published by cl (see inject) under origin,
// then takes back the copies queued for offline persistent sessions that
// could not be stored: they would be lost at the next restart although
// the publisher was acknowledged, so the publish is refused instead
// (errNotStored) and no half-written copy is left in memory either.
//
// behind reports that a copy went to a connected persistent session and
// its record is written behind: the publisher's acknowledgement must wait
// for it (see inflightWriter.syncAsync).
func (a *Adapter) route(cl *mochi.Client, pk packets.Packet, origin string) (behind bool, err error) {
	a.injecting.begin(origin)
	err = a.inject(cl, pk)
	left := a.injecting.end(origin)
	failed, dups := left.failed, left.dups
	for _, q := range append(failed, dups...) {
		a.unqueue(q.cl, q.pid)
	}
	for _, o := range left.overflow {
		if q, ok := a.requeue(o.cl, o.pk); !ok {
			failed = append(failed, q)
		}
	}
	if len(dups) > 0 {
		a.metrics.duplicates.Add(uint64(len(dups)))
	}
	if err != nil {
		return false, err
	}
	if len(failed) > 0 {
		a.metrics.notStored.Add(uint64(len(failed)))
		return false, errNotStored
	}
	// Copies in flight to connected persistent sessions must be stored
	// before the publisher's acknowledgement (the caller waits for
	// that). The bus's envelopes are synced per batch instead (the
	// feed's SubscribeOptions.Sync).
	return left.behind && !strings.HasPrefix(origin, busOriginPrefix), nil
}

// unqueue removes a copy from a client's in-flight table, as mochi does
// when it rolls back a delivery.
func (a *Adapter) unqueue(cl *mochi.Client, pid uint16) {
	if cl.State.Inflight.Delete(pid) {
		atomic.AddInt64(&a.srv.Info.Inflight, -1)
		cl.State.Inflight.IncreaseSendQuota()
	}
	a.order.done(cl.ID, pid)
}

// requeue takes a copy mochi dropped because the client's outbound queue
// was full (1024 packets it has not taken yet): the client is a slow
// consumer, so its connection is closed, and the copy goes back into its
// in-flight table under a new packet id, stored, to be sent when the
// client returns. ok is false when it could not be stored (the publish is
// then refused; q names the copy to take back).
func (a *Adapter) requeue(cl *mochi.Client, pk packets.Packet) (q queuedCopy, ok bool) {
	old := pk.PacketID
	cl.Stop(errSlowConsumer)
	a.slowConsumer(fmt.Errorf("client %q: outbound queue full: %w", cl.ID, errSlowConsumer))
	a.order.done(cl.ID, old)
	if a.sessions != nil {
		a.sessions.deleteInflight(cl.ID, old)
	}
	id, err := cl.NextPacketID()
	if err != nil {
		a.log.Warn("mqtt: requeue a dropped copy: no packet id", "client", cl.ID, "err", err)
		return queuedCopy{}, true // nothing queued, nothing to take back
	}
	pk.PacketID = uint16(id)
	if !cl.State.Inflight.Set(pk) {
		return queuedCopy{}, true
	}
	atomic.AddInt64(&a.srv.Info.Inflight, 1)
	env, _ := envelopeOf(pk.Origin)
	seq, _ := a.order.add(cl.ID, pk.PacketID, env, queuedSize(pk))
	if a.sessions != nil {
		if err := a.sessions.saveInflight(cl, pk, seq, false); err != nil {
			return queuedCopy{cl, pk.PacketID}, false
		}
	}
	return queuedCopy{}, true
}

// offline reports whether cl has no live connection: a session loaded from
// the store, or one whose connection has ended.
func offline(cl *mochi.Client) bool {
	return cl.Net.Conn == nil || cl.Closed()
}

// pauseForResume runs before mochi hands a returning client its stored
// session (OnSessionEstablish) and stops every routing into mochi until
// mochi has resent what the session holds (OnSessionEstablished), or the
// connection has failed on the way.
//
// Without it, between mochi copying the old session's in-flight table and
// making the new connection the client id's owner, a delivery lands in the
// old table and is cleared with it (lost until a restart); and once the new
// connection is the owner, new deliveries go out before the resend of what
// was queued (out of order) and are then resent with it (duplicates).
func (a *Adapter) pauseForResume(cl *mochi.Client) {
	a.resume.Lock()
	once := new(sync.Once)
	a.resuming.Store(cl, once)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for range t.C {
			if _, ok := a.resuming.Load(cl); !ok {
				return
			}
			if cl.Closed() {
				a.resumed(cl)
				return
			}
		}
	}()
}

// resumed lets routings go on once cl's session has been resent.
func (a *Adapter) resumed(cl *mochi.Client) {
	if v, ok := a.resuming.LoadAndDelete(cl); ok {
		v.(*sync.Once).Do(a.resume.Unlock)
	}
}

// fromBus injects an envelope from the bus into mochi, which delivers it
// to the matching MQTT subscriptions (queueing it for offline persistent
// sessions) with min(QoS) and its MQTT 5 properties.
func (a *Adapter) fromBus(ctx context.Context, e *broker.Envelope) error {
	select {
	case <-a.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	pk, dropped, ok := packetFromEnvelope(e, time.Now())
	if !ok {
		a.metrics.expired.Add(1)
		return nil
	}
	if dropped > 0 {
		a.log.Debug("mqtt: properties MQTT cannot carry were left out", "topic", e.Topic, "count", dropped)
	}
	if e.Retain && !a.newerRetained(e) {
		// An older value reached us late (a durable backlog after a
		// restart): deliver it, but keep the newer retained value.
		pk.FixedHeader.Retain = false
	}
	a.busMu.Lock()
	a.busEnv.Store(&e.ID)
	// No wait for the copies' records here: the feed's Sync does it per
	// batch, before the bus drops the envelopes.
	_, err := a.route(a.inline, pk, busOrigin(e.ID))
	a.busEnv.Store(nil)
	a.busMu.Unlock()
	if err != nil {
		// Not acknowledged to the bus: it delivers the envelope again.
		return fmt.Errorf("mqtt: inject %q: %w", e.Topic, err)
	}
	a.metrics.fromBus.Add(1)
	return nil
}

// inject routes pk inside mochi as published by the inline client cl:
// retained when flagged, delivered to every matching subscription, and
// queued (and stored, through OnQosPublish) for offline persistent
// sessions, all before it returns. mochi counts an injected packet as
// received; the adapter takes that back, the packet having been counted
// where it came from.
func (a *Adapter) inject(cl *mochi.Client, pk packets.Packet) error {
	a.resume.RLock()
	defer a.resume.RUnlock()
	if pk.FixedHeader.Retain {
		a.treeMu.Lock()
		defer a.treeMu.Unlock()
	}
	err := a.srv.InjectPacket(cl, pk)
	if err == nil && cl != a.inline {
		atomic.AddInt64(&a.srv.Info.PacketsReceived, -1)
		atomic.AddInt64(&a.srv.Info.MessagesReceived, -1)
	}
	return err
}

// proxy returns the inline stand-in of a connected client: an inline
// client with the same id (so that MQTT 5 no-local subscriptions still
// recognize their own messages) and protocol version.
func (a *Adapter) proxy(cl *mochi.Client) *mochi.Client {
	if p, ok := a.proxies.Load(cl); ok {
		return p.(*mochi.Client)
	}
	p := a.srv.NewClient(nil, mochi.LocalListener, cl.ID, true)
	p.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	a.proxies.Store(cl, p)
	return p
}

// newerRetained records e as its topic's retained value unless a newer one
// is known, and reports whether it did.
func (a *Adapter) newerRetained(e *broker.Envelope) bool {
	a.retMu.Lock()
	defer a.retMu.Unlock()
	if cur, ok := a.retained[e.Topic]; ok && e.ID != "" && cur > e.ID {
		return false
	}
	if len(e.Payload) == 0 {
		delete(a.retained, e.Topic)
	} else {
		a.retained[e.Topic] = e.ID
	}
	return true
}

// syncBehind is the feed's SubscribeOptions.Sync: the bus removes the
// envelopes it delivered from its durable queue only once the copies they
// left in flight to connected persistent sessions are stored.
func (a *Adapter) syncBehind(context.Context) error {
	if a.sessions == nil {
		return nil
	}
	return a.sessions.behind.sync()
}
