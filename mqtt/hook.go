package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// authTimeout bounds one authentication or authorization call.
const authTimeout = 5 * time.Second

// hook is the adapter inside mochi: mochi runs the wire (packets, the
// client's own QoS handshakes, keepalive, wills) and the hook translates:
// authentication and ACLs, a client's PUBLISH onto the bus, SUBSCRIBE and
// UNSUBSCRIBE into the filters of the client's bus subscription, and the
// client's PUBACK, PUBREC and PUBCOMP into acknowledgements of its bus
// deliveries. mochi routes and retains nothing itself.
type hook struct {
	mochi.HookBase
	a *Adapter
}

// ID names the hook.
func (h *hook) ID() string { return "hub-mqtt" }

var provided = []byte{
	mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
	mochi.OnSessionEstablish, mochi.OnSessionEstablished, mochi.OnDisconnect,
	mochi.OnPublish, mochi.OnWillSent, mochi.OnPacketRead, mochi.OnPacketEncode,
	mochi.OnSubscribe, mochi.OnSubscribed, mochi.OnPacketProcessed, mochi.OnUnsubscribed,
	mochi.OnQosComplete, mochi.OnQosDropped, mochi.OnClientExpired, mochi.OnSysInfoTick,
}

// Provides says which hook methods mochi should call.
func (h *hook) Provides(b byte) bool { return bytes.IndexByte(provided, b) >= 0 }

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
// (mochi would always say "bad username or password"). A client id whose
// persistent session belongs to another principal is refused: taking it
// over would hand that principal's queued messages to someone else.
//
// A will topic that is no topic name (a wildcard, say) is refused before
// anything else: MQTT 5 gets CONNACK 0x90 (topic name invalid); MQTT
// 3.1.1, which has no code for it, has its connection closed without a
// CONNACK, as Mosquitto does with a protocol error.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	a := h.a
	if pk.Connect.WillFlag {
		if err := broker.ValidateTopic(pk.Connect.WillTopic); err != nil {
			a.metrics.authFailed.Add(1)
			a.log.Info("mqtt: connect refused: will topic", "client", cl.ID, "topic", pk.Connect.WillTopic, "err", err)
			if cl.Properties.ProtocolVersion == 5 {
				return refuse(cl, packets.ErrTopicNameInvalid, 0)
			}
			return fmt.Errorf("will topic %q: %w", pk.Connect.WillTopic, packets.ErrProtocolViolation)
		}
	}
	name := string(pk.Connect.Username)
	if err := admitAddress(cl); err != nil {
		a.log.Info("mqtt: connect refused: limit", "client", cl.ID, "remote", cl.Net.Remote, "err", err)
		return refuse(cl, limitRefusal(err), v3Unavailable)
	}
	ctx, cancel := h.callCtx()
	defer cancel()
	anonOK := adapters.AnonymousAllowed(a.lnAddr[cl.Net.Listener], a.cfg.AllowAnonymous)
	if a.cfg.RequireTLS && cl.Net.Listener != "mqtts" && anonOK != adapters.AnonymousLocal &&
		(pk.Connect.UsernameFlag || pk.Connect.PasswordFlag) {
		a.metrics.authFailed.Add(1)
		a.log.Warn("mqtt: connect refused: credentials in clear", "client", cl.ID, "remote", cl.Net.Remote, "user", name, "listener", cl.Net.Listener)
		return refuse(cl, packets.ErrNotAuthorized, v3NotAuthorized)
	}
	lctx := adapters.WithLoginSource(ctx, adapters.LoginSource{Protocol: broker.ProtoMQTT, Remote: cl.Net.Remote})
	p, err := a.auth.Authenticate(lctx, name, string(pk.Connect.Password), anonOK)
	if err != nil {
		a.metrics.authFailed.Add(1)
		a.log.Info("mqtt: connect refused", "client", cl.ID, "remote", cl.Net.Remote, "user", name, "err", err)
		switch {
		case errors.Is(err, adapters.ErrTooManyAttempts):
			// MQTT 5 has a code for it; 3.1.1 hears bad credentials.
			return refuse(cl, packets.ErrConnectionRateExceeded, v3BadCredentials)
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
	if r, ok := a.record(cl.ID); ok && r.User != name {
		a.metrics.authFailed.Add(1)
		a.log.Info("mqtt: connect refused: the client id's session belongs to another principal", "client", cl.ID, "user", name)
		return refuse(cl, packets.ErrNotAuthorized, v3NotAuthorized)
	}
	if pk.Connect.WillFlag {
		if err := a.auth.Limits().CheckTopic(pk.Connect.WillTopic); err != nil {
			a.log.Info("mqtt: connect refused: will topic", "client", cl.ID, "user", name, "err", err)
			if cl.Properties.ProtocolVersion == 5 {
				return refuse(cl, packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: err.Error()}, 0)
			}
			return fmt.Errorf("will topic: %w: %w", err, packets.ErrProtocolViolation)
		}
	}
	if err := a.admit(cl, name); err != nil {
		a.log.Info("mqtt: connect refused: limit", "client", cl.ID, "remote", cl.Net.Remote, "user", name, "err", err)
		return refuse(cl, limitRefusal(err), v3Unavailable)
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

// errRejectPacket is packets.ErrRejectPacket boxed once: returned as an
// error, the struct value would be allocated on every publish.
var errRejectPacket error = packets.ErrRejectPacket

// OnConnectAuthenticate lets in the clients OnConnect accepted.
func (h *hook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnACLCheck applies adapters.Auth to the filters of a SUBSCRIBE, where a
// filter under the client's own $hub/clients/{id}/ is allowed besides
// (ownClientTopic). Any
// other read is mochi delivering on its own (its $SYS
// topics, a will, its retained tree), which the hub does through the bus:
// refused.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	a := h.a
	if write {
		return true // OnPublish checks, to answer as each version wants
	}
	if _, ok := a.subscribing.Load(cl); !ok {
		return false
	}
	_, topic = splitShared(topic)
	p := a.principal(cl)
	err := a.authorize(p, adapters.ActionSubscribe, topic)
	if err == nil {
		return true
	}
	if errors.Is(err, adapters.ErrForbidden) && ownClientTopic(p, cl.ID, topic) {
		return true // the client's own $hub/clients/{id}/... (see reader)
	}
	if errors.Is(err, adapters.ErrForbidden) {
		a.log.Debug("mqtt: denied", "client", cl.ID, "err", err)
	} else {
		a.log.Warn("mqtt: authorization failed", "client", cl.ID, "err", err)
	}
	return false
}

// OnSessionEstablish runs before mochi looks for the client's session: it
// notes whether the bus holds one to resume, for the CONNACK.
func (h *hook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	a := h.a
	present := false
	if !pk.Connect.Clean {
		a.smu.Lock()
		s := a.sessions[cl.ID]
		a.smu.Unlock()
		if s != nil {
			present = s.durable || s.conn() != nil
		} else {
			_, present = a.record(cl.ID)
		}
	}
	a.present.Store(cl, present)
}

// OnSessionEstablished attaches the client's bus subscription once the
// CONNACK is out, reports device presence and stores a persistent
// session's record.
func (h *hook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	a := h.a
	a.present.Delete(cl)
	if err := a.attach(cl, pk.Connect.Clean); err != nil {
		a.log.Warn("mqtt: session refused", "client", cl.ID, "err", err)
		_ = a.srv.DisconnectClient(cl, packets.ErrServerUnavailable)
		return
	}
	p := a.principal(cl)
	if p.Role == adapters.RoleDevice {
		a.online.Store(cl, p.Name)
		a.presenceChange(p.Name, +1, false)
	}
	if persistent(cl) && a.cfg.Sessions != nil {
		r := sessionRecord{User: p.Name, Role: p.Role}
		if cl.Properties.ProtocolVersion == 5 {
			r.Expiry = cl.Properties.Props.SessionExpiryInterval
		}
		a.saveRecord(cl.ID, r)
	} else if a.cfg.Sessions != nil && pk.Connect.Clean {
		ctx, cancel := context.WithTimeout(a.ctx, storeTimeout)
		a.dropRecord(ctx, cl.ID)
		cancel()
	}
}

// OnDisconnect reports device presence and detaches the client's session:
// a persistent one keeps collecting, a clean one ends.
//
// A client closed by Revoke ends its session for good, as if it expired.
func (h *hook) OnDisconnect(cl *mochi.Client, _ error, expire bool) {
	a := h.a
	if a.isRevoked(cl) {
		expire = true
		defer a.revokeDone(cl)
	}
	a.present.Delete(cl)
	a.ackQueues.Delete(cl) // its goroutine, if any, ends once its acknowledgements are out
	takenOver := errors.Is(cl.StopCause(), packets.ErrSessionTakenOver)
	if dev, ok := a.online.LoadAndDelete(cl); ok {
		// A session taken over by a new connection of the same client is
		// not the device going away.
		a.presenceChange(dev.(string), -1, takenOver)
	}
	a.smu.Lock()
	s := a.sessions[cl.ID]
	if s == nil || s.conn() != cl {
		a.smu.Unlock()
		return // never attached, or now another connection's
	}
	ending := expire || !s.durable
	if ending {
		// Ended under smu, as attach replaces a session under it: a new
		// connection of the client id must not subscribe before this
		// subscription is gone (the bus takes one subscriber per id), or
		// it is refused after its CONNACK.
		delete(a.sessions, cl.ID)
		s.detach(cl)
		if sub := s.subscription(); sub != nil {
			if err := sub.Unsubscribe(); err != nil {
				a.log.Warn("mqtt: end session", "client", cl.ID, "err", err)
			}
		}
	}
	a.smu.Unlock()
	if !ending {
		s.detach(cl)
	}
	switch {
	case ending:
		if a.cfg.Sessions != nil && s.durable {
			a.forget(cl.ID)
		}
	case a.cfg.Sessions != nil:
		p := a.principal(cl)
		r := sessionRecord{User: p.Name, Role: p.Role, Gone: time.Now().Unix()}
		if cl.Properties.ProtocolVersion == 5 {
			r.Expiry = cl.Properties.Props.SessionExpiryInterval
		}
		// Not when a new connection of the client id has taken the
		// session over meanwhile: its record is its own.
		a.smu.Lock()
		mine := a.sessions[cl.ID] == s && s.conn() == nil
		a.smu.Unlock()
		if mine {
			a.saveRecord(cl.ID, r)
		}
	}
}

// OnClientExpired forgets a session whose expiry interval has passed.
func (h *hook) OnClientExpired(cl *mochi.Client) { h.a.forget(cl.ID) }

// envelopeOf is the bus envelope of a client's PUBLISH; principal is the
// client's user name (string(cl.Properties.Username), made once a publish).
func (a *Adapter) envelopeOf(cl *mochi.Client, pk *packets.Packet, principal string) *broker.Envelope {
	now := time.Now()
	e := envelopeFromPacket(pk, broker.Origin{
		Protocol:  broker.ProtoMQTT,
		ClientID:  cl.ID,
		Remote:    cl.Net.Remote,
		Principal: principal,
		Node:      a.cfg.Node,
	}, now)
	e.ID = broker.NewIDAt(now) // the bus would read the clock again for it
	return e
}

// toBus publishes a client's message on the bus and waits until it is
// durable.
func (h *hook) toBus(cl *mochi.Client, pk *packets.Packet, principal string) error {
	a := h.a
	if err := a.cfg.Bus.Publish(a.ctx, a.envelopeOf(cl, pk, principal)); err != nil {
		a.metrics.busErrors.Add(1)
		return err
	}
	return nil
}

// publishEnvelope puts a client's message on the bus, in order, and calls
// done once it is durable.
func (a *Adapter) publishEnvelope(cl *mochi.Client, pk *packets.Packet, principal string, done func(error)) error {
	return a.cfg.Bus.PublishAsync(a.ctx, a.envelopeOf(cl, pk, principal), done)
}

// mayPublish checks a client's publish: the ACL, and $SYS, which only the
// hub writes.
func (a *Adapter) mayPublish(cl *mochi.Client, p adapters.Principal, topic string) error {
	if topic == "$SYS" || strings.HasPrefix(topic, "$SYS/") {
		return fmt.Errorf("%w: $SYS topics are the hub's", adapters.ErrForbidden)
	}
	err := a.authorize(p, adapters.ActionPublish, topic)
	if err != nil && !errors.Is(err, adapters.ErrForbidden) {
		a.log.Warn("mqtt: authorization failed", "client", cl.ID, "err", err)
	}
	return err
}

// pubrecKey names the stored PUBREC state of a client's QoS 2 message.
func pubrecKey(clientID string, pid uint16) string {
	return clientID + "/" + strconv.Itoa(int(pid))
}

// OnPublish puts a client's PUBLISH on the bus, which delivers it to
// every subscriber, MQTT sessions included; mochi neither routes nor
// retains it. A QoS 0 message is done then (CodeSuccessIgnore). A QoS 1/2
// one is acknowledged only once the bus has made it durable: its PUBACK or
// PUBREC waits in the client's ackQueue (mochi is told to leave it,
// ErrRejectPacket) while the client's reading goes on.
//
// A QoS 2 resend (DUP) whose PUBREC state a persistent session stored
// before a restart is acknowledged and not published twice.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	a := h.a
	if cl.Net.Inline {
		return pk, packets.CodeSuccessIgnore
	}
	if err := a.auth.Limits().CheckTopic(pk.TopicName); err != nil {
		a.metrics.denied.Add(1)
		a.refuse(cl, pk, err)
		return pk, errRejectPacket
	}
	p := a.principal(cl)
	if err := a.mayPublish(cl, p, pk.TopicName); err != nil {
		a.metrics.denied.Add(1)
		if cl.Properties.ProtocolVersion == 5 {
			a.refuse(cl, pk, err)
			return pk, errRejectPacket
		}
		// MQTT 3.1.1 has no negative acknowledgement: the message is
		// acknowledged and dropped, as Mosquitto does.
		return pk, packets.CodeSuccessIgnore
	}
	if pk.FixedHeader.Qos == 2 && pk.FixedHeader.Dup && persistent(cl) && a.cfg.Sessions != nil {
		ctx, cancel := context.WithTimeout(a.ctx, storeTimeout)
		_, err := a.cfg.Sessions.KVGet(ctx, bucketPubrec, pubrecKey(cl.ID, pk.PacketID))
		cancel()
		if err == nil {
			return pk, packets.CodeSuccessIgnore // taken before a restart
		}
	}
	name := "" // the envelope's Origin.Principal: the user name, "" when anonymous
	if len(cl.Properties.Username) > 0 {
		name = p.Name
	}
	if pk.FixedHeader.Qos == 0 {
		if err := h.toBus(cl, &pk, name); err != nil {
			a.refuse(cl, pk, err)
		}
		return pk, packets.CodeSuccessIgnore
	}
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	a.publishAsync(cl, pk, name)
	return pk, errRejectPacket
}

// OnQosComplete forgets the PUBREC state of a client's QoS 2 message once
// its PUBREL came.
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Pubrel && persistent(cl) && h.a.cfg.Sessions != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(h.a.ctx), storeTimeout)
		_ = h.a.cfg.Sessions.KVDelete(ctx, bucketPubrec, pubrecKey(cl.ID, pk.PacketID))
		cancel()
	}
}

