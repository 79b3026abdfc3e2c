package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// reader is a bufio.Reader over b of the lean client's size.
func reader(b []byte) *bufio.Reader {
	return bufio.NewReaderSize(bytes.NewReader(b), leanReadBuffer)
}

func TestPublishRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		topic string
		qos   byte
		id    uint16
		size  int
	}{
		{"qos0 small", "a/b", 0, 0, 64},
		{"qos1", "bench/1", 1, 7, 64},
		{"qos2 max id", "x", 2, 65535, headerSize},
		{"two-byte length", "t", 1, 1, 200},
		{"larger than the read buffer", strings.Repeat("t", 300), 1, 9, leanReadBuffer + 1000},
		{"empty topic", "", 0, 0, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := header{Run: 1, Pub: 2, Seq: 3, SentNs: 4}
			b := appendPublishHead(nil, tc.topic, tc.qos, tc.id, tc.size)
			b = appendPayload(b, h, tc.size)
			b = appendAck(b, pktPuback, tc.id) // a second packet after it
			br := reader(b)
			var scratch []byte
			p, err := readPacket(br, &scratch)
			if err != nil {
				t.Fatal(err)
			}
			v, err := parsePublish(p)
			if err != nil {
				t.Fatal(err)
			}
			if p.typ != pktPublish || v.qos != tc.qos || v.id != tc.id || string(v.topic) != tc.topic || len(v.payload) != tc.size {
				t.Errorf("decoded type %d qos %d id %d topic %q payload %d bytes", p.typ, v.qos, v.id, v.topic, len(v.payload))
			}
			if got, err := decodeHeader(v.payload); err != nil || got != h {
				t.Errorf("payload header %+v, %v", got, err)
			}
			p, err = readPacket(br, &scratch)
			if err != nil || p.typ != pktPuback {
				t.Fatalf("second packet: type %d, %v", p.typ, err)
			}
			if id, err := parseAckID(p); err != nil || id != tc.id {
				t.Errorf("PUBACK id %d, %v", id, err)
			}
			if _, err := readPacket(br, &scratch); !errors.Is(err, io.EOF) {
				t.Errorf("after the last packet: %v, want EOF", err)
			}
		})
	}
}

