package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// SessionStore is the key/value storage that keeps the records of
// persistent MQTT sessions (who owns the client id, the session expiry)
// across restarts; their subscriptions and queues are the bus's durable
// subscriptions. *store.Store implements it.
type SessionStore interface {
	KVPut(ctx context.Context, bucket, key string, value []byte) error
	KVGet(ctx context.Context, bucket, key string) ([]byte, error)
	KVDelete(ctx context.Context, bucket, key string) error
	KVList(ctx context.Context, bucket string) ([]store.KV, error)
}

var _ SessionStore = (*store.Store)(nil)

// Buckets of the session store.
const (
	bucketSessions = "mqtt.sessions"
	// bucketPubrec holds the packet ids of QoS 2 messages a client sent
	// and the hub took but whose PUBREL has not come: a resend after a
	// restart is answered, not published again.
	bucketPubrec = "mqtt.pubrec"
)

// SessionBuckets are the buckets the adapter keeps in its SessionStore,
// for a store that makes its buckets ahead of use.
var SessionBuckets = []string{bucketSessions, bucketPubrec}

// storeTimeout bounds one session-store operation.
const storeTimeout = 5 * time.Second

// sessionRecord is a stored persistent session.
type sessionRecord struct {
	// User and Role are the owner of the client id.
	User string `json:"user,omitempty"`
	Role string `json:"role,omitempty"`
	// Expiry is the MQTT 5 session expiry interval in seconds (0 for an
	// MQTT 3.1.1 persistent session, which never expires).
	Expiry uint32 `json:"expiry,omitempty"`
	// Gone is when the last connection ended (Unix seconds; 0 while
	// connected).
	Gone int64 `json:"gone,omitempty"`
}

// expired reports whether a session that ended at Gone has outlived its
// expiry interval.
func (r sessionRecord) expired(now time.Time) bool {
	return r.Expiry > 0 && r.Expiry != noExpiry && r.Gone > 0 && now.Unix() >= r.Gone+int64(r.Expiry)
}

// noExpiry is the MQTT 5 session expiry interval that never ends.
const noExpiry = 0xFFFFFFFF

// subscriberID is the bus subscription of a client's session.
func subscriberID(clientID string) string { return "mqtt:" + clientID }

// DroppedTopic is where the bus reports a client's queue overflow:
// $hub/clients/{clientid}/dropped, the client id escaped as a URL path
// segment (and "+" as %2B) so that it is one topic level.
func DroppedTopic(clientID string) string {
	return "$hub/clients/" + strings.ReplaceAll(url.PathEscape(clientID), "+", "%2B") + "/dropped"
}

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mochi.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// outbound is a QoS 1/2 delivery written to the client and not yet
// acknowledged by it.
type outbound struct {
	d   *broker.Delivery
	rel bool // PUBREC came and PUBREL went (QoS 2)
}

// session is one client id's bus subscription and the packet ids of what
// is out to the client. The bus owns the queue, the window, the order and
// redelivery; the session only numbers packets and turns acknowledgement
// packets into acks of deliveries.
type session struct {
	a       *Adapter
	id      string
	durable bool

	mu sync.Mutex
	cl *mochi.Client // the connection delivering, nil while away
	// sub is nil for a session that is not durable until its first
	// SUBSCRIBE makes it (ensureSub): a client that only publishes costs
	// the bus nothing.
	sub     broker.Subscription
	out     map[uint16]outbound // by value: no allocation per delivery
	byEnv   map[string]uint16   // envelope id -> packet id, for resends with the same id
	nextPID uint16
}

func (a *Adapter) newSession(id string, durable bool) *session {
	return &session{a: a, id: id, durable: durable, out: make(map[uint16]outbound), byEnv: make(map[string]uint16)}
}

// conn returns the connection deliveries go to, nil while away.
func (s *session) conn() *mochi.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cl
}

// sessionQueueLen bounds the deliveries waiting in memory for one
// client's connection: a burst the delivery goroutine has not written yet
// waits there (past it QoS 0 is dropped and counted; a persistent
// session's QoS 1/2 stays in its durable queue). A client that does not
// read is cut by the pending-write bound of its connection instead.
const sessionQueueLen = 16384

// window is a client's delivery window: its Receive Maximum (MQTT 5),
// capped by MaxInflight.
func (a *Adapter) window(cl *mochi.Client) int {
	w := int(a.cfg.MaxInflight)
	if cl.Properties.ProtocolVersion == 5 {
		if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < w {
			w = rm
		}
	}
	return w
}

