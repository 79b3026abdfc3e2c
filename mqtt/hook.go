package mqtt

import (
	"bytes"
	"context"
	"errors"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// authTimeout bounds one authentication or authorization call.
const authTimeout = 5 * time.Second

// hook is the adapter inside mochi: authentication, ACLs, the bridge from
// client publishes to the bus, presence, and session persistence.
type hook struct {
	mochi.HookBase
	a *Adapter
}

// ID names the hook.
func (h *hook) ID() string { return "hub-mqtt" }

var (
	alwaysProvided = []byte{
		mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
		mochi.OnSessionEstablish, mochi.OnSessionEstablished, mochi.OnDisconnect,
		mochi.OnQosPublish, mochi.OnQosComplete, mochi.OnQosDropped, mochi.OnClientExpired,
		mochi.OnPublish, mochi.OnWillSent, mochi.OnPublishDropped,
		mochi.OnSubscribe, mochi.OnPacketProcessed,
	}
	storageProvided = []byte{
		mochi.OnSubscribed, mochi.OnUnsubscribed,
		mochi.StoredClients, mochi.StoredSubscriptions, mochi.StoredInflightMessages,
	}
)

// Provides says which hook methods mochi should call.
func (h *hook) Provides(b byte) bool {
	return bytes.IndexByte(alwaysProvided, b) >= 0 ||
		h.a.sessions != nil && bytes.IndexByte(storageProvided, b) >= 0
}

func (h *hook) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(h.a.ctx, authTimeout)
}

// refuse answers CONNECT with a refusal: v5 carries code and its reason
// string, v3 the return code v3.
func refuse(cl *mochi.Client, code packets.Code, v3 byte) error {
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connack},
		ReasonCode:  code.Code,
	}
	if cl.Properties.ProtocolVersion == 5 {
		ack.Properties.ReasonString = code.Reason
	} else {
		ack.ReasonCode = v3
	}
	_ = cl.WritePacket(ack)
	return code
}

// MQTT 3.1.1 CONNACK return codes.
const (
	v3BadIdentifier  = 0x02
	v3Unavailable    = 0x03
	v3BadCredentials = 0x04
	v3NotAuthorized  = 0x05
)

// OnConnect authenticates the client. It runs before mochi's own
// authentication step so that it can answer with the precise refusal
// (mochi would always say "bad username or password").
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	a := h.a
	if cl.ID == mochi.InlineClientId {
		return refuse(cl, packets.ErrClientIdentifierNotValid, v3BadIdentifier)
	}
	ctx, cancel := h.callCtx()
	defer cancel()
	name := string(pk.Connect.Username)
	anonOK := adapters.AnonymousAllowed(a.lnAddr[cl.Net.Listener], a.cfg.AllowAnonymous)
	p, err := a.auth.Authenticate(ctx, name, string(pk.Connect.Password), anonOK)
	if err != nil {
		a.metrics.authFailed.Add(1)
		a.log.Info("mqtt: connect refused", "client", cl.ID, "remote", cl.Net.Remote, "user", name, "err", err)
		switch {
		case errors.Is(err, adapters.ErrBadCredentials):
			return refuse(cl, packets.ErrBadUsernameOrPassword, v3BadCredentials)
		case errors.Is(err, adapters.ErrAuthRequired):
			return refuse(cl, packets.ErrNotAuthorized, v3NotAuthorized)
		default:
			return refuse(cl, packets.ErrServerUnavailable, v3Unavailable)
		}
	}
	if pk.Connect.WillFlag {
		if err := a.auth.Authorize(ctx, p, adapters.ActionPublish, pk.Connect.WillTopic); err != nil {
			a.metrics.authFailed.Add(1)
			a.log.Info("mqtt: connect refused: will topic", "client", cl.ID, "user", name, "err", err)
			return refuse(cl, packets.ErrNotAuthorized, v3NotAuthorized)
		}
	}
	if name != "" {
		a.roles.Store(name, p.Role)
	}
	if m := a.cfg.MaxKeepalive; m > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > m) {
		if cl.Properties.ProtocolVersion < 5 {
			// MQTT 3.1.1 cannot tell the client another keepalive; refuse
			// it as Mosquitto does with max_keepalive.
			a.metrics.authFailed.Add(1)
			a.log.Info("mqtt: connect refused: keepalive above the maximum", "client", cl.ID, "keepalive", cl.State.Keepalive, "max", m)
			return refuse(cl, packets.ErrClientIdentifierNotValid, v3BadIdentifier)
		}
		cl.State.Keepalive = m
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnConnectAuthenticate lets in the clients OnConnect accepted.
func (h *hook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnACLCheck applies adapters.Auth to a publish (write) or to a
// subscription filter and each delivery (read).
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	a := h.a
	action := adapters.ActionSubscribe
	if write {
		action = adapters.ActionPublish
	} else {
		topic = sharedFilter(topic)
	}
	err := a.authorize(a.principal(cl), action, topic)
	if err == nil {
		if !write {
			return a.makeRoom(cl) // a delivery, unless cl is subscribing
		}
		return true
	}
	if errors.Is(err, adapters.ErrForbidden) {
		a.log.Debug("mqtt: denied", "client", cl.ID, "err", err)
	} else {
		a.log.Warn("mqtt: authorization failed", "client", cl.ID, "err", err)
	}
	return false
}

// OnSessionEstablished reports device presence and stores a persistent
// session's record.
func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	a := h.a
	a.resumed(cl)
	p := a.principal(cl)
	if p.Role == adapters.RoleDevice {
		a.online.Store(cl, p.Name)
		a.presenceChange(p.Name, +1, false)
	}
	if s := a.sessions; s != nil {
		a.ownMu.Lock()
		defer a.ownMu.Unlock()
		if persistent(cl) {
			s.saveClient(cl, p.Role)
		} else {
			s.purge(cl.ID) // a persistent session this id had before
		}
	}
	if !persistent(cl) {
		a.order.forget(cl.ID)
	}
}