func TestControlPackets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"subscribe", appendSubscribe(nil, 1, "a/b", 1), []byte{0x82, 8, 0, 1, 0, 3, 'a', '/', 'b', 1}},
		{"puback", appendAck(nil, pktPuback, 0x0102), []byte{0x40, 2, 1, 2}},
		{"pubrec", appendAck(nil, pktPubrec, 5), []byte{0x50, 2, 0, 5}},
		{"pubrel has flags 0010", appendAck(nil, pktPubrel, 5), []byte{0x62, 2, 0, 5}},
		{"pubcomp", appendAck(nil, pktPubcomp, 5), []byte{0x70, 2, 0, 5}},
		{"persistent connect", appendConnect(nil, connectSpec{clientID: "c", keepalive: 60}), []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 60, 0, 1, 'c'}},
		{"remaining length 128", appendRemainingLength(nil, 128), []byte{0x80, 0x01}},
		{"remaining length max", appendRemainingLength(nil, maxRemainingLn), []byte{0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tc := range tests {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, tc.got, tc.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    []byte
		parse func(packet) error
		want  string
	}{
		{"five-byte remaining length", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, nil, "longer than 4 bytes"},
		{"too large", append([]byte{0x30}, appendRemainingLength(nil, maxPacketSize+1)...), nil, "more than"},
		{"truncated length", []byte{0x30, 0x80}, nil, "unexpected EOF"},
		{"truncated body", []byte{0x40, 2, 0}, nil, "unexpected EOF"},
		{"publish qos 3", []byte{0x36, 3, 0, 1, 'a'}, parsePublishErr, "QoS 3"},
		{"publish without topic", []byte{0x30, 1, 0}, parsePublishErr, "no topic"},
		{"publish topic past the end", []byte{0x30, 3, 0, 5, 'a'}, parsePublishErr, "topic of 5 bytes"},
		{"qos1 publish without id", []byte{0x32, 3, 0, 1, 'a'}, parsePublishErr, "without a packet id"},
		{"qos1 publish id 0", []byte{0x32, 5, 0, 1, 'a', 0, 0}, parsePublishErr, "packet id 0"},
		{"short puback", []byte{0x40, 1, 0}, parseAckErr, "of 1 bytes"},
		{"connack refused", []byte{0x20, 2, 0, 5}, parseConnackErr, "not authorized"},
		{"connack bad password", []byte{0x20, 2, 0, 4}, parseConnackErr, "bad user name or password"},
		{"not a connack", []byte{0x40, 2, 0, 1}, parseConnackErr, "want CONNACK"},
		{"long connack", []byte{0x20, 3, 0, 0, 0}, parseConnackErr, "CONNACK of 3 bytes"},
		{"short suback", []byte{0x90, 2, 0, 1}, parseSubackErr, "SUBACK of 2 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var scratch []byte
			p, err := readPacket(reader(tc.in), &scratch)
			if err == nil && tc.parse != nil {
				err = tc.parse(p)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func parsePublishErr(p packet) error { _, err := parsePublish(p); return err }
func parseAckErr(p packet) error     { _, err := parseAckID(p); return err }
func parseConnackErr(p packet) error { _, err := parseConnack(p); return err }
func parseSubackErr(p packet) error  { _, _, err := parseSuback(p); return err }

// FuzzReadPacket decodes arbitrary bytes as a stream of packets, as the
// lean client's reader does: no panic, and a PUBLISH that decodes
// re-encodes to the same bytes.
func FuzzReadPacket(f *testing.F) {
	f.Add(appendPayload(appendPublishHead(nil, "a/b", 1, 3, 64), header{Seq: 1}, 64))
	f.Add([]byte{0x20, 2, 0, 0, 0x90, 3, 0, 1, 0x80, 0x40, 2, 0, 1, 0xd0, 0})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x62, 2, 0, 9, 0x50, 2, 0, 9, 0x70, 2, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		br := reader(b)
		var scratch []byte
		for range 64 {
			p, err := readPacket(br, &scratch)
			if err != nil {
				return
			}
			switch p.typ {
			case pktPublish:
				v, err := parsePublish(p)
				if err != nil || len(v.topic) > 0xffff {
					continue
				}
				re := appendPublishHead(nil, string(v.topic), v.qos, v.id, len(v.payload))
				re = append(re, v.payload...)
				q, err := readPacket(reader(re), &scratch)
				if err != nil {
					t.Fatalf("re-encoded PUBLISH: %v", err)
				}
				w, err := parsePublish(q)
				if err != nil || w.qos != v.qos || w.id != v.id || !bytes.Equal(w.topic, v.topic) || !bytes.Equal(w.payload, v.payload) {
					t.Fatalf("re-encoded PUBLISH decodes to %+v, %v; want %+v", w, err, v)
				}
			case pktConnack:
				_, _ = parseConnack(p)
			case pktSuback:
				_, _, _ = parseSuback(p)
			default:
				_, _ = parseAckID(p)
			}
		}
	})
}

// BenchmarkAppendPublish is the lean publisher's encoding of one message
// into its output buffer.
func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for i := range b.N {
		if len(buf) > 60<<10 {
			buf = buf[:0]
		}
		buf = appendPublishHead(buf, "bench/0", 1, uint16(i|1), 64)
		buf = appendPayload(buf, header{Run: 1, Seq: uint64(i)}, 64)
	}
}

// BenchmarkReadPublish is the lean subscriber's decoding of one message.
func BenchmarkReadPublish(b *testing.B) {
	one := appendPayload(appendPublishHead(nil, "bench/0", 1, 1, 64), header{Run: 1}, 64)
	stream := bytes.Repeat(one, 1000)
	r := bytes.NewReader(stream)
	br := bufio.NewReaderSize(r, leanReadBuffer)
	var scratch []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(one)))
	for range b.N {
		p, err := readPacket(br, &scratch)
		if errors.Is(err, io.EOF) {
			r.Reset(stream)
			br.Reset(r)
			p, err = readPacket(br, &scratch)
		}
		if err != nil {
			b.Fatal(err)
		}
		if _, err := parsePublish(p); err != nil {
			b.Fatal(err)
		}
	}
}