// attach makes cl the connection of its session: a new bus subscription
// for a clean start, the durable one found again for a persistent session
// (which first redelivers, in order, what was not acknowledged).
func (a *Adapter) attach(cl *mochi.Client, clean bool) error {
	p := a.principal(cl)
	a.smu.Lock()
	defer a.smu.Unlock()
	s := a.sessions[cl.ID]
	_, stored := a.record(cl.ID)
	// A client that does not start clean resumes its durable session
	// whatever expiry it asks for now: that only decides whether the
	// session outlives this connection (see OnDisconnect).
	resume := !clean && (s != nil && s.durable || stored)
	durable := a.cfg.Sessions != nil && (persistent(cl) || resume)
	if s != nil {
		s.detach(nil)
		if clean || !durable || !s.durable {
			if sub := s.subscription(); sub != nil {
				_ = sub.Unsubscribe()
			}
			s = nil
		}
	}
	if s == nil && clean && stored {
		// A durable subscription from before a restart: a clean start
		// discards it.
		if err := broker.Forget(a.ctx, a.cfg.Bus, subscriberID(cl.ID)); err != nil {
			return fmt.Errorf("mqtt: discard the session of %q: %w", cl.ID, err)
		}
	}
	if s == nil {
		s = a.newSession(cl.ID, durable)
	}
	s.mu.Lock()
	s.cl = cl
	if !durable {
		// It ends with this connection and has no filters yet.
		s.mu.Unlock()
		a.sessions[cl.ID] = s
		return nil
	}
	s.mu.Unlock()
	sub, err := a.cfg.Bus.Consume(a.ctx, a.subscribeOptions(cl, p, durable, resume), s.deliver)
	if err != nil {
		s.mu.Lock()
		s.cl = nil
		s.mu.Unlock()
		return fmt.Errorf("mqtt: session of %q: %w", cl.ID, err)
	}
	s.mu.Lock()
	s.sub = sub
	s.mu.Unlock()
	a.sessions[cl.ID] = s
	return nil
}

// subscribeOptions are the options of cl's bus subscription; p is its
// principal, resume whether it carries on a stored session.
func (a *Adapter) subscribeOptions(cl *mochi.Client, p adapters.Principal, durable, resume bool) broker.SubscribeOptions {
	opts := broker.SubscribeOptions{
		ID:             subscriberID(cl.ID),
		QoS:            2,
		Durable:        durable,
		MaxAckPending:  a.window(cl),
		QueueLen:       sessionQueueLen,
		MaxQueued:      int(a.cfg.MaxQueued),
		MaxQueuedBytes: a.cfg.MaxQueuedBytes,
		QueuePolicy:    a.cfg.QueuePolicy,
		DroppedTopic:   DroppedTopic(cl.ID),
		Self:           broker.Origin{Protocol: broker.ProtoMQTT, ClientID: cl.ID},
		Principal:      p.Name, // its queue counts against the user's quota
		Protocol:       broker.ProtoMQTT,
		Allow:          a.reader(p, cl.ID),
	}
	opts.KeepFilters = resume
	return opts
}

// subscription returns the session's bus subscription, nil while a
// session that is not durable has had no SUBSCRIBE.
func (s *session) subscription() broker.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sub
}

// errSessionGone: the connection no longer has the session it subscribed
// in (taken over, or ended).
var errSessionGone = errors.New("mqtt: the session is no longer this connection's")

// ensureSub returns s's bus subscription for cl, made now if s, not
// durable, has none yet.
func (a *Adapter) ensureSub(s *session, cl *mochi.Client) (broker.Subscription, error) {
	// Under smu, as attach and OnDisconnect replace and end sessions:
	// none is made for a session that is no longer cl's.
	a.smu.Lock()
	defer a.smu.Unlock()
	s.mu.Lock()
	sub, cur := s.sub, s.cl
	s.mu.Unlock()
	if sub != nil {
		return sub, nil
	}
	if s.durable || cur != cl || a.sessions[cl.ID] != s {
		return nil, errSessionGone
	}
	sub, err := a.cfg.Bus.Consume(a.ctx, a.subscribeOptions(cl, a.principal(cl), false, false), s.deliver)
	if err != nil {
		return nil, fmt.Errorf("mqtt: session of %q: %w", cl.ID, err)
	}
	s.mu.Lock()
	s.sub = sub
	s.mu.Unlock()
	return sub, nil
}

// detach ends delivery to cl (nil: whichever connection has it): what is
// out and unacknowledged comes again when the client returns.
func (s *session) detach(cl *mochi.Client) {
	s.mu.Lock()
	if cl != nil && s.cl != cl {
		s.mu.Unlock()
		return
	}
	s.cl = nil
	sub := s.sub
	s.mu.Unlock()
	if sub != nil {
		_ = sub.Detach()
	}
	s.mu.Lock()
	for pid, o := range s.out {
		if o.d.QoS == 0 {
			delete(s.out, pid)
		}
	}
	s.mu.Unlock()
}

