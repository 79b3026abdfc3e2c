package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The few MQTT 3.1.1 packets the lean client speaks, encoded by appending
// to a caller's buffer and decoded in place, so that the hot path (PUBLISH
// out, PUBLISH and PUBACK in) allocates nothing.

// MQTT 3.1.1 control packet types (the high nibble of the first byte).
const (
	pktConnect     = 1
	pktConnack     = 2
	pktPublish     = 3
	pktPuback      = 4
	pktPubrec      = 5
	pktPubrel      = 6
	pktPubcomp     = 7
	pktSubscribe   = 8
	pktSuback      = 9
	pktPingreq     = 12
	pktPingresp    = 13
	pktDisconnect  = 14
	maxRemainingLn = 268_435_455 // the largest a 4-byte remaining length holds
)

// maxPacketSize bounds the packets the lean client accepts: a payload of
// the largest --size plus a generous topic.
const maxPacketSize = maxPayloadSize + 1<<16

// errMalformed marks a packet that breaks MQTT 3.1.1's framing.
var errMalformed = errors.New("mqtt: malformed packet")

// appendRemainingLength appends n as MQTT's variable-length integer.
func appendRemainingLength(b []byte, n int) []byte {
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

// appendString appends an MQTT UTF-8 string: a 2-byte length, then s.
func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// connectSpec is what a CONNECT carries.
type connectSpec struct {
	clientID, username, password string
	keepalive                    uint16 // seconds
	clean                        bool
}

// appendConnect appends an MQTT 3.1.1 CONNECT for s.
func appendConnect(b []byte, s connectSpec) []byte {
	var flags byte
	if s.clean {
		flags |= 0x02
	}
	n := 10 + 2 + len(s.clientID)
	if s.username != "" {
		flags |= 0x80
		n += 2 + len(s.username)
		if s.password != "" {
			flags |= 0x40
			n += 2 + len(s.password)
		}
	}
	b = appendRemainingLength(append(b, pktConnect<<4), n)
	b = appendString(b, "MQTT")
	b = append(b, 4, flags, byte(s.keepalive>>8), byte(s.keepalive)) // level 4: 3.1.1
	b = appendString(b, s.clientID)
	if s.username != "" {
		b = appendString(b, s.username)
		if s.password != "" {
			b = appendString(b, s.password)
		}
	}
	return b
}

// appendSubscribe appends a SUBSCRIBE of one filter at qos.
func appendSubscribe(b []byte, id uint16, filter string, qos byte) []byte {
	b = appendRemainingLength(append(b, pktSubscribe<<4|0x02), 2+2+len(filter)+1)
	b = append(b, byte(id>>8), byte(id))
	return append(appendString(b, filter), qos)
}

// appendAck appends a 2-byte-body acknowledgement (PUBACK, PUBREC, PUBREL,
// PUBCOMP) of packet id.
func appendAck(b []byte, typ byte, id uint16) []byte {
	first := typ << 4
	if typ == pktPubrel {
		first |= 0x02 // PUBREL's reserved flags are 0010
	}
	return append(b, first, 2, byte(id>>8), byte(id))
}

// publishHead appends a PUBLISH's fixed header, topic and packet id (for
// qos > 0) for a payload of payloadLen bytes; the caller appends the
// payload.
func appendPublishHead(b []byte, topic string, qos byte, id uint16, payloadLen int) []byte {
	n := 2 + len(topic) + payloadLen
	if qos > 0 {
		n += 2
	}
	b = appendRemainingLength(append(b, pktPublish<<4|qos<<1), n)
	b = appendString(b, topic)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	return b
}

// packet is one decoded control packet. body aliases the reader's buffer
// (or the caller's scratch) and is valid until the next readPacket.
type packet struct {
	typ, flags byte
	body       []byte
}

// readPacket reads one control packet from br. A body that fits br's
// buffer is returned in place; a larger one is read into *scratch, which
// grows as needed up to maxPacketSize.
func readPacket(br *bufio.Reader, scratch *[]byte) (packet, error) {
	first, err := br.ReadByte()
	if err != nil {
		return packet{}, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := br.ReadByte()
		if err != nil {
			return packet{}, fmt.Errorf("mqtt: remaining length: %w", noEOF(err))
		}
		if i == 3 && d&0x80 != 0 {
			return packet{}, fmt.Errorf("%w: remaining length longer than 4 bytes", errMalformed)
		}
		n += int(d&0x7f) * mult
		if d&0x80 == 0 {
			break
		}
		mult *= 128
	}
	if n > maxPacketSize {
		return packet{}, fmt.Errorf("%w: %d-byte packet, more than %d", errMalformed, n, maxPacketSize)
	}
	p := packet{typ: first >> 4, flags: first & 0x0f}
	if n <= br.Size() {
		if p.body, err = br.Peek(n); err != nil {
			return packet{}, fmt.Errorf("mqtt: %d-byte packet body: %w", n, noEOF(err))
		}
		_, _ = br.Discard(n)
		return p, nil
	}
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	p.body = (*scratch)[:n]
	if _, err := io.ReadFull(br, p.body); err != nil {
		return packet{}, fmt.Errorf("mqtt: %d-byte packet body: %w", n, noEOF(err))
	}
	return p, nil
}

// noEOF turns an EOF inside a packet into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// publishView is a decoded PUBLISH; topic and payload alias the packet.
type publishView struct {
	qos     byte
	dup     bool
	id      uint16
	topic   []byte
	payload []byte
}

// parsePublish decodes the variable header and payload of a PUBLISH.
func parsePublish(p packet) (publishView, error) {
	v := publishView{qos: p.flags >> 1 & 0x03, dup: p.flags&0x08 != 0}
	if v.qos == 3 {
		return publishView{}, fmt.Errorf("%w: PUBLISH with QoS 3", errMalformed)
	}
	b := p.body
	if len(b) < 2 {
		return publishView{}, fmt.Errorf("%w: PUBLISH of %d bytes has no topic", errMalformed, len(b))
	}
	tl := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+tl {
		return publishView{}, fmt.Errorf("%w: PUBLISH topic of %d bytes in a %d-byte body", errMalformed, tl, len(b))
	}
	v.topic, b = b[2:2+tl], b[2+tl:]
	if v.qos > 0 {
		if len(b) < 2 {
			return publishView{}, fmt.Errorf("%w: QoS %d PUBLISH without a packet id", errMalformed, v.qos)
		}
		v.id, b = binary.BigEndian.Uint16(b), b[2:]
		if v.id == 0 {
			return publishView{}, fmt.Errorf("%w: QoS %d PUBLISH with packet id 0", errMalformed, v.qos)
		}
	}
	v.payload = b
	return v, nil
}

// parseAckID decodes the packet id of a PUBACK, PUBREC, PUBREL or PUBCOMP.
func parseAckID(p packet) (uint16, error) {
	if len(p.body) != 2 {
		return 0, fmt.Errorf("%w: acknowledgement (type %d) of %d bytes, want 2", errMalformed, p.typ, len(p.body))
	}
	return binary.BigEndian.Uint16(p.body), nil
}

// parseConnack checks a CONNACK and returns its session-present flag; a
// refusing return code is an error naming it.
func parseConnack(p packet) (sessionPresent bool, err error) {
	if p.typ != pktConnack {
		return false, fmt.Errorf("mqtt: want CONNACK, got packet type %d", p.typ)
	}
	if len(p.body) != 2 {
		return false, fmt.Errorf("%w: CONNACK of %d bytes, want 2", errMalformed, len(p.body))
	}
	if code := p.body[1]; code != 0 {
		return false, fmt.Errorf("mqtt: CONNACK return code %d (%s)", code, connackReason(code))
	}
	return p.body[0]&0x01 != 0, nil
}

// connackReason names MQTT 3.1.1's CONNACK return codes.
func connackReason(code byte) string {
	switch code {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad user name or password"
	case 5:
		return "not authorized"
	}
	return "unknown"
}

// parseSuback returns a SUBACK's packet id and its return codes.
func parseSuback(p packet) (id uint16, codes []byte, err error) {
	if len(p.body) < 3 {
		return 0, nil, fmt.Errorf("%w: SUBACK of %d bytes", errMalformed, len(p.body))
	}
	return binary.BigEndian.Uint16(p.body), p.body[2:], nil
}
