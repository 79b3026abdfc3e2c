package mqttwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadPacket decodes arbitrary bytes as a stream of packets, as the
// lean client's reader does: no panic, and a PUBLISH that parses
// re-encodes to one that parses to the same fields.
func FuzzReadPacket(f *testing.F) {
	f.Add(AppendPublish(nil, PublishHeader{Topic: "a/b", QoS: 1, ID: 3}, make([]byte, 64)))
	f.Add(AppendPublish(nil, PublishHeader{Topic: "a/b"}, make([]byte, 300)))
	f.Add(AppendPublish(nil, PublishHeader{Version: V5, Topic: "a", QoS: 2, ID: 3, Properties: []byte{1, 1}}, []byte("x")))
	f.Add([]byte{0x20, 2, 0, 0, 0x90, 3, 0, 1, 0x80, 0x40, 2, 0, 1, 0xd0, 0})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x62, 2, 0, 9, 0x50, 2, 0, 9, 0x70, 2, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The fuzzer minimizes each new interesting input in time
		// quadratic in its length: one of a few KiB stalls the run for
		// the minute minimization may take. A bufio.Reader of the
		// smallest size and a small bound keep the in-place path, the
		// scratch path and the size refusal all within reach of inputs
		// of a few hundred bytes, so longer ones add nothing.
		if len(b) > 512 {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(b), 16)
		var scratch []byte
		for range 64 {
			p, err := ReadPacket(br, &scratch, 256)
			if err != nil {
				return
			}
			for _, version := range []byte{V311, V5} {
				v, err := ParsePublish(p, version)
				if err != nil || len(v.Topic) > 0xffff {
					continue
				}
				h := PublishHeader{Version: version, Topic: string(v.Topic), QoS: v.QoS, Dup: v.Dup, Retain: v.Retain, ID: v.ID, Properties: v.Properties}
				re := AppendPublish(nil, h, v.Payload)
				var s2 []byte
				q, err := ReadPacket(reader(re), &s2, 1<<17)
				if err != nil {
					t.Fatalf("re-encoded PUBLISH: %v", err)
				}
				w, err := ParsePublish(q, version)
				if err != nil || w.QoS != v.QoS || w.ID != v.ID || w.Dup != v.Dup || w.Retain != v.Retain ||
					!bytes.Equal(w.Topic, v.Topic) || !bytes.Equal(w.Properties, v.Properties) || !bytes.Equal(w.Payload, v.Payload) {
					t.Fatalf("re-encoded PUBLISH parses to %+v, %v; want %+v", w, err, v)
				}
			}
			parseAll(p)
		}
	})
}

// parseAll runs every parser over p in both versions: what matters is
// that none panics.
func parseAll(p Packet) {
	for _, v := range []byte{V311, V5} {
		_, _ = ParsePublish(p, v)
		_, _ = ParseAck(p, v)
		_, _ = ParseConnack(p, v)
		_, _, _ = ParseSuback(p, v)
		_, _ = ParseDisconnect(p, v)
		_, _ = ParseSubscribe(p, v)
	}
	_, _ = ParseConnect(p)
}

// fuzzParser fuzzes one parser over packets of type typ with any flags and
// body, in both versions, seeded with seeds (whole packets whose length
// fits one byte). The property is that it returns rather than panics.
func fuzzParser(f *testing.F, typ byte, parse func(Packet, byte) error, seeds ...[]byte) {
	for _, s := range seeds {
		f.Add(s[0]&0x0f, s[2:], false)
		f.Add(s[0]&0x0f, s[2:], true)
	}
	f.Fuzz(func(t *testing.T, flags byte, body []byte, v5 bool) {
		version := byte(V311)
		if v5 {
			version = V5
		}
		_ = parse(Packet{Type: typ, Flags: flags & 0x0f, Body: body}, version)
	})
}

func FuzzParsePublish(f *testing.F) {
	fuzzParser(f, Publish, func(p Packet, v byte) error { _, err := ParsePublish(p, v); return err },
		AppendPublish(nil, PublishHeader{Topic: "a", QoS: 1, ID: 1}, []byte("x")),
		AppendPublish(nil, PublishHeader{Version: V5, Topic: "a", QoS: 2, ID: 1, Properties: []byte{0x02, 0, 0, 0, 1}}, []byte("x")))
}

