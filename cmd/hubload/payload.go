package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The payload header every generated message starts with. The rest of the
// payload, up to --size bytes, is filler. Integers are big-endian.
//
//	0  2  magic "HL"
//	2  1  version (1)
//	3  1  reserved (0)
//	4  4  run id: tells this run's messages from a previous run's leftovers
//	8  4  publisher index
//	12 8  sequence number within the publisher, from 0
//	20 8  send time, Unix nanoseconds
const (
	headerSize     = 28
	payloadVersion = 1
	maxPayloadSize = 16 << 20
)

// errBadPayload is returned by decodeHeader for a payload that is not one of
// ours; the receiver counts it as invalid.
var errBadPayload = errors.New("not a hubload payload")

// header is the decoded head of a generated payload.
type header struct {
	Run    uint32
	Pub    uint32
	Seq    uint64
	SentNs int64
}

// encodePayload returns a payload of exactly size bytes (size >= headerSize)
// carrying h.
func encodePayload(h header, size int) []byte {
	return appendPayload(make([]byte, 0, max(size, headerSize)), h, size)
}

// filler is what pads a payload past its header.
var filler = func() []byte {
	b := make([]byte, 4096)
	for i := range b {
		b[i] = 'x'
	}
	return b
}()

// appendFiller appends n filler bytes to b.
func appendFiller(b []byte, n int) []byte {
	for n > 0 {
		k := min(n, len(filler))
		b = append(b, filler[:k]...)
		n -= k
	}
	return b
}

// appendPayload appends the payload encodePayload returns to b, so that a
// client can build it straight into its output buffer.
func appendPayload(b []byte, h header, size int) []byte {
	size = max(size, headerSize)
	var hd [headerSize]byte
	hd[0], hd[1], hd[2] = 'H', 'L', payloadVersion
	binary.BigEndian.PutUint32(hd[4:], h.Run)
	binary.BigEndian.PutUint32(hd[8:], h.Pub)
	binary.BigEndian.PutUint64(hd[12:], h.Seq)
	binary.BigEndian.PutUint64(hd[20:], uint64(h.SentNs))
	return appendFiller(append(b, hd[:]...), size-headerSize)
}

// The text form of the header, for protocols whose messages are text (XMPP
// chat bodies, SSE events): "HLt", then run id, publisher index, sequence
// number and send time as 8, 8, 16 and 16 lower-case hex digits, then 'x'
// filler up to --size bytes.
const textHeaderSize = 3 + 8 + 8 + 16 + 16

// encodeTextPayload is encodePayload in the text form.
func encodeTextPayload(h header, size int) []byte {
	return appendTextPayload(make([]byte, 0, max(size, textHeaderSize)), h, size)
}

// appendTextPayload appends the payload encodeTextPayload returns to b.
func appendTextPayload(b []byte, h header, size int) []byte {
	size = max(size, textHeaderSize)
	b = append(b, 'H', 'L', 't')
	b = appendHex(b, uint64(h.Run), 8)
	b = appendHex(b, uint64(h.Pub), 8)
	b = appendHex(b, h.Seq, 16)
	b = appendHex(b, uint64(h.SentNs), 16)
	return appendFiller(b, size-textHeaderSize)
}

const hexDigits = "0123456789abcdef"

// appendHex appends v as exactly n lower-case hex digits.
func appendHex(b []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		b = append(b, hexDigits[(v>>(4*uint(i)))&0xf])
	}
	return b
}

// parseHex reads s, lower-case hex digits only, as a number.
func parseHex(s []byte) (uint64, error) {
	var v uint64
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, fmt.Errorf("%w: %q is not a hex digit", errBadPayload, c)
		}
	}
	return v, nil
}

// decodeTextHeader reads the header of a payload made by encodeTextPayload.
func decodeTextHeader(b []byte) (header, error) {
	if len(b) < textHeaderSize {
		return header{}, fmt.Errorf("%w: %d bytes of text, need at least %d", errBadPayload, len(b), textHeaderSize)
	}
	var f [4]uint64
	off := 3
	for i, n := range []int{8, 8, 16, 16} {
		v, err := parseHex(b[off : off+n])
		if err != nil {
			return header{}, err
		}
		f[i], off = v, off+n
	}
	return header{Run: uint32(f[0]), Pub: uint32(f[1]), Seq: f[2], SentNs: int64(f[3])}, nil
}

// decodeHeader reads the header of a payload made by encodePayload or
// encodeTextPayload.
func decodeHeader(b []byte) (header, error) {
	if len(b) >= 3 && b[0] == 'H' && b[1] == 'L' && b[2] == 't' {
		return decodeTextHeader(b)
	}
	if len(b) < headerSize {
		return header{}, fmt.Errorf("%w: %d bytes, need at least %d", errBadPayload, len(b), headerSize)
	}
	if b[0] != 'H' || b[1] != 'L' {
		return header{}, fmt.Errorf("%w: bad magic %q", errBadPayload, b[:2])
	}
	if b[2] != payloadVersion {
		return header{}, fmt.Errorf("%w: version %d, want %d", errBadPayload, b[2], payloadVersion)
	}
	return header{
		Run:    binary.BigEndian.Uint32(b[4:]),
		Pub:    binary.BigEndian.Uint32(b[8:]),
		Seq:    binary.BigEndian.Uint64(b[12:]),
		SentNs: int64(binary.BigEndian.Uint64(b[20:])),
	}, nil
}