// deliver is the session's broker.DeliveryHandler: it writes the PUBLISH
// (or, for a QoS 2 message whose PUBREC came before a reconnect, the
// PUBREL) and leaves a QoS 1/2 delivery in the window until the client
// acknowledges it.
func (s *session) deliver(d *broker.Delivery) {
	a := s.a
	// The clock is read only for an expiry (the time left); Created is
	// the envelope's time otherwise.
	now := d.Envelope.Time
	if !d.Envelope.Expiry.IsZero() || now.IsZero() {
		now = time.Now()
	}
	pk, dropped, ok := packetFromEnvelope(d.Envelope, now)
	if !ok {
		a.metrics.expired.Add(1)
		d.Ack()
		return
	}
	if dropped > 0 {
		a.log.Debug("mqtt: properties MQTT cannot carry were left out", "topic", d.Envelope.Topic, "count", dropped)
	}
	pk.FixedHeader.Qos = d.QoS
	pk.FixedHeader.Retain = d.RetainFlag
	s.mu.Lock()
	cl := s.cl
	if cl == nil || cl.Closed() {
		s.mu.Unlock()
		if d.QoS == 0 {
			d.Ack()
		}
		return // in the window until the detach: delivered again then
	}
	if cl.Properties.ProtocolVersion == 5 && len(d.IDs) > 0 {
		pk.Properties.SubscriptionIdentifier = d.IDs
	}
	if d.QoS > 0 {
		pid, again := s.byEnv[d.Envelope.ID]
		if again && d.Redelivered {
			if o, ok := s.out[pid]; ok && o.rel {
				o.d = d
				s.out[pid] = o
				s.mu.Unlock()
				a.writePacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pid})
				return
			}
			pk.FixedHeader.Dup = true
		} else {
			var ok bool
			if pid, ok = s.allocate(); !ok {
				s.mu.Unlock()
				a.log.Warn("mqtt: no packet id free: the client acknowledges nothing", "client", s.id)
				cl.Stop(packets.ErrReceiveMaximum)
				return
			}
			s.byEnv[d.Envelope.ID] = pid
		}
		pk.PacketID = pid
		s.out[pid] = outbound{d: d}
	}
	s.mu.Unlock()
	a.metrics.delivered.Add(1)
	if err := a.writePacket(cl, pk); err != nil && d.QoS == 0 {
		d.Ack()
		return
	}
	if d.QoS == 0 {
		d.Ack()
	}
}

// writePacket writes pk to cl, logging a failure (the connection is then
// closing: a persistent session gets it again on return).
func (a *Adapter) writePacket(cl *mochi.Client, pk packets.Packet) error {
	err := cl.WritePacket(pk)
	if err != nil && !errors.Is(err, mochi.ErrConnectionClosed) {
		a.log.Debug("mqtt: write to client", "client", cl.ID, "type", pk.FixedHeader.Type, "err", err)
	}
	return err
}

// allocate returns a packet id no delivery of the session holds (s.mu
// held). Outbound ids are the session's own: the client's ids (its
// publishes, subscribes) are another space.
func (s *session) allocate() (uint16, bool) {
	for range 65535 {
		s.nextPID++
		if s.nextPID == 0 {
			s.nextPID = 1
		}
		if _, used := s.out[s.nextPID]; !used {
			return s.nextPID, true
		}
	}
	return 0, false
}

// acked handles a PUBACK, PUBREC or PUBCOMP from the client.
func (s *session) acked(cl *mochi.Client, pk packets.Packet) {
	s.mu.Lock()
	o, found := s.out[pk.PacketID]
	var done *broker.Delivery
	var rel bool
	switch {
	case !found:
	case pk.FixedHeader.Type == packets.Pubrec && pk.ReasonCode < packets.ErrUnspecifiedError.Code:
		o.rel, rel = true, true
		s.out[pk.PacketID] = o
	default: // PUBACK, PUBCOMP, or a PUBREC refusing the message
		done = o.d
		delete(s.out, pk.PacketID)
		if s.byEnv[o.d.Envelope.ID] == pk.PacketID {
			delete(s.byEnv, o.d.Envelope.ID)
		}
	}
	s.mu.Unlock()
	switch {
	case !found && pk.FixedHeader.Type == packets.Pubrec:
		// Unknown id: answer as the spec says, so the client's flow ends.
		code := packets.ErrPacketIdentifierNotFound.Code
		if cl.Properties.ProtocolVersion < 5 {
			code = 0
		}
		_ = s.a.writePacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID, ReasonCode: code})
	case rel:
		_ = s.a.writePacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID})
	case done != nil:
		done.Ack()
	}
}

