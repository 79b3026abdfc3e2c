package main

import (
	"errors"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range []int{headerSize, 64, 1000} {
		h := header{Run: 0xdeadbeef, Pub: 9999, Seq: 1<<40 + 3, SentNs: -12345}
		b := encodePayload(h, size)
		if len(b) != size {
			t.Fatalf("size %d: encoded %d bytes", size, len(b))
		}
		got, err := decodeHeader(b)
		if err != nil || got != h {
			t.Errorf("size %d: decode = %+v, %v; want %+v", size, got, err, h)
		}
	}
}

func TestTextPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, textHeaderSize, 64, 1000} {
		h := header{Run: 0xdeadbeef, Pub: 9999, Seq: 1<<40 + 3, SentNs: -12345}
		b := encodeTextPayload(h, size)
		if len(b) != max(size, textHeaderSize) {
			t.Fatalf("size %d: encoded %d bytes", size, len(b))
		}
		for _, c := range b {
			if c < 0x21 || c > 0x7e {
				t.Fatalf("size %d: byte %q is not printable ASCII", size, c)
			}
		}
		got, err := decodeHeader(b)
		if err != nil || got != h {
			t.Errorf("size %d: decode = %+v, %v; want %+v", size, got, err, h)
		}
	}
}

func TestDecodeHeaderRejects(t *testing.T) {
	t.Parallel()
	good := encodePayload(header{Run: 1}, 32)
	badVersion := append([]byte(nil), good...)
	badVersion[2] = 9
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", good[:headerSize-1]},
		{"bad magic", append([]byte("XX"), good[2:]...)},
		{"bad version", badVersion},
		{"short text", encodeTextPayload(header{}, 0)[:textHeaderSize-1]},
		{"text not hex", append([]byte("HLtZ"), encodeTextPayload(header{}, 0)[4:]...)},
		{"text upper-case hex", append([]byte("HLtA"), encodeTextPayload(header{}, 0)[4:]...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := decodeHeader(tc.b); !errors.Is(err, errBadPayload) {
				t.Errorf("decodeHeader = %v, want errBadPayload", err)
			}
		})
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodePayload(header{Run: 1, Pub: 2, Seq: 3, SentNs: 4}, 40))
	f.Add([]byte("HL\x01"))
	f.Add([]byte{})
	f.Add(encodeTextPayload(header{Run: 1, Pub: 2, Seq: 3, SentNs: 4}, 60))
	f.Add([]byte("HLt0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			return
		}
		// Whatever decodes must survive a round trip.
		enc := encodePayload
		if b[2] == 't' {
			enc = encodeTextPayload
		}
		again, err := decodeHeader(enc(h, len(b)))
		if err != nil || again != h {
			t.Fatalf("round trip of %+v: %+v, %v", h, again, err)
		}
	})
}
