package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// codecVersion is the first byte of an encoded envelope. Version 2 ends
// with a CRC-32C of everything before it: SQLite keeps no page checksums,
// so a damaged stored envelope is caught here rather than served.
const codecVersion = 2

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks bytes that are not an encoded envelope (a torn write, a
// foreign value).
var ErrCorrupt = errors.New("corrupt envelope encoding")

// MarshalBinary encodes e compactly for storage and for the cluster bus.
// The encoding is versioned; UnmarshalEnvelope reads it back.
func (e *Envelope) MarshalBinary() ([]byte, error) {
	n := 1 + 1 + 1 + 8 + 8 + 4 + len(e.ID) + len(e.Topic) + len(e.Payload) + len(e.ContentType) +
		len(e.Origin.Protocol) + len(e.Origin.ClientID) + len(e.Origin.Remote) + len(e.Origin.Principal) +
		len(e.Origin.Node) + len(e.ResponseTopic) + len(e.CorrelationData) + 12*binary.MaxVarintLen32
	for _, p := range e.Properties {
		n += len(p.Key) + len(p.Value) + 2*binary.MaxVarintLen32
	}
	b := make([]byte, 0, n)
	b = append(b, codecVersion, e.QoS)
	var flags byte
	if e.Retain {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	var exp int64
	if !e.Expiry.IsZero() {
		exp = e.Expiry.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(exp))
	for _, s := range []string{e.ID, e.Topic, string(e.Payload), e.ContentType,
		e.Origin.Protocol, e.Origin.ClientID, e.Origin.Remote, e.Origin.Principal, e.Origin.Node,
		e.ResponseTopic, string(e.CorrelationData)} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Properties)))
	for _, p := range e.Properties {
		b = binary.AppendUvarint(b, uint64(len(p.Key)))
		b = append(b, p.Key...)
		b = binary.AppendUvarint(b, uint64(len(p.Value)))
		b = append(b, p.Value...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable)), nil
}

// UnmarshalEnvelope decodes what MarshalBinary wrote. It never panics on
// bad input and returns an error wrapping ErrCorrupt instead.
func UnmarshalEnvelope(b []byte) (*Envelope, error) {
	d := decoder{b: b}
	if len(b) < 19+4 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(b))
	}
	if b[0] != codecVersion {
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, b[0])
	}
	sum := binary.BigEndian.Uint32(b[len(b)-4:])
	b = b[:len(b)-4]
	if crc32.Checksum(b, crcTable) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	e := &Envelope{QoS: b[1], Retain: b[2]&1 != 0}
	if e.QoS > 2 {
		return nil, fmt.Errorf("%w: qos %d", ErrCorrupt, e.QoS)
	}
	e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[3:11])))
	if exp := int64(binary.BigEndian.Uint64(b[11:19])); exp != 0 {
		e.Expiry = time.Unix(0, exp)
	}
	d.b = b[19:]
	e.ID = d.str()
	e.Topic = d.str()
	e.Payload = d.bytes()
	e.ContentType = d.str()
	e.Origin.Protocol = d.str()
	e.Origin.ClientID = d.str()
	e.Origin.Remote = d.str()
	e.Origin.Principal = d.str()
	e.Origin.Node = d.str()
	e.ResponseTopic = d.str()
	e.CorrelationData = d.bytes()
	if len(e.CorrelationData) == 0 {
		e.CorrelationData = nil
	}
	np := d.uvarint()
	if d.err == nil && np > uint64(len(d.b)) {
		d.err = fmt.Errorf("%d properties in %d bytes", np, len(d.b))
	}
	for i := uint64(0); i < np && d.err == nil; i++ {
		e.Properties = append(e.Properties, Property{Key: d.str(), Value: d.str()})
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, d.err)
	}
	return e, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad length")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes in %d", n, len(d.b))
		return nil
	}
	v := append([]byte{}, d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes()) }