// OnQosDropped is OnQosComplete for a flow the client ended with an error.
func (h *hook) OnQosDropped(cl *mochi.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

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

// refuseSys answers a client's PUBLISH to a $SYS topic.
func (a *Adapter) refuseSys(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 {
		return
	}
	typ := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pk.PacketID}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = packets.ErrNotAuthorized.Code
		ack.Properties.ReasonString = "$SYS topics are the hub's"
	}
	_ = a.writePacket(cl, ack)
}

// reasonFor maps a bus error to a PUBACK/PUBREC reason code.
func reasonFor(err error) packets.Code {
	switch {
	case errors.Is(err, broker.ErrStorage):
		return packets.ErrQuotaExceeded
	case errors.Is(err, adapters.ErrForbidden):
		return packets.ErrNotAuthorized
	case errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrWildcardTopic), errors.Is(err, adapters.ErrTopicTooLong):
		return packets.ErrTopicNameInvalid
	default:
		return packets.ErrImplementationSpecificError
	}
}

// OnWillSent puts a will message on the bus, which delivers it to every
// subscriber (mochi's own delivery reaches nobody: see OnACLCheck).
func (h *hook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	if err := h.toBus(cl, &pk, string(cl.Properties.Username)); err != nil {
		h.a.log.Warn("mqtt: will refused by the bus", "client", cl.ID, "topic", pk.TopicName, "err", err)
	}
}

