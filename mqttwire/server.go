package mqttwire

import (
	"encoding/binary"
	"fmt"
)

// The parsers of what a client sends, for the fake servers in tests that
// check what a hand-written client put on the wire.

// ParseConnect parses the CONNECT p back into the spec it was made from;
// the strings are copies, the Properties and Will Payload alias the body.
func ParseConnect(p Packet) (ConnectSpec, error) {
	if err := want(p, Connect); err != nil {
		return ConnectSpec{}, err
	}
	name, b, err := readString(p.Body, "CONNECT protocol name")
	if err != nil {
		return ConnectSpec{}, err
	}
	if string(name) != "MQTT" {
		return ConnectSpec{}, fmt.Errorf("%w: CONNECT protocol name %q", ErrMalformed, name)
	}
	if len(b) < 4 {
		return ConnectSpec{}, fmt.Errorf("%w: CONNECT header cut short", ErrMalformed)
	}
	s := ConnectSpec{Version: b[0], KeepAlive: binary.BigEndian.Uint16(b[2:])}
	flags := b[1]
	b = b[4:]
	if s.Version != V311 && s.Version != V5 {
		return ConnectSpec{}, fmt.Errorf("%w: CONNECT protocol level %d", ErrMalformed, s.Version)
	}
	if flags&0x01 != 0 {
		return ConnectSpec{}, fmt.Errorf("%w: CONNECT reserved flag set", ErrMalformed)
	}
	s.Clean = flags&0x02 != 0
	if s.Version == V5 {
		if s.Properties, b, err = readProps(b, "CONNECT"); err != nil {
			return ConnectSpec{}, err
		}
	}
	var f []byte
	if f, b, err = readString(b, "CONNECT client id"); err != nil {
		return ConnectSpec{}, err
	}
	s.ClientID = string(f)
	if flags&0x04 != 0 {
		w := &Will{QoS: flags >> 3 & 3, Retain: flags&0x20 != 0}
		if s.Version == V5 {
			if w.Properties, b, err = readProps(b, "CONNECT will"); err != nil {
				return ConnectSpec{}, err
			}
		}
		if f, b, err = readString(b, "CONNECT will topic"); err != nil {
			return ConnectSpec{}, err
		}
		w.Topic = string(f)
		if w.Payload, b, err = readString(b, "CONNECT will payload"); err != nil {
			return ConnectSpec{}, err
		}
		s.Will = w
	}
	if flags&0x80 != 0 {
		if f, b, err = readString(b, "CONNECT user name"); err != nil {
			return ConnectSpec{}, err
		}
		s.Username = string(f)
	}
	if flags&0x40 != 0 {
		if f, b, err = readString(b, "CONNECT password"); err != nil {
			return ConnectSpec{}, err
		}
		s.Password = string(f)
	}
	if len(b) != 0 {
		return ConnectSpec{}, fmt.Errorf("%w: %d bytes after the CONNECT payload", ErrMalformed, len(b))
	}
	return s, nil
}

// SubscribeView is a parsed SUBSCRIBE.
type SubscribeView struct {
	ID      uint16
	Filters []string
	Options []byte // per filter: QoS in 3.1.1, subscription options in MQTT 5
}

// ParseSubscribe parses the SUBSCRIBE p of version (MQTT 5 properties
// are skipped).
func ParseSubscribe(p Packet, version byte) (SubscribeView, error) {
	if err := want(p, Subscribe); err != nil {
		return SubscribeView{}, err
	}
	b := p.Body
	if len(b) < 2 {
		return SubscribeView{}, fmt.Errorf("%w: SUBSCRIBE of %d bytes", ErrMalformed, len(b))
	}
	s := SubscribeView{ID: binary.BigEndian.Uint16(b)}
	b = b[2:]
	var err error
	if version == V5 {
		if _, b, err = readProps(b, "SUBSCRIBE"); err != nil {
			return SubscribeView{}, err
		}
	}
	for len(b) > 0 {
		var f []byte
		if f, b, err = readString(b, "SUBSCRIBE filter"); err != nil {
			return SubscribeView{}, err
		}
		if len(b) == 0 {
			return SubscribeView{}, fmt.Errorf("%w: SUBSCRIBE filter without options", ErrMalformed)
		}
		s.Filters = append(s.Filters, string(f))
		s.Options = append(s.Options, b[0])
		b = b[1:]
	}
	if len(s.Filters) == 0 {
		return SubscribeView{}, fmt.Errorf("%w: SUBSCRIBE without filters", ErrMalformed)
	}
	return s, nil
}
