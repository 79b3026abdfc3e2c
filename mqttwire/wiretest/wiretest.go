// Package wiretest is the hub's raw MQTT test client: a connection written
// and read by hand with mqttwire, which holds a place without a goroutine
// or a keepalive, sends exactly what a test says and shows the exact codes.
// The mqtt and e2e tests share it.
package wiretest

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hubsmith/hub/mqttwire"
)

// Wait bounds each read and write of Send, Next and the helpers on them.
const Wait = 5 * time.Second

// Client is an MQTT connection read and written by hand.
type Client struct {
	net.Conn
	Version byte // of the CONNECT: mqttwire.V311 or V5
	r       *bufio.Reader
	scratch []byte
}

// Connect sends spec's CONNECT over conn and reads the CONNACK. The
// connection is closed at once when the CONNACK refuses, else when the
// test ends.
func Connect(t testing.TB, conn net.Conn, spec mqttwire.ConnectSpec) (*Client, mqttwire.ConnackView) {
	t.Helper()
	v := spec.Version
	if v == 0 {
		v = mqttwire.V311
	}
	c := &Client{Conn: conn, Version: v, r: bufio.NewReader(conn)}
	c.Send(t, mqttwire.AppendConnect(nil, spec))
	ack := c.Connack(t)
	if ack.Code != 0 {
		_ = conn.Close()
	} else {
		t.Cleanup(func() { _ = conn.Close() })
	}
	return c, ack
}

// Dial connects to addr with spec and wants the CONNACK to accept.
func Dial(t testing.TB, addr string, spec mqttwire.ConnectSpec) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, Wait)
	if err != nil {
		t.Fatalf("mqtt dial: %v", err)
	}
	c, ack := Connect(t, conn, spec)
	if ack.Code != 0 {
		t.Fatalf("CONNACK code %#x", ack.Code)
	}
	return c
}

// Connack reads the CONNACK.
func (c *Client) Connack(t testing.TB) mqttwire.ConnackView {
	t.Helper()
	ack, err := mqttwire.ParseConnack(c.Next(t), c.Version)
	if err != nil {
		t.Fatalf("mqtt: want CONNACK: %v", err)
	}
	return ack
}

// Send writes the packet pk.
func (c *Client) Send(t testing.TB, pk []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(Wait))
	if _, err := c.Write(pk); err != nil {
		t.Fatalf("mqtt write: %v", err)
	}
}

// ReadPacket reads one packet under the read deadline already set; its
// body is valid until the next read.
func (c *Client) ReadPacket() (mqttwire.Packet, error) {
	return mqttwire.ReadPacket(c.r, &c.scratch, mqttwire.MaxRemainingLength)
}

// TryNext reads the next packet within d.
func (c *Client) TryNext(d time.Duration) (mqttwire.Packet, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	return c.ReadPacket()
}

// Next reads the next packet within Wait.
func (c *Client) Next(t testing.TB) mqttwire.Packet {
	t.Helper()
	p, err := c.TryNext(Wait)
	if err != nil {
		t.Fatalf("mqtt read: %v", err)
	}
	return p
}

// Subscribe sends a SUBSCRIBE of filters at qos (packet id 1) and returns
// the SUBACK's codes, skipping what comes before it (a retained value).
func (c *Client) Subscribe(t testing.TB, qos byte, filters ...string) []byte {
	t.Helper()
	c.Send(t, mqttwire.AppendSubscribe(nil, c.Version, 1, qos, filters...))
	for {
		p := c.Next(t)
		if p.Type != mqttwire.Suback {
			continue
		}
		_, codes, err := mqttwire.ParseSuback(p, c.Version)
		if err != nil {
			t.Fatalf("mqtt: %v", err)
		}
		return bytes.Clone(codes)
	}
}

// ReadPublish reads packets until a PUBLISH, which it returns (its
// payload a copy).
func (c *Client) ReadPublish(t testing.TB) mqttwire.PublishView {
	t.Helper()
	for {
		p := c.Next(t)
		if p.Type != mqttwire.Publish {
			continue
		}
		pv, err := mqttwire.ParsePublish(p, c.Version)
		if err != nil {
			t.Fatal(err)
		}
		pv.Topic, pv.Payload = bytes.Clone(pv.Topic), bytes.Clone(pv.Payload)
		return pv
	}
}

// Ping sends PINGREQ and wants PINGRESP.
func (c *Client) Ping(t testing.TB) {
	t.Helper()
	c.Send(t, mqttwire.AppendPingreq(nil))
	if p := c.Next(t); p.Type != mqttwire.Pingresp {
		t.Fatalf("want PINGRESP, got packet type %d", p.Type)
	}
}

// WaitClosed reads until the server closes the connection, within Wait
// of the last packet.
func (c *Client) WaitClosed(t testing.TB) {
	t.Helper()
	for {
		_, err := c.TryNext(Wait)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection is still open")
		}
		return
	}
}
