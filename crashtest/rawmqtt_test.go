package crashtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hubsmith/hub/mqttwire"
)

// rawMaxPacket bounds what the raw client reads: the crash tests' payloads
// are a few KiB, so a larger length means the stream is out of step, and
// the test should fail rather than wait for megabytes that never come.
const rawMaxPacket = 16 << 20

// rawMQTT is a hand-written MQTT 3.1.1/5 client: it can stop reading
// altogether (a stalled subscriber) and later read and acknowledge what
// the hub sent, and it sends packets a library would not (properties of
// its choice, QoS 1 without the library's retries).
type rawMQTT struct {
	conn    net.Conn
	r       *bufio.Reader
	version byte // mqttwire.V311 or mqttwire.V5
	scratch []byte
}

// rawConnect connects with MQTT version (4 = 3.1.1, 5) and keep-alive 0.
func rawConnect(addr, id string, version byte, clean bool) (*rawMQTT, error) {
	c, code, err := rawConnectSpec(addr, mqttwire.ConnectSpec{Version: version, ClientID: id, Clean: clean})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("raw mqtt: want CONNACK accepted, got code 0x%02x", code)
	}
	return c, nil
}

// rawConnectSpec connects with s and returns the CONNACK code; the
// connection is closed unless it is 0.
func rawConnectSpec(addr string, s mqttwire.ConnectSpec) (*rawMQTT, byte, error) {
	conn, err := net.DialTimeout("tcp", addr, ackTimeout)
	if err != nil {
		return nil, 0, err
	}
	c := &rawMQTT{conn: conn, r: bufio.NewReaderSize(conn, 4096), version: s.Version}
	_ = conn.SetDeadline(time.Now().Add(ackTimeout))
	if _, err := conn.Write(mqttwire.AppendConnect(nil, s)); err != nil {
		_ = conn.Close()
		return nil, 0, err
	}
	p, err := c.read()
	var ack mqttwire.ConnackView
	if err == nil {
		ack, err = mqttwire.ParseConnack(p, s.Version)
	}
	if err != nil {
		_ = conn.Close()
		return nil, 0, fmt.Errorf("raw mqtt: want CONNACK: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	if ack.Code != 0 {
		_ = conn.Close()
		return nil, ack.Code, nil
	}
	return c, 0, nil
}

// dialRawMQTT connects (3.1.1) with a small receive buffer, subscribes to
// filter at qos and returns after SUBACK.
func dialRawMQTT(addr, id string, clean bool, filter string, qos byte) (*rawMQTT, error) {
	c, err := rawConnect(addr, id, mqttwire.V311, clean)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	_ = c.conn.SetDeadline(time.Now().Add(ackTimeout))
	if _, err := c.conn.Write(mqttwire.AppendSubscribe(nil, c.version, 1, qos, filter)); err != nil {
		c.close()
		return nil, err
	}
	p, err := c.read()
	if err == nil {
		_, _, err = mqttwire.ParseSuback(p, c.version)
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("raw mqtt: want SUBACK: %w", err)
	}
	_ = c.conn.SetDeadline(time.Time{})
	return c, nil
}

// publish1 publishes payload at QoS 1 with packet id pid and returns the
// PUBACK reason code (0 = success). An error means no PUBACK came: the
// connection was closed (MQTT 3.1.1's only way to refuse) or timed out.
func (c *rawMQTT) publish1(topic, payload string, pid uint16) (byte, error) {
	return c.publish1Props(topic, payload, pid, nil)
}

// publish1Props is publish1 with MQTT 5 properties (encoded, without
// their length).
func (c *rawMQTT) publish1Props(topic, payload string, pid uint16, props []byte) (byte, error) {
	b := mqttwire.AppendPublish(nil, mqttwire.PublishHeader{Version: c.version, Topic: topic, QoS: 1, ID: pid, Properties: props}, []byte(payload))
	_ = c.conn.SetDeadline(time.Now().Add(ackTimeout))
	defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	if _, err := c.conn.Write(b); err != nil {
		return 0, err
	}
	for {
		p, err := c.read()
		if err != nil {
			return 0, err
		}
		switch p.Type {
		case mqttwire.Puback:
			a, err := mqttwire.ParseAck(p, c.version)
			if err != nil {
				return 0, fmt.Errorf("raw mqtt: %w", err)
			}
			if a.ID == pid {
				return a.Code, nil
			}
		case mqttwire.Disconnect:
			code, err := mqttwire.ParseDisconnect(p, c.version)
			if err != nil {
				return 0, fmt.Errorf("raw mqtt: %w", err)
			}
			return 0, fmt.Errorf("raw mqtt: DISCONNECT reason 0x%02x", code)
		}
	}
}

// read reads one packet. Its body is a copy, so that callers may keep it
// (and what the parsers return from it) past the next read.
func (c *rawMQTT) read() (mqttwire.Packet, error) {
	p, err := mqttwire.ReadPacket(c.r, &c.scratch, rawMaxPacket)
	p.Body = bytes.Clone(p.Body)
	return p, err
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
		p, err := c.read()
		// The codec wraps errors inside a packet: a timeout there counts
		// as quiet too.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if p.Type != mqttwire.Publish {
			continue
		}
		v, err := mqttwire.ParsePublish(p, c.version)
		if err != nil {
			continue
		}
		if v.QoS > 0 {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ackTimeout))
			_, _ = c.conn.Write(mqttwire.AppendAck(nil, mqttwire.Puback, v.ID))
		}
		out = append(out, rawPublish{topic: string(v.Topic), payload: string(v.Payload), qos: v.QoS, dup: v.Dup})
	}
	return out, nil
}

func (c *rawMQTT) close() { _ = c.conn.Close() }
