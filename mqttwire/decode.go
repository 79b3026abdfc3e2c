package mqttwire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Packet is one control packet as read. Body aliases the reader's buffer
// or the caller's scratch and is valid until the next ReadPacket with
// them: the parsers' results alias it too, so copy what must outlive it.
type Packet struct {
	Type  byte // Connect, Publish, ...
	Flags byte // the low nibble of the first byte
	Body  []byte
}

// ReadPacket reads one control packet from br. A body that fits br's
// buffer is returned in place, without copying; a larger one is read into
// *scratch, which grows as needed. A body over max bytes is refused
// before it is read, so a peer cannot make the reader allocate more.
// A clean end of stream before the first byte is io.EOF itself; one
// inside a packet is io.ErrUnexpectedEOF.
func ReadPacket(br *bufio.Reader, scratch *[]byte, max int) (Packet, error) {
	first, err := br.ReadByte()
	if err != nil {
		return Packet{}, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := br.ReadByte()
		if err != nil {
			return Packet{}, fmt.Errorf("mqttwire: remaining length: %w", noEOF(err))
		}
		if i == 3 && d&0x80 != 0 {
			return Packet{}, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed)
		}
		n += int(d&0x7f) * mult
		if d&0x80 == 0 {
			break
		}
		mult *= 128
	}
	if n > max {
		return Packet{}, fmt.Errorf("%w: %d-byte packet, more than %d", ErrMalformed, n, max)
	}
	p := Packet{Type: first >> 4, Flags: first & 0x0f}
	if n <= br.Size() {
		if p.Body, err = br.Peek(n); err != nil {
			return Packet{}, fmt.Errorf("mqttwire: %d-byte packet body: %w", n, noEOF(err))
		}
		_, _ = br.Discard(n)
		return p, nil
	}
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	p.Body = (*scratch)[:n]
	if _, err := io.ReadFull(br, p.Body); err != nil {
		return Packet{}, fmt.Errorf("mqttwire: %d-byte packet body: %w", n, noEOF(err))
	}
	return p, nil
}

// noEOF turns an EOF inside a packet into io.ErrUnexpectedEOF, so that a
// caller testing for io.EOF sees only a clean end between packets.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Name names packet type typ for error messages.
func Name(typ byte) string {
	names := [...]string{"reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
		"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}
	if int(typ) < len(names) {
		return names[typ]
	}
	return fmt.Sprintf("type %d", typ)
}

// want checks that p is of type typ.
func want(p Packet, typ byte) error {
	if p.Type != typ {
		return fmt.Errorf("mqttwire: want %s, got %s", Name(typ), Name(p.Type))
	}
	return nil
}

// readVarInt decodes a variable byte integer at the start of b and
// returns it and the bytes after it.
func readVarInt(b []byte, what string) (int, []byte, error) {
	n, mult := 0, 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, nil, fmt.Errorf("%w: %s length cut short", ErrMalformed, what)
		}
		n += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return n, b[i+1:], nil
		}
		mult *= 128
	}
	return 0, nil, fmt.Errorf("%w: %s length longer than 4 bytes", ErrMalformed, what)
}

// readProps splits MQTT 5 properties (their length, then them) off the
// start of b, for what (a packet's name) in error messages.
func readProps(b []byte, what string) (props, rest []byte, err error) {
	n, b, err := readVarInt(b, what+" properties")
	if err != nil {
		return nil, nil, err
	}
	if n > len(b) {
		return nil, nil, fmt.Errorf("%w: %s properties of %d bytes, %d left", ErrMalformed, what, n, len(b))
	}
	return b[:n], b[n:], nil
}

// readString splits an MQTT string off the start of b.
func readString(b []byte, what string) (s, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("%w: %s cut short", ErrMalformed, what)
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, fmt.Errorf("%w: %s of %d bytes, %d left", ErrMalformed, what, n, len(b)-2)
	}
	return b[2 : 2+n], b[2+n:], nil
}

// PublishView is a parsed PUBLISH; Topic, Properties and Payload alias
// the packet's body.
type PublishView struct {
	QoS        byte
	Dup        bool
	Retain     bool
	ID         uint16 // packet id, at QoS 1 and 2
	Topic      []byte
	Properties []byte // MQTT 5 properties, without their length
	Payload    []byte
}

// ParsePublish parses the PUBLISH p of protocol version (V311 or V5;
// MQTT 5's properties are returned in Properties, for the callers that
// look at them, and otherwise skipped).
func ParsePublish(p Packet, version byte) (PublishView, error) {
	if err := want(p, Publish); err != nil {
		return PublishView{}, err
	}
	v := PublishView{QoS: p.Flags >> 1 & 0x03, Dup: p.Flags&0x08 != 0, Retain: p.Flags&0x01 != 0}
	if v.QoS == 3 {
		return PublishView{}, fmt.Errorf("%w: PUBLISH with QoS 3", ErrMalformed)
	}
	var err error
	b := p.Body
	if v.Topic, b, err = readString(b, "PUBLISH topic"); err != nil {
		return PublishView{}, err
	}
	if v.QoS > 0 {
		if len(b) < 2 {
			return PublishView{}, fmt.Errorf("%w: QoS %d PUBLISH without a packet id", ErrMalformed, v.QoS)
		}
		v.ID, b = binary.BigEndian.Uint16(b), b[2:]
		if v.ID == 0 {
			return PublishView{}, fmt.Errorf("%w: QoS %d PUBLISH with packet id 0", ErrMalformed, v.QoS)
		}
	}
	if version == V5 {
		if v.Properties, b, err = readProps(b, "PUBLISH"); err != nil {
			return PublishView{}, err
		}
	}
	v.Payload = b
	return v, nil
}