// inflight counts the deliveries out to clients and not acknowledged.
func (a *Adapter) inflight() int {
	a.smu.Lock()
	defer a.smu.Unlock()
	n := 0
	for _, s := range a.sessions {
		s.mu.Lock()
		n += len(s.out)
		s.mu.Unlock()
	}
	return n
}

// reader is the access check the bus runs on every envelope delivered to
// a client of principal p: adapters.Auth.CanRead, as in every protocol, so
// a revoked right, a role change or the principal's deletion stops
// deliveries to an open session too. The client's own $hub/clients/{id}/
// topics are readable besides (ownClientTopic).
func (a *Adapter) reader(p adapters.Principal, clientID string) func(*broker.Envelope) bool {
	return func(e *broker.Envelope) bool {
		// Per delivery: a cached decision costs no context and timer.
		err, ok := a.auth.CanReadCached(p, e.Topic)
		if !ok {
			ctx, cancel := context.WithTimeout(a.ctx, authTimeout)
			err = a.auth.CanRead(ctx, p, e.Topic)
			cancel()
		}
		if errors.Is(err, adapters.ErrForbidden) && ownClientTopic(p, clientID, e.Topic) {
			return true
		}
		if err != nil && !errors.Is(err, adapters.ErrForbidden) {
			a.log.Warn("mqtt: read check failed", "topic", e.Topic, "err", err)
		}
		return err == nil
	}
}

// record returns the stored session of a client id.
func (a *Adapter) record(id string) (sessionRecord, bool) {
	var r sessionRecord
	if a.cfg.Sessions == nil {
		return r, false
	}
	ctx, cancel := context.WithTimeout(a.ctx, storeTimeout)
	defer cancel()
	b, err := a.cfg.Sessions.KVGet(ctx, bucketSessions, id)
	if err != nil {
		return r, false
	}
	return a.decodeRecord(id, b)
}

// decodeRecord decodes the stored record b of client id; false (and a
// warning) when it is damaged.
func (a *Adapter) decodeRecord(id string, b []byte) (sessionRecord, bool) {
	var r sessionRecord
	if err := json.Unmarshal(b, &r); err != nil {
		a.log.Warn("mqtt: damaged session record, ignored", "client", id, "err", err)
		return r, false
	}
	return r, true
}

// saveRecord stores the record of a persistent session.
func (a *Adapter) saveRecord(id string, r sessionRecord) {
	b, _ := json.Marshal(r)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), storeTimeout)
	defer cancel()
	if err := a.cfg.Sessions.KVPut(ctx, bucketSessions, id, b); err != nil {
		a.log.Error("mqtt: store session record", "client", id, "err", err)
	}
}

// forget ends a session for good: its record, its bus subscription and
// queue.
func (a *Adapter) forget(id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), storeTimeout)
	defer cancel()
	a.smu.Lock()
	if s := a.sessions[id]; s != nil && s.conn() != nil {
		a.smu.Unlock()
		return // connected again meanwhile: the session is that connection's
	} else if s != nil {
		delete(a.sessions, id)
	}
	// Under smu, so that a connection of the client id arriving meanwhile
	// finds either the session or nothing, not a queue being deleted.
	if err := broker.Forget(ctx, a.cfg.Bus, subscriberID(id)); err != nil {
		a.log.Warn("mqtt: forget session", "client", id, "err", err)
	}
	a.smu.Unlock()
	if a.cfg.Sessions != nil {
		a.dropRecord(ctx, id)
	}
}

// sweepInterval is how often expired sessions are looked for.
const sweepInterval = 5 * time.Second

// sweep forgets the persistent sessions whose expiry interval has passed
// since their connection ended.
func (a *Adapter) sweep() {
	if a.cfg.Sessions == nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, storeTimeout)
	kvs, err := a.cfg.Sessions.KVList(ctx, bucketSessions)
	cancel()
	if err != nil {
		return
	}
	now := time.Now()
	for _, kv := range kvs {
		var r sessionRecord
		if json.Unmarshal(kv.Value, &r) == nil && !r.expired(now) && r.User != "" {
			// Sessions stored before a restart count against their
			// user's bound (and are never refused: see admit).
			a.auth.Limits().KeepSession(r.User, kv.Key)
		}
		if json.Unmarshal(kv.Value, &r) == nil && r.expired(now) {
			a.smu.Lock()
			s := a.sessions[kv.Key]
			a.smu.Unlock()
			if s != nil && s.conn() != nil {
				continue
			}
			a.log.Info("mqtt: session expired", "client", kv.Key)
			a.forget(kv.Key)
		}
	}
}

// sweeper runs sweep until the adapter stops.
func (a *Adapter) sweeper() {
	defer a.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		a.sweep()
		select {
		case <-t.C:
		case <-a.ctx.Done():
			return
		}
	}
}
