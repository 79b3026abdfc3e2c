package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// rawSession is an MQTT client written packet by packet, for what a
// library hides: packet ids, DUP flags, acknowledgements not sent.
type rawSession struct {
	t       testing.TB
	c       net.Conn
	r       *bufio.Reader
	version byte
}

// rawDial connects as id and returns the session and CONNACK's session
// present flag.
func rawDial(t testing.TB, addr, id string, clean bool, version byte) (*rawSession, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(3 * wait))
	s := &rawSession{t: t, c: c, r: bufio.NewReader(c), version: version}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 30, ClientIdentifier: id}}
	if version == 5 && !clean {
		pk.Properties.SessionExpiryInterval = 3600
		pk.Properties.SessionExpiryIntervalFlag = true
	}
	s.send(pk)
	ack := s.read()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return s, ack.SessionPresent
}

func (s *rawSession) send(pk packets.Packet) {
	s.t.Helper()
	pk.ProtocolVersion = s.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	default:
		s.t.Fatalf("rawSession cannot send %v", pk.FixedHeader.Type)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.c.Write(buf.Bytes()); err != nil {
		s.t.Fatal(err)
	}
}

// read reads and decodes the next packet.
func (s *rawSession) read() packets.Packet {
	s.t.Helper()
	b, err := s.r.ReadByte()
	if err != nil {
		s.t.Fatalf("read: %v", err)
	}
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(b); err != nil {
		s.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(s.r)
	if err != nil {
		s.t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(s.r, body); err != nil {
		s.t.Fatal(err)
	}
	pk.ProtocolVersion = s.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	}
	if err != nil {
		s.t.Fatalf("decode %v: %v", pk.FixedHeader.Type, err)
	}
	return pk
}

// subscribe sends SUBSCRIBE with packet id pid and returns SUBACK's codes.
func (s *rawSession) subscribe(pid uint16, filter string, qos byte) []byte {
	s.t.Helper()
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: pid,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}})
	for {
		pk := s.read()
		if pk.FixedHeader.Type == packets.Suback {
			if pk.PacketID != pid {
				s.t.Fatalf("SUBACK for %d, want %d", pk.PacketID, pid)
			}
			return pk.ReasonCodes
		}
	}
}

// TestRedeliveryDupAndPacketIDs: what was sent and not acknowledged comes
// again after a reconnect with DUP and its packet id; what was never sent
// has DUP 0; the client's own packet ids (a SUBSCRIBE that happens to use
// an id the hub has out) are another space, so its SUBSCRIBE is granted.
func TestRedeliveryDupAndPacketIDs(t *testing.T) {
	t.Parallel()
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			h := newHub(t, nil)
			id := fmt.Sprintf("dup-v%d", v)
			s, present := rawDial(t, h.addr, id, false, v)
			if present {
				t.Fatal("session present on a first connect")
			}
			if codes := s.subscribe(1, "d/#", 1); len(codes) != 1 || codes[0] != 1 {
				t.Fatalf("SUBACK %v", codes)
			}
			ctx := context.Background()
			for i := range 3 {
				if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "d/x", Payload: fmt.Appendf(nil, "m%d", i), QoS: 1,
					Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
					t.Fatal(err)
				}
			}
			var pids []uint16
			for i := range 3 {
				pk := s.read()
				if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup || string(pk.Payload) != fmt.Sprintf("m%d", i) {
					t.Fatalf("delivery %d: %+v", i, pk)
				}
				pids = append(pids, pk.PacketID)
			}
			s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pids[0]})
			waitFor(t, func() bool { return h.a.inflight() == 2 })
			_ = s.c.Close()
			waitFor(t, func() bool { return h.detached(id) })
			if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "d/x", Payload: []byte("m3"), QoS: 1,
				Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
				t.Fatal(err)
			}

			s, present = rawDial(t, h.addr, id, false, v)
			if !present {
				t.Fatal("session not present on return")
			}
			for i := 1; i < 3; i++ {
				pk := s.read()
				if !pk.FixedHeader.Dup || pk.PacketID != pids[i] || string(pk.Payload) != fmt.Sprintf("m%d", i) {
					t.Fatalf("resend %d: dup %v pid %d (want %d) %q", i, pk.FixedHeader.Dup, pk.PacketID, pids[i], pk.Payload)
				}
			}
			pk := s.read()
			if pk.FixedHeader.Dup || string(pk.Payload) != "m3" || pk.PacketID == pids[1] || pk.PacketID == pids[2] {
				t.Fatalf("never sent before: dup %v pid %d %q", pk.FixedHeader.Dup, pk.PacketID, pk.Payload)
			}
			if codes := s.subscribe(pids[1], "e/#", 1); len(codes) != 1 || codes[0] != 1 {
				t.Fatalf("SUBSCRIBE with an id the hub has out: SUBACK %v, want granted", codes)
			}
			for _, p := range []uint16{pids[1], pids[2], pk.PacketID} {
				s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: p})
			}
			waitFor(t, func() bool { return h.a.inflight() == 0 && h.queued(id) == 0 })
		})
	}
}
