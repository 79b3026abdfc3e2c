package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/mqttwire"
)

// TestClientsAgainstHub runs every MQTT shape against a real hub with the
// lean client and with paho: every message must arrive once.
func TestClientsAgainstHub(t *testing.T) {
	_, mqttURL, _, _ := startLoadHub(t, 0)
	tests := []struct {
		name         string
		pubs, subs   int
		messages     int
		qos          byte
		fanout       bool
		persistent   bool
		rate         float64
		splitURL     bool // publishers on localhost, subscribers on --sub-url 127.0.0.1
		wantExpected uint64
	}{
		{"qos0 1to1", 1, 1, 500, 0, false, false, 0, false, 500},
		{"qos1 1to1", 1, 1, 500, 1, false, false, 0, false, 500},
		{"qos1 fan-out", 1, 10, 100, 1, true, false, 0, false, 1000},
		{"qos0 fan-in", 10, 1, 300, 0, false, false, 0, false, 300},
		{"qos2 pairs", 2, 2, 200, 2, false, false, 0, false, 200},
		{"qos1 persistent", 1, 1, 300, 1, false, true, 0, false, 300},
		{"qos1 paced", 1, 1, 100, 1, false, false, 1000, false, 100},
		{"qos1 sub-url", 1, 2, 100, 1, true, false, 0, true, 200},
	}
	for _, client := range []string{mqttClientLean, mqttClientPaho} {
		for _, tc := range tests {
			t.Run(client+" "+tc.name, func(t *testing.T) {
				c := testConfig("mqtt", mqttURL)
				c.mqttClient = client
				c.publishers, c.subscribers, c.messages, c.qos, c.fanout = tc.pubs, tc.subs, tc.messages, tc.qos, tc.fanout
				c.persistent, c.rate = tc.persistent, tc.rate
				if tc.splitURL {
					c.subURL, c.url = mqttURL, strings.Replace(mqttURL, "127.0.0.1", "localhost", 1)
				}
				name := strings.ReplaceAll(client+"-"+tc.name, " ", "-")
				c.topic, c.clientPrefix = "lean/"+name+"/%d", "lean-"+name
				if err := c.validate(); err != nil {
					t.Fatal(err)
				}
				r, err := runLoad(context.Background(), c, mqttTransport(c))
				if err != nil {
					t.Fatal(err)
				}
				checkClean(t, r, tc.wantExpected)
				if r.MQTTClient != client || r.ClientCPUMicrosPerDelivery < 0 {
					t.Errorf("client %q, %g µs per delivery", r.MQTTClient, r.ClientCPUMicrosPerDelivery)
				}
			})
		}
	}
}

