package mqtt

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Bounds of the goodbye reasonConn says to a client it cuts off.
const (
	goodbyeTimeout = time.Second
	goodbyeDrain   = 1 << 20 // bytes of the client's packet read away so the close is a FIN, not a reset
)

// reasonConn lets an MQTT 5 client know why it is cut off when mochi
// stops reading it without a word: a packet over the Maximum Packet Size
// (mochi returns from its read loop on the fixed header) and a PUBLISH
// whose topic is not well-formed UTF-8 or holds U+0000 (mochi's decoding
// fails). mochi closes such a connection at once and sends nothing, and
// the unread bytes turn the close into a TCP reset. reasonConn follows
// the packet framing of what the client sends, notes the first packet
// mochi will refuse that way, and when the connection is closed sends
// DISCONNECT with the reason (0x95 packet too large, 0x81 malformed
// packet) to an MQTT 5 client, half-closes, and reads away (boundedly)
// what the client still sends, so the DISCONNECT arrives.
//
// It sits under asyncConn (above TLS), so it sees the bytes mochi reads
// and its Close runs on asyncConn's flusher.
type reasonConn struct {
	net.Conn
	max uint32 // Maximum Packet Size (0: none)

	mu      sync.Mutex
	state   int  // what the next byte is: frameHeader, frameLength, frameBody, frameDone
	typ     byte // packet type of the current packet
	length  int  // remaining length being decoded
	mult    int
	nlen    int    // length bytes read
	left    int    // body bytes still to come
	head    []byte // first body bytes of the current packet, when they matter
	want    int    // how many of them matter
	version byte   // protocol level from CONNECT (0: not seen yet)
	reason  byte   // the reason code to send on close (0: none)

	closeOnce sync.Once
	closeErr  error
}

const (
	frameHeader = iota
	frameLength
	frameBody
	frameDone // the refused packet was seen, or the framing is beyond us: mochi ends it
)

func newReasonConn(c net.Conn, max uint32) *reasonConn {
	return &reasonConn{Conn: c, max: max}
}

// protocolVersion is the CONNECT's protocol level (0 before it is read).
func (c *reasonConn) protocolVersion() byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// parkable reports that the client sent its CONNECT and every packet
// since in full: its next byte starts a packet (see parker).
func (c *reasonConn) parkable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version != 0 && c.state == frameHeader
}

// Read reads and follows the framing.
func (c *reasonConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.scan(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

// scan follows the packets in b; c.mu is held.
func (c *reasonConn) scan(b []byte) {
	for i := 0; i < len(b) && c.state != frameDone; {
		switch c.state {
		case frameHeader:
			c.typ = b[i] >> 4
			c.length, c.mult, c.nlen = 0, 1, 0
			c.state = frameLength
			i++
		case frameLength:
			v := b[i]
			i++
			c.length += int(v&0x7f) * c.mult
			c.mult *= 128
			c.nlen++
			if v&0x80 != 0 {
				if c.nlen == 4 {
					c.state = frameDone // malformed length: mochi says so itself
				}
				continue
			}
			if c.max > 0 && uint64(c.length)+1 > uint64(c.max) {
				c.reason = packets.ErrPacketTooLarge.Code
				c.state = frameDone
				continue
			}
			c.left, c.head, c.want = c.length, c.head[:0], 0
			switch c.typ {
			case packets.Connect:
				c.want = 2 // the protocol name's length, then the name and the level
			case packets.Publish:
				c.want = 2 // the topic's length, then the topic
			}
			c.state = frameBody
			if c.left == 0 {
				c.state = frameHeader
			}
		case frameBody:
			k := min(c.left, len(b)-i)
			if need := c.want - len(c.head); need > 0 {
				k = min(need, k) // inspect may want more of them
				c.head = append(c.head, b[i:i+k]...)
				c.inspect()
			}
			c.left -= k
			i += k
			if c.left == 0 && c.state == frameBody {
				c.state = frameHeader
			}
		}
	}
}

// inspect looks at the first bytes of a CONNECT (for the protocol level)
// or a PUBLISH (for its topic) as they come; c.mu is held.
func (c *reasonConn) inspect() {
	if len(c.head) < c.want {
		return
	}
	n := int(c.head[0])<<8 | int(c.head[1])
	switch c.typ {
	case packets.Connect:
		if c.want == 2 {
			c.want = 2 + n + 1
			return
		}
		if c.version == 0 {
			c.version = c.head[2+n]
		}
	case packets.Publish:
		if c.want == 2 {
			c.want = 2 + n
			if n > 0 {
				return
			}
		}
		if topic := c.head[2:]; !utf8.Valid(topic) || bytes.IndexByte(topic, 0) >= 0 {
			c.reason = packets.ErrMalformedInvalidUTF8.Code
			c.state = frameDone
		}
	}
	c.want = len(c.head) // nothing more to collect from this packet
}

// Close sends the reason, if there is one and the client speaks MQTT 5,
// and closes the connection.
func (c *reasonConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		reason, v5 := c.reason, c.version == 5
		c.mu.Unlock()
		if reason != 0 && v5 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(goodbyeTimeout))
			if _, err := c.Conn.Write([]byte{packets.Disconnect << 4, 1, reason}); err == nil {
				if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
				_ = c.Conn.SetReadDeadline(time.Now().Add(goodbyeTimeout))
				_, _ = io.CopyN(io.Discard, c.Conn, goodbyeDrain)
			}
		}
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}