// OnPacketRead takes the client's acknowledgements of deliveries (PUBACK,
// PUBREC, PUBCOMP: all about messages the hub sent) to its session, and
// hands mochi a PUBACK of packet id 0 instead, which it ignores: the
// outbound ids are the session's, not mochi's.
//
// A PUBLISH to a $SYS topic, which mochi would drop without a word, is
// answered here: refused in MQTT 5 (0x87), acknowledged and dropped in
// MQTT 3.1.1, as Mosquitto does.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
	case packets.Publish:
		if len(pk.TopicName) >= 4 && strings.EqualFold(pk.TopicName[:4], "$SYS") {
			h.a.metrics.denied.Add(1)
			h.a.refuseSys(cl, pk)
			return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: pk.ProtocolVersion}, nil
		}
		return pk, nil
	default:
		return pk, nil
	}
	if s := h.a.sessionOf(cl); s != nil {
		s.acked(cl, pk)
	}
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: pk.ProtocolVersion}, nil
}

// OnPacketEncode sets what the hub knows and mochi does not in a CONNACK:
// whether the bus holds the client's session, and the Maximum Packet Size.
// It also corrects mochi's refusal of an MQTT 3.1.1 client with an empty
// client id and clean session 0: 0x80, which 3.1.1 does not have, becomes
// return code 2, identifier rejected [MQTT-3.1.3-8].
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	if pk.ReasonCode == packets.ErrUnspecifiedError.Code && cl.Properties.ProtocolVersion < 5 &&
		!cl.Properties.Clean && cl.Properties.Props.AssignedClientID != "" {
		pk.ReasonCode = v3BadIdentifier
		return pk
	}
	if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk
	}
	if v, ok := h.a.present.Load(cl); ok {
		pk.SessionPresent = v.(bool)
	}
	if cl.Properties.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = h.a.cfg.MaxPacketSize
	}
	return pk
}