// AckView is a parsed PUBACK, PUBREC, PUBREL or PUBCOMP.
type AckView struct {
	Type       byte
	ID         uint16
	Code       byte   // MQTT 5 reason code; 0 (success) when absent and in 3.1.1
	Properties []byte // MQTT 5 properties, without their length
}

// ParseAck parses the acknowledgement p of protocol version. 3.1.1's
// body is exactly the packet id; MQTT 5 may add a reason code and
// properties.
func ParseAck(p Packet, version byte) (AckView, error) {
	if p.Type < Puback || p.Type > Pubcomp {
		return AckView{}, fmt.Errorf("mqttwire: want an acknowledgement, got %s", Name(p.Type))
	}
	b := p.Body
	if len(b) < 2 || version != V5 && len(b) != 2 {
		return AckView{}, fmt.Errorf("%w: %s of %d bytes, want 2", ErrMalformed, Name(p.Type), len(b))
	}
	a := AckView{Type: p.Type, ID: binary.BigEndian.Uint16(b)}
	if b = b[2:]; len(b) == 0 {
		return a, nil
	}
	a.Code = b[0]
	if b = b[1:]; len(b) == 0 {
		return a, nil
	}
	props, rest, err := readProps(b, Name(p.Type))
	if err != nil {
		return AckView{}, err
	}
	if len(rest) != 0 {
		return AckView{}, fmt.Errorf("%w: %d bytes after the %s properties", ErrMalformed, len(rest), Name(p.Type))
	}
	a.Properties = props
	return a, nil
}

// ConnackView is a parsed CONNACK.
type ConnackView struct {
	Version        byte
	SessionPresent bool
	Code           byte   // 0 accepted; a 3.1.1 return code or an MQTT 5 reason code
	Properties     []byte // MQTT 5 properties, without their length
}

// ParseConnack parses the CONNACK p answering a CONNECT of version. A
// refusal is not an error here, as the tests look at its code: see Err.
func ParseConnack(p Packet, version byte) (ConnackView, error) {
	if err := want(p, Connack); err != nil {
		return ConnackView{}, err
	}
	b := p.Body
	if len(b) < 2 || version != V5 && len(b) != 2 {
		return ConnackView{}, fmt.Errorf("%w: CONNACK of %d bytes, want 2", ErrMalformed, len(b))
	}
	c := ConnackView{Version: version, SessionPresent: b[0]&0x01 != 0, Code: b[1]}
	if version == V5 {
		props, rest, err := readProps(b[2:], "CONNACK")
		if err != nil {
			return ConnackView{}, err
		}
		if len(rest) != 0 {
			return ConnackView{}, fmt.Errorf("%w: %d bytes after the CONNACK properties", ErrMalformed, len(rest))
		}
		c.Properties = props
	}
	return c, nil
}

// Err is nil for an accepted connection and otherwise an error naming
// the refusal.
func (c ConnackView) Err() error {
	if c.Code == 0 {
		return nil
	}
	if c.Version == V5 {
		return fmt.Errorf("mqttwire: CONNACK reason code 0x%02x (%s)", c.Code, reason5(c.Code))
	}
	return fmt.Errorf("mqttwire: CONNACK return code %d (%s)", c.Code, connackReason(c.Code))
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

// reason5 names the MQTT 5 reason codes a hub refuses connections with.
func reason5(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x81:
		return "malformed packet"
	case 0x84:
		return "unsupported protocol version"
	case 0x85:
		return "client identifier not valid"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x89:
		return "server busy"
	case 0x8a:
		return "banned"
	case 0x90:
		return "topic name invalid"
	case 0x95:
		return "packet too large"
	case 0x97:
		return "quota exceeded"
	case 0x9f:
		return "connection rate exceeded"
	}
	return "unknown"
}

// ParseSuback parses the SUBACK p of version: its packet id and one
// return (reason) code per filter, aliasing the body.
func ParseSuback(p Packet, version byte) (id uint16, codes []byte, err error) {
	if err := want(p, Suback); err != nil {
		return 0, nil, err
	}
	b := p.Body
	if len(b) < 3 {
		return 0, nil, fmt.Errorf("%w: SUBACK of %d bytes", ErrMalformed, len(b))
	}
	id, b = binary.BigEndian.Uint16(b), b[2:]
	if version == V5 {
		if _, b, err = readProps(b, "SUBACK"); err != nil {
			return 0, nil, err
		}
		if len(b) == 0 {
			return 0, nil, fmt.Errorf("%w: SUBACK without codes", ErrMalformed)
		}
	}
	return id, b, nil
}

// ParseDisconnect parses the DISCONNECT p of version and returns its
// reason code: 0 (normal) when absent and in 3.1.1.
func ParseDisconnect(p Packet, version byte) (byte, error) {
	if err := want(p, Disconnect); err != nil {
		return 0, err
	}
	b := p.Body
	if len(b) == 0 {
		return 0, nil
	}
	if version != V5 {
		return 0, fmt.Errorf("%w: 3.1.1 DISCONNECT of %d bytes, want 0", ErrMalformed, len(b))
	}
	if len(b) > 1 {
		if _, rest, err := readProps(b[1:], "DISCONNECT"); err != nil {
			return 0, err
		} else if len(rest) != 0 {
			return 0, fmt.Errorf("%w: %d bytes after the DISCONNECT properties", ErrMalformed, len(rest))
		}
	}
	return b[0], nil
}