// OnDisconnect reports device presence and updates or forgets the stored
// session.
func (h *hook) OnDisconnect(cl *mochi.Client, _ error, expire bool) {
	a := h.a
	a.proxies.Delete(cl)
	a.ackQueues.Delete(cl) // its goroutine, if any, ends once its PUBACKs are out
	takenOver := errors.Is(cl.StopCause(), packets.ErrSessionTakenOver)
	if dev, ok := a.online.LoadAndDelete(cl); ok {
		// A session taken over by a new connection of the same client is
		// not the device going away.
		a.presenceChange(dev.(string), -1, takenOver)
	}
	if cl.Net.Conn == nil || takenOver {
		return // loaded from the store at start, or now owned by another connection
	}
	// The connection that ends may no longer own its client id: a new one
	// may have taken it (and stored or purged the session) meanwhile.
	a.ownMu.Lock()
	defer a.ownMu.Unlock()
	if cur, ok := a.srv.Clients.Get(cl.ID); ok && cur != cl {
		return
	}
	s := a.sessions
	switch {
	case expire:
		a.order.forget(cl.ID)
		if s != nil {
			s.purge(cl.ID)
		}
	case persistent(cl) && s != nil:
		s.saveClient(cl, a.principal(cl).Role)
	}
}

// toBus publishes a client's message on the bus.
func (h *hook) toBus(cl *mochi.Client, pk *packets.Packet) (*broker.Envelope, error) {
	a := h.a
	e := envelopeFromPacket(pk, broker.Origin{
		Protocol:  broker.ProtoMQTT,
		ClientID:  cl.ID,
		Remote:    cl.Net.Remote,
		Principal: string(cl.Properties.Username),
		Node:      a.cfg.Node,
	}, time.Now())
	err := a.cfg.Bus.Publish(a.ctx, e)
	if err != nil {
		a.metrics.busErrors.Add(1)
		return e, err
	}
	if e.Retain {
		a.newerRetained(e)
	}
	return e, nil
}

// OnSubscribe marks cl as subscribing (see makeRoom) and holds the
// retained-tree lock (shared) until the SUBSCRIBE,
// including the retained messages it sends, has been processed: mochi's
// wildcard scan of retained messages reads tree nodes that a concurrent
// retained publish writes without a lock (a data race inside mochi
// v2.7.9).
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if !cl.Net.Inline {
		h.a.treeMu.RLock()
		h.a.subscribing.Store(cl, struct{}{})
	}
	return pk
}

// OnPacketProcessed releases what OnSubscribe took.
func (h *hook) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, _ error) {
	if !cl.Net.Inline && pk.FixedHeader.Type == packets.Subscribe {
		h.a.subscribing.Delete(cl)
		h.a.treeMu.RUnlock()
	}
}