// OnSubscribe marks cl as subscribing, for OnACLCheck.
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	h.a.subscribing.Store(cl, struct{}{})
	// A filter mochi takes but the bus refuses (more than
	// broker.MaxTopicLevels levels) is made one mochi refuses too, so that
	// its SUBACK says 0x8F (0x80 in 3.1.1) instead of granting it.
	cloned := false
	for i, sub := range pk.Filters {
		if _, topic := splitShared(sub.Filter); broker.ValidateFilter(topic) != nil {
			if !cloned {
				pk.Filters, cloned = slices.Clone(pk.Filters), true
			}
			pk.Filters[i].Filter = invalidFilter
		}
	}
	// Filters too long, or new beyond the client's bound (limits.go).
	if over := h.a.capFilters(cl, &pk, cloned); over != nil {
		h.a.overCap.set(cl, over)
	}
	return pk
}

// invalidFilter is a filter mochi's own check refuses.
const invalidFilter = "#/"

// OnSubscribed adds the filters mochi granted to the client's bus
// subscription before the SUBACK goes out, so that what is published once
// the client has its SUBACK reaches it; their retained values follow the
// SUBACK (OnPacketProcessed).
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	a := h.a
	a.subscribing.Delete(cl)
	if over := a.overCap.take(cl); over != nil {
		quotaCodes(codes, over, cl.Properties.ProtocolVersion)
	}
	s := a.sessionOf(cl)
	if s == nil {
		return
	}
	var bsub broker.Subscription
	var replay []broker.Filter
	for i, sub := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		if bsub == nil {
			var err error
			if bsub, err = a.ensureSub(s, cl); err != nil {
				a.log.Warn("mqtt: subscribe", "client", cl.ID, "err", err)
				return
			}
		}
		f := filterOf(sub, codes[i], cl.Properties.ProtocolVersion)
		handling := f.RetainHandling
		f.RetainHandling = 2
		existed, err := bsub.AddFilter(a.ctx, f)
		if err != nil {
			a.log.Warn("mqtt: subscribe", "client", cl.ID, "filter", f.Topic, "err", err)
			continue
		}
		if f.Group == "" && (handling == 0 || handling == 1 && !existed) {
			replay = append(replay, f)
		}
	}
	if len(replay) > 0 {
		a.granted.Store(cl, replay)
	}
}

