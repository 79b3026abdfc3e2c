package crashtest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// rawMQTT is a hand-written MQTT 3.1.1 client: it can stop reading
// altogether (a stalled subscriber) and later read and acknowledge what
// the hub sent.
type rawMQTT struct {
	conn net.Conn
	r    *bufio.Reader
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendRemaining(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func packet(typ byte, body []byte) []byte {
	return append(appendRemaining([]byte{typ}, len(body)), body...)
}

// rawConnect connects with MQTT version (4 = 3.1.1, 5) and keep-alive 0.
func rawConnect(addr, id string, version byte, clean bool) (*rawMQTT, error) {
	conn, err := net.DialTimeout("tcp", addr, ackTimeout)
	if err != nil {
		return nil, err
	}
	c := &rawMQTT{conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	connect := appendString(nil, "MQTT")
	connect = append(connect, version, flags, 0, 0)
	if version == 5 {
		connect = append(connect, 0) // no properties
	}
	connect = appendString(connect, id)
	_ = conn.SetDeadline(time.Now().Add(ackTimeout))
	if _, err := conn.Write(packet(0x10, connect)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	typ, body, err := c.read()
	if err != nil || typ>>4 != 2 || len(body) < 2 || body[1] != 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("raw mqtt: want CONNACK accepted, got type %d %x: %v", typ>>4, body, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// dialRawMQTT connects (3.1.1) with a small receive buffer, subscribes to
// filter at qos and returns after SUBACK.
func dialRawMQTT(addr, id string, clean bool, filter string, qos byte) (*rawMQTT, error) {
	c, err := rawConnect(addr, id, 4, clean)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	sub := binary.BigEndian.AppendUint16(nil, 1)
	sub = appendString(sub, filter)
	sub = append(sub, qos)
	_ = c.conn.SetDeadline(time.Now().Add(ackTimeout))
	if _, err := c.conn.Write(packet(0x82, sub)); err != nil {
		c.close()
		return nil, err
	}
	if typ, _, err := c.read(); err != nil || typ>>4 != 9 {
		c.close()
		return nil, fmt.Errorf("raw mqtt: want SUBACK, got type %d: %v", typ>>4, err)
	}
	_ = c.conn.SetDeadline(time.Time{})
	return c, nil
}

// publish1 publishes payload at QoS 1 with packet id pid and returns the
// PUBACK reason code (0 = success). An error means no PUBACK came: the
// connection was closed (MQTT 3.1.1's only way to refuse) or timed out.
func (c *rawMQTT) publish1(version byte, topic, payload string, pid uint16) (byte, error) {
	return c.publish1Props(version, topic, payload, pid, nil)
}

// publish1Props is publish1 with MQTT 5 properties (encoded, without
// their length).
func (c *rawMQTT) publish1Props(version byte, topic, payload string, pid uint16, props []byte) (byte, error) {
	b := appendString(nil, topic)
	b = binary.BigEndian.AppendUint16(b, pid)
	if version == 5 {
		b = appendRemaining(b, len(props))
		b = append(b, props...)
	}
	b = append(b, payload...)
	_ = c.conn.SetDeadline(time.Now().Add(ackTimeout))
	defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	if _, err := c.conn.Write(packet(0x32, b)); err != nil {
		return 0, err
	}
	for {
		typ, body, err := c.read()
		if err != nil {
			return 0, err
		}
		switch typ >> 4 {
		case 4: // PUBACK
			if len(body) < 2 || binary.BigEndian.Uint16(body) != pid {
				continue
			}
			if len(body) == 2 {
				return 0, nil
			}
			return body[2], nil
		case 14: // DISCONNECT
			code := byte(0)
			if len(body) > 0 {
				code = body[0]
			}
			return 0, fmt.Errorf("raw mqtt: DISCONNECT reason 0x%02x", code)
		}
	}
}

// read reads one packet: its first byte and its body.
func (c *rawMQTT) read() (byte, []byte, error) {
	typ, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("raw mqtt: bad remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return typ, body, nil
}

// rawPublish is a PUBLISH the raw client received.
type rawPublish struct {
	topic   string
	payload string
	qos     byte
	dup     bool
}

// drain reads and acknowledges PUBLISH packets until quiet passes without
// one or total is over, and returns them; the error is set when the
// connection failed (not for the quiet timeout).
func (c *rawMQTT) drain(quiet, total time.Duration) ([]rawPublish, error) {
	var out []rawPublish
	// A receive buffer smaller than the loopback MSS stops window updates
	// from going out (receiver-side silly window avoidance): grow it first.
	if tc, ok := c.conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(1 << 20)
	}
	end := time.Now().Add(total)
	for time.Now().Before(end) {
		dl := time.Now().Add(quiet)
		if dl.After(end) {
			dl = end
		}
		_ = c.conn.SetReadDeadline(dl)
		typ, body, err := c.read()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if typ>>4 != 3 || len(body) < 2 {
			continue
		}
		qos := (typ >> 1) & 3
		tl := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+tl {
			continue
		}
		p := rawPublish{topic: string(body[2 : 2+tl]), qos: qos, dup: typ&0x08 != 0}
		rest := body[2+tl:]
		if qos > 0 && len(rest) >= 2 {
			id := rest[:2]
			rest = rest[2:]
			_ = c.conn.SetWriteDeadline(time.Now().Add(ackTimeout))
			_, _ = c.conn.Write(packet(0x40, id))
		}
		p.payload = string(rest)
		out = append(out, p)
	}
	return out, nil
}

func (c *rawMQTT) close() { _ = c.conn.Close() }