// OnPublish puts a client's PUBLISH on the bus, then routes it to the MQTT
// subscribers itself, all before mochi acknowledges it; see the package
// documentation.
//
// mochi would write PUBACK/PUBREC first and deliver afterwards, so a
// message queued for an offline persistent session would reach the store
// only after the publisher had its acknowledgement. Instead the hook
// injects the packet through the client's inline stand-in (delivery,
// retain, and OnQosPublish's store writes happen synchronously) and
// answers CodeSuccessIgnore: mochi then runs the publisher's QoS handshake
// as usual without delivering or retaining the packet a second time.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	a := h.a
	if cl == a.inline {
		// From the bus (fromBus holds busMu): the Origin names the
		// envelope (see busOrigin).
		if id := a.busEnv.Load(); id != nil && *id != "" {
			pk.Origin = busOrigin(*id)
		}
		return pk, nil
	}
	if cl.Net.Inline {
		return pk, nil // a stand-in's, already on the bus
	}
	_, err := h.toBus(cl, &pk)
	if err == nil {
		in := pk.Copy(false)
		in.Properties.TopicAlias, in.Properties.TopicAliasFlag = 0, false
		if in.FixedHeader.Qos > 0 && in.PacketID == 0 {
			in.PacketID = 1
		}
		var behind bool
		behind, err = a.route(a.proxy(cl), in, cl.ID)
		if err == nil && pk.FixedHeader.Qos > 0 && a.deferAck(cl, pk.PacketID, pk.FixedHeader.Qos, behind) {
			return pk, packets.ErrRejectPacket // the ackQueue sends the PUBACK or PUBREC
		}
		if err == nil {
			return pk, packets.CodeSuccessIgnore
		}
		if !errors.Is(err, errNotStored) {
			a.log.Warn("mqtt: route to MQTT subscribers", "client", cl.ID, "topic", pk.TopicName, "err", err)
			return pk, nil // let mochi deliver it itself
		}
		if pk.FixedHeader.Qos == 0 {
			return pk, packets.CodeSuccessIgnore // delivered where it could be
		}
	}
	a.refuse(cl, pk, err)
	return pk, packets.ErrRejectPacket
}

// refuse answers a publish the hub could not take: nothing at QoS 0, a
// PUBACK/PUBREC with a reason code in MQTT 5, and in MQTT 3.1.1, which
// has no negative acknowledgement, a closed connection so the client
// knows its message was not taken.
func (a *Adapter) refuse(cl *mochi.Client, pk packets.Packet, err error) {
	a.log.Warn("mqtt: publish refused", "client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "err", err)
	if pk.FixedHeader.Qos == 0 {
		return
	}
	code := reasonFor(err)
	if cl.Properties.ProtocolVersion == 5 {
		// mochi would answer a refused QoS 2 publish with PUBACK; answer
		// here with the right packet and reject it in mochi.
		typ := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			typ = packets.Pubrec
		}
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: typ},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: code.Reason},
		})
		return
	}
	cl.Stop(code)
}

// reasonFor maps a bus error to a PUBACK/PUBREC reason code.
func reasonFor(err error) packets.Code {
	switch {
	case errors.Is(err, broker.ErrStorage):
		return packets.ErrQuotaExceeded
	case errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrWildcardTopic):
		return packets.ErrTopicNameInvalid
	default:
		return packets.ErrImplementationSpecificError
	}
}

// OnWillSent puts a will message on the bus; mochi has already delivered
// it to MQTT subscribers (its will topic passed the ACL at CONNECT).
func (h *hook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	if _, err := h.toBus(cl, &pk); err != nil {
		h.a.log.Warn("mqtt: will refused by the bus", "client", cl.ID, "topic", pk.TopicName, "err", err)
	}
}

// OnSubscribed stores a persistent session's subscriptions.
func (h *hook) OnSubscribed(cl *mochi.Client, _ packets.Packet, _ []byte) {
	if persistent(cl) && !cl.IsTakenOver() {
		h.a.sessions.saveSubscriptions(cl)
	}
}

// OnUnsubscribed stores what is left of a session's subscriptions.
func (h *hook) OnUnsubscribed(cl *mochi.Client, _ packets.Packet) {
	if cl.Net.Inline || cl.IsTakenOver() {
		return
	}
	if persistent(cl) {
		h.a.sessions.saveSubscriptions(cl)
	} else {
		h.a.sessions.deleteSubscriptions(cl.ID)
	}
}