// filterOf is the bus filter of an MQTT subscription granted at qos.
func filterOf(sub packets.Subscription, qos byte, version byte) broker.Filter {
	group, topic := splitShared(sub.Filter)
	f := broker.Filter{Topic: topic, Group: group, QoS: qos, ID: sub.Identifier}
	if version == 5 {
		f.NoLocal = sub.NoLocal
		f.RetainAsPublished = sub.RetainAsPublished
		f.RetainHandling = sub.RetainHandling
	}
	return f
}

// OnPacketProcessed replays, once the SUBACK is out, the retained values
// of the filters a SUBSCRIBE added.
func (h *hook) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type != packets.Subscribe {
		return
	}
	h.a.subscribing.Delete(cl)
	v, ok := h.a.granted.LoadAndDelete(cl)
	if !ok {
		return
	}
	s := h.a.sessionOf(cl)
	if s == nil {
		return
	}
	sub := s.subscription()
	if sub == nil {
		return
	}
	for _, f := range v.([]broker.Filter) {
		if err := sub.SendRetained(h.a.ctx, f); err != nil {
			h.a.log.Warn("mqtt: retained values", "client", cl.ID, "filter", f.Topic, "err", err)
		}
	}
}

// OnUnsubscribed removes filters from the client's bus subscription.
func (h *hook) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	s := h.a.sessionOf(cl)
	if s == nil {
		return
	}
	bsub := s.subscription()
	if bsub == nil {
		return // it never subscribed
	}
	for _, sub := range pk.Filters {
		group, topic := splitShared(sub.Filter)
		if _, err := bsub.RemoveFilter(h.a.ctx, topic, group); err != nil {
			h.a.log.Warn("mqtt: unsubscribe", "client", cl.ID, "filter", sub.Filter, "err", err)
		}
	}
}

