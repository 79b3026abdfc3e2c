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
	if size < headerSize {
		size = headerSize
	}
	b := make([]byte, size)
	b[0], b[1], b[2] = 'H', 'L', payloadVersion
	binary.BigEndian.PutUint32(b[4:], h.Run)
	binary.BigEndian.PutUint32(b[8:], h.Pub)
	binary.BigEndian.PutUint64(b[12:], h.Seq)
	binary.BigEndian.PutUint64(b[20:], uint64(h.SentNs))
	for i := headerSize; i < size; i++ {
		b[i] = 'x'
	}
	return b
}

// decodeHeader reads the header of a payload made by encodePayload.
func decodeHeader(b []byte) (header, error) {
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