func FuzzParseAck(f *testing.F) {
	fuzzParser(f, Puback, func(p Packet, v byte) error { _, err := ParseAck(p, v); return err },
		AppendAck(nil, Puback, 1), AppendAckCode(nil, Puback, 1, 0x80), []byte{0x40, 6, 0, 1, 0x80, 2, 0x1f, 0})
}

func FuzzParseConnack(f *testing.F) {
	fuzzParser(f, Connack, func(p Packet, v byte) error { _, err := ParseConnack(p, v); return err },
		[]byte{0x20, 2, 0, 0}, []byte{0x20, 6, 1, 0x87, 3, 0x21, 0, 9})
}

func FuzzParseSuback(f *testing.F) {
	fuzzParser(f, Suback, func(p Packet, v byte) error { _, _, err := ParseSuback(p, v); return err },
		[]byte{0x90, 3, 0, 1, 1}, []byte{0x90, 5, 0, 1, 0, 0, 0x80})
}

func FuzzParseDisconnect(f *testing.F) {
	fuzzParser(f, Disconnect, func(p Packet, v byte) error { _, err := ParseDisconnect(p, v); return err },
		AppendDisconnect(nil), AppendDisconnectCode(nil, 0x8e), []byte{0xe0, 3, 0x8e, 1, 0})
}

func FuzzParseConnect(f *testing.F) {
	fuzzParser(f, Connect, func(p Packet, _ byte) error { _, err := ParseConnect(p); return err },
		AppendConnect(nil, ConnectSpec{ClientID: "c", Username: "u", Password: "p"}),
		AppendConnect(nil, ConnectSpec{Version: V5, ClientID: "c", Properties: []byte{0x11, 0, 0, 0, 1}, Will: &Will{Topic: "w", Payload: []byte("x")}}))
}

func FuzzParseSubscribe(f *testing.F) {
	fuzzParser(f, Subscribe, func(p Packet, v byte) error { _, err := ParseSubscribe(p, v); return err },
		AppendSubscribe(nil, V311, 1, 1, "a/b", "c"), AppendSubscribe(nil, V5, 1, 0, "a"))
}

// BenchmarkAppendPublish is the lean publisher's encoding of one message
// into its output buffer: 0 allocs/op.
func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, 64<<10)
	payload := make([]byte, 64)
	b.ReportAllocs()
	for i := range b.N {
		if len(buf) > 60<<10 {
			buf = buf[:0]
		}
		buf = AppendPublishHead(buf, PublishHeader{Topic: "bench/0", QoS: 1, ID: uint16(i | 1)}, len(payload))
		buf = append(buf, payload...)
	}
}

// BenchmarkReadPublish is the lean subscriber's reading and parsing of
// one message and the PUBACK it answers with: 0 allocs/op.
func BenchmarkReadPublish(b *testing.B) {
	one := AppendPublish(nil, PublishHeader{Topic: "bench/0", QoS: 1, ID: 1}, make([]byte, 64))
	stream := bytes.Repeat(one, 1000)
	next := loopReader(b, stream)
	acks := make([]byte, 0, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(one)))
	for range b.N {
		v, err := ParsePublish(next(), V311)
		if err != nil {
			b.Fatal(err)
		}
		acks = AppendAck(acks[:0], Puback, v.ID)
	}
}

// BenchmarkReadPuback is the lean publisher's reading of the PUBACKs
// that free its window: 0 allocs/op.
func BenchmarkReadPuback(b *testing.B) {
	next := loopReader(b, bytes.Repeat(AppendAck(nil, Puback, 7), 1000))
	b.ReportAllocs()
	for range b.N {
		if _, err := ParseAck(next(), V311); err != nil {
			b.Fatal(err)
		}
	}
}

// loopReader reads the packets of stream one by one, from the start again
// at its end, without allocating.
func loopReader(b *testing.B, stream []byte) func() Packet {
	r := bytes.NewReader(stream)
	br := bufio.NewReaderSize(r, readerSize)
	var scratch []byte
	return func() Packet {
		p, err := ReadPacket(br, &scratch, 1<<16)
		if errors.Is(err, io.EOF) {
			r.Reset(stream)
			br.Reset(r)
			p, err = ReadPacket(br, &scratch, 1<<16)
		}
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
}
