// Package mqttwire encodes and decodes MQTT 3.1.1 and 5 control packets on
// the wire, for the hand-written clients of the load tool and the tests:
// clients that must misbehave on purpose (stop reading, send odd
// properties) or that must not allocate, which a full client library
// cannot do. It is deliberately small: the packets those clients send and
// receive, no session state. The hub itself does not use it.
package mqttwire

import (
	"encoding/binary"
	"errors"
)

// Control packet types (the high nibble of the first byte), untyped
// constants, so that they combine with flag nibbles in byte expressions.
const (
	Connect     = 1
	Connack     = 2
	Publish     = 3
	Puback      = 4
	Pubrec      = 5
	Pubrel      = 6
	Pubcomp     = 7
	Subscribe   = 8
	Suback      = 9
	Unsubscribe = 10
	Unsuback    = 11
	Pingreq     = 12
	Pingresp    = 13
	Disconnect  = 14
	Auth        = 15
)

// Protocol levels, as CONNECT carries them.
const (
	V311 = 4 // MQTT 3.1.1
	V5   = 5 // MQTT 5
)

// MaxRemainingLength is the largest remaining length a 4-byte variable
// byte integer holds, so the largest body any packet can have.
const MaxRemainingLength = 268_435_455

// ErrMalformed marks bytes that break MQTT's framing or a packet's
// layout; errors.Is finds it under the context the functions add.
var ErrMalformed = errors.New("mqttwire: malformed packet")

// AppendVarInt appends n as MQTT's variable byte integer (the remaining
// length, MQTT 5 property lengths). n must be 0..MaxRemainingLength; the
// callers compute it from lengths they hold, so a larger one is their bug
// and is encoded in more than 4 bytes rather than silently truncated,
// which a reader then rejects.
func AppendVarInt(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// AppendString appends an MQTT UTF-8 string (also used for binary data):
// a 2-byte big-endian length, then s. s longer than 65,535 bytes is the
// caller's bug: its length is truncated to 16 bits.
func AppendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// varIntLen is the number of bytes AppendVarInt uses for n.
func varIntLen(n int) int {
	l := 1
	for n >= 128 {
		n /= 128
		l++
	}
	return l
}

// appendProps appends MQTT 5 properties (encoded, without their length)
// with their length in front.
func appendProps(b, props []byte) []byte {
	return append(AppendVarInt(b, len(props)), props...)
}

// Will is the last will a CONNECT can carry.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties []byte // MQTT 5 will properties, encoded without their length
}

// ConnectSpec is what a CONNECT carries.
type ConnectSpec struct {
	Version   byte // V311 or V5; 0 means V311
	ClientID  string
	Username  string // sent when not empty
	Password  string // sent when not empty and, in 3.1.1 (which forbids a password alone), with a Username
	KeepAlive uint16 // seconds
	Clean     bool   // clean session (3.1.1) or clean start (5)
	// Properties are the MQTT 5 CONNECT properties, encoded without
	// their length.
	Properties []byte
	Will       *Will
}

func (s ConnectSpec) version() byte {
	if s.Version == 0 {
		return V311
	}
	return s.Version
}

// hasPassword says whether s's password goes into the CONNECT.
func (s ConnectSpec) hasPassword() bool {
	return s.Password != "" && (s.Username != "" || s.version() == V5)
}

// AppendConnect appends a CONNECT for s.
func AppendConnect(b []byte, s ConnectSpec) []byte {
	v := s.version()
	var flags byte
	if s.Clean {
		flags |= 0x02
	}
	n := 2 + 4 + 1 + 1 + 2 + 2 + len(s.ClientID) // "MQTT", level, flags, keepalive, client id
	if v == V5 {
		n += varIntLen(len(s.Properties)) + len(s.Properties)
	}
	if w := s.Will; w != nil {
		flags |= 0x04 | (w.QoS&3)<<3
		if w.Retain {
			flags |= 0x20
		}
		if v == V5 {
			n += varIntLen(len(w.Properties)) + len(w.Properties)
		}
		n += 2 + len(w.Topic) + 2 + len(w.Payload)
	}
	if s.Username != "" {
		flags |= 0x80
		n += 2 + len(s.Username)
	}
	if s.hasPassword() {
		flags |= 0x40
		n += 2 + len(s.Password)
	}
	b = AppendVarInt(append(b, Connect<<4), n)
	b = AppendString(b, "MQTT")
	b = append(b, v, flags)
	b = binary.BigEndian.AppendUint16(b, s.KeepAlive)
	if v == V5 {
		b = appendProps(b, s.Properties)
	}
	b = AppendString(b, s.ClientID)
	if w := s.Will; w != nil {
		if v == V5 {
			b = appendProps(b, w.Properties)
		}
		b = AppendString(b, w.Topic)
		b = AppendString(b, string(w.Payload))
	}
	if s.Username != "" {
		b = AppendString(b, s.Username)
	}
	if s.hasPassword() {
		b = AppendString(b, s.Password)
	}
	return b
}

