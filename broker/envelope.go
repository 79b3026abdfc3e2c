// Package broker is the hub's core: the Envelope every protocol adapter
// translates to and from, MQTT-style topics and filters, and the Bus that
// routes envelopes to subscriptions. It imports no protocol package.
package broker

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync/atomic"
	"time"
)

// Protocol names used in Origin.Protocol.
const (
	ProtoMQTT   = "mqtt"
	ProtoCoAP   = "coap"
	ProtoXMPP   = "xmpp"
	ProtoREST   = "rest"
	ProtoHub    = "hub" // the hub itself ($hub/... events, presence)
	ProtoBridge = "bridge"
)

// Origin says where an envelope entered the hub, so that adapters can avoid
// echoing a message back into the protocol it came from and ACLs can name
// the principal that published it.
type Origin struct {
	// Protocol is one of the Proto* constants.
	Protocol string
	// ClientID is the protocol's own client identity: an MQTT client id,
	// an XMPP full JID, a CoAP remote address or device id.
	ClientID string
	// Remote is the network address of the peer, when there is one.
	Remote string
	// Principal is the authenticated user or device name ("" when anonymous).
	Principal string
	// Node identifies the hub process that received the envelope; it lets a
	// clustered adapter tell its own publishes from those of other hubs.
	Node string
}

// Property is one user property (MQTT 5 user property, a CoAP option worth
// keeping). Order is kept and keys may repeat, as in MQTT 5.
type Property struct {
	Key, Value string
}

// Envelope is a message on the bus. Adapters build one from a protocol frame
// and encode it back into frames for their subscribers; the payload is never
// re-encoded by the bus.
type Envelope struct {
	// ID is unique and time-ordered (see NewID).
	ID string
	// Topic is a valid topic name (no wildcards).
	Topic string
	// Payload is carried untouched.
	Payload []byte
	// ContentType is a MIME type ("" when unknown).
	ContentType string
	// QoS is 0, 1 or 2.
	QoS byte
	// Retain asks the bus to keep this envelope as the topic's last value;
	// a retained envelope with an empty payload clears it, as in MQTT.
	Retain bool
	// Origin says who published it.
	Origin Origin
	// Time is when the envelope entered the hub.
	Time time.Time
	// Expiry, when non-zero, is the instant after which the envelope must no
	// longer be delivered (MQTT 5 message expiry).
	Expiry time.Time
	// ResponseTopic and CorrelationData carry request/response (MQTT 5,
	// device commands).
	ResponseTopic   string
	CorrelationData []byte
	// Properties are user properties.
	Properties []Property
}

// Size is what an envelope counts against a queue's byte bound: its topic
// and payload.
func (e *Envelope) Size() int { return len(e.Topic) + len(e.Payload) }

// Expired reports whether the envelope has an expiry that lies before now.
func (e *Envelope) Expired(now time.Time) bool {
	return !e.Expiry.IsZero() && now.After(e.Expiry)
}

// Clone returns a copy that shares no mutable slices with e, so a receiver
// may change it freely.
func (e *Envelope) Clone() *Envelope {
	c := *e
	c.Payload = append([]byte(nil), e.Payload...)
	if e.CorrelationData != nil {
		c.CorrelationData = append([]byte(nil), e.CorrelationData...)
	}
	if e.Properties != nil {
		c.Properties = append([]Property(nil), e.Properties...)
	}
	return &c
}

// Property returns the first user property named key.
func (e *Envelope) Property(key string) (string, bool) {
	for _, p := range e.Properties {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

var (
	idCounter atomic.Uint64
	idNode    = func() [4]byte {
		var b [4]byte
		_, _ = rand.Read(b[:])
		return b
	}()
)

// NewID returns a unique, time-ordered identifier: 32 hex digits made of
// the time in nanoseconds, a per-process random tag and a counter, so ids
// sort by creation time within a process and never collide across hubs.
func NewID() string { return NewIDAt(time.Now()) }

// NewIDAt is NewID with the clock read by the caller (now), sparing a
// second read.
func NewIDAt(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(t.UnixNano()))
	copy(b[8:12], idNode[:])
	binary.BigEndian.PutUint32(b[12:16], uint32(idCounter.Add(1)))
	var h [32]byte // on the stack: the string is the one allocation
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// NodeID returns this process's random tag, the default Origin.Node.
func NodeID() string { return hex.EncodeToString(idNode[:]) }