// OnQosPublish numbers a message queued for a persistent session (see
// queueOrder) and stores it, including one queued while the client is
// offline. A copy for an offline session that cannot be stored is
// reported to the routing in progress, which refuses the publish (see
// route).
func (h *hook) OnQosPublish(cl *mochi.Client, pk packets.Packet, _ int64, _ int) {
	if !persistent(cl) {
		return
	}
	var seq int64
	if pk.FixedHeader.Type == packets.Publish {
		h.a.injecting.queued(pk.Origin, cl, pk.PacketID)
		env, _ := envelopeOf(pk.Origin)
		var dup bool
		seq, dup = h.a.order.add(cl.ID, pk.PacketID, env, queuedSize(pk))
		if dup {
			if offline(cl) && h.a.injecting.duplicate(pk.Origin, cl, pk.PacketID) {
				return // taken back once the routing ends
			}
			// Already on its way to a live client: keep it consistent.
			seq, _ = h.a.order.add(cl.ID, pk.PacketID, "", queuedSize(pk))
		}
		h.a.trimBytes(cl, pk.PacketID)
	}
	s := h.a.sessions
	if s == nil {
		return
	}
	off := offline(cl)
	// A connected client's copy is written behind and synced before the
	// routing is acknowledged; the PUBREC state of a QoS 2 message the
	// client sent is written before the PUBREC goes out, so that a resend
	// after a crash is recognised, not delivered twice.
	later := !off && pk.FixedHeader.Type != packets.Pubrec
	err := s.saveInflight(cl, pk, seq, later)
	switch {
	case err != nil && pk.FixedHeader.Type == packets.Publish && off:
		h.a.injecting.notStored(pk.Origin, cl, pk.PacketID)
	case err == nil && later && pk.FixedHeader.Type == packets.Publish:
		h.a.injecting.wroteBehind(pk.Origin)
	}
}

// OnPublishDropped runs when mochi drops a delivery because the client's
// outbound queue is full; it is about to take a QoS 1/2 copy out of the
// in-flight table, which would lose it for a persistent session: the
// routing queues it again (see requeue).
func (h *hook) OnPublishDropped(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos > 0 && persistent(cl) {
		h.a.injecting.overflowed(pk.Origin, cl)
	}
}

// OnQosComplete forgets a completed message.
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	h.a.order.done(cl.ID, pk.PacketID)
	if s := h.a.sessions; s != nil {
		s.deleteInflight(cl.ID, pk.PacketID)
	}
}

// OnQosDropped forgets a dropped or expired message.
func (h *hook) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return // now the new connection's
	}
	h.a.order.done(cl.ID, pk.PacketID)
	if s := h.a.sessions; s != nil {
		s.deleteInflight(cl.ID, pk.PacketID)
	}
}

// OnClientExpired forgets a session whose expiry interval has passed.
func (h *hook) OnClientExpired(cl *mochi.Client) {
	h.a.order.forget(cl.ID)
	if s := h.a.sessions; s != nil {
		s.purge(cl.ID)
	}
}

// OnSessionEstablish runs before mochi hands a returning client its
// session and resends what is in flight: it puts that in queueing order.
func (h *hook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		return
	}
	if old, ok := h.a.srv.Clients.Get(cl.ID); ok && old != cl {
		h.a.pauseForResume(cl)
		// mochi resends without looking at expiry, and its expiry sweep
		// runs on a timer: drop what has expired before the resend.
		old.ClearExpiredInflights(time.Now().Unix(), 0)
		h.a.order.reorder(old)
	}
}

// StoredClients returns the persistent sessions, and learns their roles.
func (h *hook) StoredClients() ([]storage.Client, error) {
	cls, roles, err := h.a.sessions.loadClients()
	for name, role := range roles {
		h.a.roles.LoadOrStore(name, role)
	}
	return cls, err
}

// StoredSubscriptions returns the persistent sessions' subscriptions.
func (h *hook) StoredSubscriptions() ([]storage.Subscription, error) {
	return h.a.sessions.loadSubscriptions()
}

// StoredInflightMessages returns the messages queued for persistent
// sessions, and restores their order and expiry.
func (h *hook) StoredInflightMessages() ([]storage.Message, error) {
	recs, err := h.a.sessions.loadInflight()
	msgs := make([]storage.Message, len(recs))
	h.a.expires = make(map[string]int64)
	for i, r := range recs {
		msgs[i] = r.Message
		if r.Seq > 0 {
			env, _ := envelopeOf(r.Origin)
			h.a.order.set(r.Client, r.PacketID, r.Seq, env, len(r.TopicName)+len(r.Payload))
		}
		if r.Expiry != 0 {
			h.a.expires[inflightKey(r.Client, r.PacketID)] = r.Expiry
		}
	}
	return msgs, err
}