// AppendSubscribe appends a SUBSCRIBE with packet id of filters, all at
// qos (MQTT 5: subscription options with no other option set, and no
// properties).
func AppendSubscribe(b []byte, version byte, id uint16, qos byte, filters ...string) []byte {
	n := 2
	if version == V5 {
		n++
	}
	for _, f := range filters {
		n += 2 + len(f) + 1
	}
	b = AppendVarInt(append(b, Subscribe<<4|0x02), n) // SUBSCRIBE's reserved flags are 0010
	b = binary.BigEndian.AppendUint16(b, id)
	if version == V5 {
		b = append(b, 0)
	}
	for _, f := range filters {
		b = append(AppendString(b, f), qos)
	}
	return b
}

// PublishHeader is what precedes a PUBLISH's payload.
type PublishHeader struct {
	Version byte // V311 or V5; 0 means V311
	Topic   string
	QoS     byte
	Retain  bool
	Dup     bool
	ID      uint16 // packet id, sent at QoS 1 and 2
	// Properties are the MQTT 5 PUBLISH properties, encoded without
	// their length.
	Properties []byte
}

// AppendPublishHead appends a PUBLISH's fixed header, topic, packet id
// (at QoS > 0) and MQTT 5 properties for a payload of payloadLen bytes,
// which the caller appends next. Splitting head from payload lets the
// load tool write its payload straight into the output buffer: with
// enough capacity in b this allocates nothing.
func AppendPublishHead(b []byte, h PublishHeader, payloadLen int) []byte {
	n := 2 + len(h.Topic) + payloadLen
	if h.QoS > 0 {
		n += 2
	}
	if h.Version == V5 {
		n += varIntLen(len(h.Properties)) + len(h.Properties)
	}
	first := byte(Publish<<4) | (h.QoS&3)<<1
	if h.Dup {
		first |= 0x08
	}
	if h.Retain {
		first |= 0x01
	}
	b = AppendVarInt(append(b, first), n)
	b = AppendString(b, h.Topic)
	if h.QoS > 0 {
		b = binary.BigEndian.AppendUint16(b, h.ID)
	}
	if h.Version == V5 {
		b = appendProps(b, h.Properties)
	}
	return b
}

// AppendPublish appends a whole PUBLISH: AppendPublishHead, then payload.
func AppendPublish(b []byte, h PublishHeader, payload []byte) []byte {
	return append(AppendPublishHead(b, h, len(payload)), payload...)
}

// ackFirst is the first byte of an acknowledgement of type typ.
func ackFirst(typ byte) byte {
	if typ == Pubrel {
		return Pubrel<<4 | 0x02 // PUBREL's reserved flags are 0010
	}
	return typ << 4
}

// AppendAck appends an acknowledgement with a 2-byte body (PUBACK,
// PUBREC, PUBREL or PUBCOMP as typ) of packet id: all of 3.1.1's, and
// MQTT 5's for success.
func AppendAck(b []byte, typ byte, id uint16) []byte {
	return binary.BigEndian.AppendUint16(append(b, ackFirst(typ), 2), id)
}

// AppendAckCode appends an MQTT 5 acknowledgement of packet id with a
// reason code and no properties.
func AppendAckCode(b []byte, typ byte, id uint16, code byte) []byte {
	return append(binary.BigEndian.AppendUint16(append(b, ackFirst(typ), 3), id), code)
}

// AppendPingreq appends a PINGREQ.
func AppendPingreq(b []byte) []byte { return append(b, Pingreq<<4, 0) }

// AppendDisconnect appends a DISCONNECT with no body: 3.1.1's, and MQTT
// 5's normal disconnection.
func AppendDisconnect(b []byte) []byte { return append(b, Disconnect<<4, 0) }

// AppendDisconnectCode appends an MQTT 5 DISCONNECT with a reason code
// and no properties.
func AppendDisconnectCode(b []byte, code byte) []byte {
	return append(b, Disconnect<<4, 1, code)
}