// TestPersistentSessionRemoved checks that a persistent subscriber's
// session is gone after the run, for both clients: resuming it with clean
// session false finds no session present.
func TestPersistentSessionRemoved(t *testing.T) {
	_, mqttURL, _, _ := startLoadHub(t, 0)
	addr, err := mqttHostPort(mqttURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, client := range []string{mqttClientLean, mqttClientPaho} {
		t.Run(client, func(t *testing.T) {
			c := testConfig("mqtt", mqttURL)
			c.qos, c.persistent, c.mqttClient = 1, true, client
			c.clientPrefix, c.topic = "gone-"+client, "lean/gone/"+client+"/%d"
			r, err := runLoad(context.Background(), c, mqttTransport(c))
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, r, 100)
			// The hub ends a session once the clean connection that
			// removes it has gone: poll. Each probe leaves a session
			// of its own, which it removes the same way.
			id := c.clientPrefix + "-sub-0"
			deadline := time.Now().Add(5 * time.Second)
			for {
				present, err := probeSession(addr, id)
				if err != nil {
					t.Fatal(err)
				}
				if !present {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the persistent session is still on the hub 5 s after the run")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// probeSession connects as clientID with clean session false, returns
// whether the broker had a session for it, and removes the session again.
func probeSession(addr, clientID string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, present, err := dialLeanPresent(ctx, addr, mqttwire.ConnectSpec{ClientID: clientID, KeepAlive: 60})
	if err != nil {
		return false, err
	}
	newLeanConn(conn, br, nil, nil).start().close()
	if conn, br, err := dialLean(ctx, addr, mqttwire.ConnectSpec{ClientID: clientID, KeepAlive: 60, Clean: true}); err == nil {
		newLeanConn(conn, br, nil, nil).start().close()
	}
	return present, nil
}

// dialLeanPresent is dialLean that also returns CONNACK's session-present
// flag.
func dialLeanPresent(ctx context.Context, addr string, spec mqttwire.ConnectSpec) (net.Conn, *bufio.Reader, bool, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, false, err
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(mqttwire.AppendConnect(nil, spec)); err != nil {
		_ = conn.Close()
		return nil, nil, false, err
	}
	br := bufio.NewReaderSize(conn, leanReadBuffer)
	var scratch []byte
	p, err := mqttwire.ReadPacket(br, &scratch, maxPacketSize)
	if err != nil {
		_ = conn.Close()
		return nil, nil, false, err
	}
	ack, err := mqttwire.ParseConnack(p, mqttwire.V311)
	if err == nil {
		err = ack.Err()
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, false, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, ack.SessionPresent, nil
}

// fakeBroker accepts one connection on loopback and runs serve on it.
func fakeBroker(t *testing.T, serve func(conn net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		serve(conn, bufio.NewReader(conn))
	})
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	return l.Addr().String()
}

// expectConnect reads the CONNECT, which must be well formed, and
// answers with connack.
func expectConnect(t *testing.T, br *bufio.Reader, conn net.Conn, connack []byte) bool {
	var scratch []byte
	p, err := mqttwire.ReadPacket(br, &scratch, maxPacketSize)
	if err == nil {
		_, err = mqttwire.ParseConnect(p)
	}
	if err != nil {
		t.Errorf("want CONNECT: %v", err)
		return false
	}
	_, err = conn.Write(connack)
	return err == nil
}

// TestLeanBadBroker checks that a broker that refuses, answers garbage or
// drops the connection gives a clear error.
func TestLeanBadBroker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		connack []byte // the answer to CONNECT
		after   []byte // sent after the CONNACK, once subscribed
		want    string
	}{
		{"refused", []byte{0x20, 2, 0, 5}, nil, "not authorized"},
		{"not a connack", []byte{0x90, 3, 0, 1, 0}, nil, "want CONNACK"},
		{"garbage after connack", []byte{0x20, 2, 0, 0}, []byte{0x00, 0}, "unexpected packet type 0"},
		{"bad length", []byte{0x20, 2, 0, 0}, []byte{0x30, 0xff, 0xff, 0xff, 0xff}, "longer than 4 bytes"},
		{"ack of nothing", []byte{0x20, 2, 0, 0}, []byte{0x40, 2, 0, 9}, "not in flight"},
		{"closed", []byte{0x20, 2, 0, 0}, []byte{}, "EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := fakeBroker(t, func(conn net.Conn, br *bufio.Reader) {
				if !expectConnect(t, br, conn, tc.connack) || tc.after == nil {
					_, _ = br.ReadByte() // until the client hangs up
					return
				}
				var scratch []byte
				p, err := mqttwire.ReadPacket(br, &scratch, maxPacketSize)
				if err == nil {
					_, err = mqttwire.ParseSubscribe(p, mqttwire.V311)
				}
				if err != nil {
					t.Errorf("want SUBSCRIBE: %v", err)
					return
				}
				_, _ = conn.Write(append([]byte{0x90, 3, 0, 1, 1}, tc.after...))
				if len(tc.after) == 0 {
					return // hang up
				}
				_, _ = br.ReadByte()
			})
			c := testConfig("mqtt", "tcp://"+addr)
			c.qos = 1
			lost := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := newLeanSubscriber(c, c.url)(ctx, 0, "t", func([]byte) {}, func(err error) { lost <- err })
			if err == nil {
				select {
				case err = <-lost:
				case <-ctx.Done():
					err = ctx.Err()
				}
				s.close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestLeanConnectTimeout: a broker that never answers the CONNECT makes
// connecting fail once the context ends, not hang.
func TestLeanConnectTimeout(t *testing.T) {
	t.Parallel()
	addr := fakeBroker(t, func(conn net.Conn, br *bufio.Reader) { readUntilClosed(br) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := dialLean(ctx, addr, mqttwire.ConnectSpec{ClientID: "x", Clean: true})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
		t.Errorf("error %v, want a deadline", err)
	}
}

// readUntilClosed reads br until the connection ends.
func readUntilClosed(br *bufio.Reader) {
	for {
		if _, err := br.ReadByte(); err != nil {
			return
		}
	}
}

// TestLeanWindow checks the QoS 1 window against a broker that
// acknowledges late, in batches: never more than --inflight publications
// unacknowledged, and all of them acknowledged in the end.
func TestLeanWindow(t *testing.T) {
	t.Parallel()
	const window, total = 8, 100
	var maxOut int
	addr := fakeBroker(t, func(conn net.Conn, br *bufio.Reader) {
		if !expectConnect(t, br, conn, []byte{0x20, 2, 0, 0}) {
			return
		}
		var scratch []byte
		var pending []uint16
		acked := 0
		for acked < total {
			// Acknowledge lazily, all at once, when the publisher pauses
			// (nothing more within 50 ms): it has as many in flight as
			// the window lets it, and each is counted here.
			if len(pending) > 0 {
				_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, err := br.Peek(1)
				_ = conn.SetReadDeadline(time.Time{})
				if errors.Is(err, os.ErrDeadlineExceeded) {
					for _, id := range pending {
						_, _ = conn.Write(mqttwire.AppendAck(nil, mqttwire.Puback, id))
					}
					acked += len(pending)
					pending = pending[:0]
					continue
				}
			}
			p, err := mqttwire.ReadPacket(br, &scratch, maxPacketSize)
			if err != nil {
				t.Errorf("after %d acknowledged (%d pending): %v", acked, len(pending), err)
				return
			}
			v, err := mqttwire.ParsePublish(p, mqttwire.V311)
			if err != nil || v.QoS != 1 {
				t.Errorf("want a QoS 1 PUBLISH: %+v, %v", v, err)
				return
			}
			pending = append(pending, v.ID)
			maxOut = max(maxOut, len(pending))
		}
		_, _ = br.ReadByte() // the DISCONNECT
	})
	c := testConfig("mqtt", "tcp://"+addr)
	c.qos, c.inflight = 1, window
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pb, err := leanTransport(c).newPublisher(ctx, 0, func(err error) { t.Errorf("lost: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	lc := pb.(*leanConn)
	for seq := range uint64(total) {
		if err := lc.publishFrame(ctx, "t", header{Seq: seq}); err != nil {
			lc.close()
			t.Fatal(err)
		}
	}
	n, err := lc.settle(ctx)
	lc.close()
	if err != nil || n != total {
		t.Errorf("settle: %d acknowledged, %v; want %d", n, err, total)
	}
	if maxOut != window {
		t.Errorf("at most %d unacknowledged, want the window, %d", maxOut, window)
	}
	if lc.inflight != 0 {
		t.Errorf("%d still in flight", lc.inflight)
	}
}

// TestLeanCloseSilentBroker: close returns, within its bound, even when
// the broker never hangs up after the DISCONNECT.
func TestLeanCloseSilentBroker(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	addr := fakeBroker(t, func(conn net.Conn, br *bufio.Reader) {
		if expectConnect(t, br, conn, []byte{0x20, 2, 0, 0}) {
			<-hold
		}
	})
	defer close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, err := dialLean(ctx, addr, mqttwire.ConnectSpec{ClientID: "silent", Clean: true})
	if err != nil {
		t.Fatal(err)
	}
	lc := newLeanConn(conn, br, nil, nil).start()
	done := make(chan struct{})
	go func() { lc.close(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("close did not return within 5 s")
	}
}