// sysTopics are the $SYS values the hub publishes (Mosquitto's names).
var sysTopics = []struct {
	topic string
	value func(i *system.Info) int64
}{
	{"$SYS/broker/uptime", func(i *system.Info) int64 { return i.Uptime }},
	{"$SYS/broker/clients/connected", func(i *system.Info) int64 { return i.ClientsConnected }},
	{"$SYS/broker/clients/disconnected", func(i *system.Info) int64 { return i.ClientsDisconnected }},
	{"$SYS/broker/clients/maximum", func(i *system.Info) int64 { return i.ClientsMaximum }},
	{"$SYS/broker/clients/total", func(i *system.Info) int64 { return i.ClientsTotal }},
	{"$SYS/broker/packets/received", func(i *system.Info) int64 { return i.PacketsReceived }},
	{"$SYS/broker/packets/sent", func(i *system.Info) int64 { return i.PacketsSent }},
	{"$SYS/broker/messages/received", func(i *system.Info) int64 { return i.MessagesReceived }},
	{"$SYS/broker/messages/sent", func(i *system.Info) int64 { return i.MessagesSent }},
	{"$SYS/broker/messages/dropped", func(i *system.Info) int64 { return i.MessagesDropped }},
	{"$SYS/broker/bytes/received", func(i *system.Info) int64 { return i.BytesReceived }},
	{"$SYS/broker/bytes/sent", func(i *system.Info) int64 { return i.BytesSent }},
	{"$SYS/broker/subscriptions", func(i *system.Info) int64 { return i.Subscriptions }},
}

// OnSysInfoTick publishes the $SYS values that changed on the bus,
// retained, so every protocol reads the same ones.
func (h *hook) OnSysInfoTick(info *system.Info) {
	a := h.a
	vals := make([][2]string, 0, len(sysTopics)+1)
	vals = append(vals, [2]string{"$SYS/broker/version", "hub (mochi-mqtt " + info.Version + ")"})
	for _, st := range sysTopics {
		vals = append(vals, [2]string{st.topic, strconv.FormatInt(st.value(info), 10)})
	}
	for _, tv := range vals {
		st := struct{ topic string }{tv[0]}
		v := tv[1]
		if old, ok := a.sysLast[st.topic]; ok && old == v {
			continue
		}
		a.sysLast[st.topic] = v
		e := &broker.Envelope{Topic: st.topic, Payload: []byte(v), ContentType: "text/plain", Retain: true,
			Origin: broker.Origin{Protocol: broker.ProtoMQTT, Node: a.cfg.Node}}
		if err := a.cfg.Bus.Publish(a.ctx, e); err != nil && !errors.Is(err, broker.ErrClosed) {
			a.log.Debug("mqtt: publish $SYS", "topic", st.topic, "err", err)
		}
	}
}

// splitShared splits "$share/{group}/{filter}" into group and filter; a
// plain filter has no group.
func splitShared(f string) (group, filter string) {
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if g, filter, ok := strings.Cut(rest, "/"); ok {
			return g, filter
		}
	}
	return "", f
}
