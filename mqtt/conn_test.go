package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// stalledClient connects over raw TCP with a small receive buffer, sends
// CONNECT (persistent session) and SUBSCRIBE, and then never reads again.
func stalledClient(t *testing.T, addr, id, filter string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: wait}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	var buf bytes.Buffer
	con := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 60, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte("alicepw")}}
	if err := con.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// CONNACK (4 bytes) and SUBACK (5 bytes).
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got := make([]byte, 9)
	if _, err := io.ReadFull(c, got); err != nil || got[0] != 0x20 || got[3] != 0 || got[4] != 0x90 {
		t.Fatalf("CONNACK/SUBACK: % x %v", got, err)
	}
	return c
}

// TestStalledSubscriberBlocksNobody: a persistent-session subscriber stops
// reading while a QoS 1 publisher sends more than its socket holds; every
// publish is still acknowledged promptly, a fast subscriber gets
// everything, the stalled connection is closed as a slow consumer, and on
// its return the session gets every acknowledged message.
func TestStalledSubscriberBlocksNobody(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.WriteTimeout = time.Second })
	stalledClient(t, h.addr, "stalled", "st/#")
	fast := mustV3(t, h.addr, "fast", "alice", "alicepw", true)
	fast.sub(t, "st/#", 1)
	p := mustV5(t, h.addr, "st-pub", "alice", "alicepw")
	pad := strings.Repeat("x", 32<<10)
	const n = 200 // 6.4 MiB: more than the socket buffers hold
	var slowest time.Duration
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		t0 := time.Now()
		_, err := p.c.Publish(ctx, &paho.Publish{Topic: "st/x", QoS: 1, Payload: []byte(fmt.Sprint(i, " ", pad))})
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v (the stalled subscriber blocks the publisher)", i, err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	if slowest > 2*time.Second {
		t.Errorf("slowest publish took %v", slowest)
	}
	for i := range n {
		m := fast.next(t)
		if id, _, _ := strings.Cut(string(m.Payload()), " "); id != fmt.Sprint(i) {
			t.Fatalf("fast subscriber: message %d is %s", i, id)
		}
	}
	waitFor(t, func() bool { return h.a.metrics.slowConsumers.Load() == 1 })
	back := mustV3(t, h.addr, "stalled", "alice", "alicepw", false)
	seen := map[string]bool{}
	for len(seen) < n {
		id, _, _ := strings.Cut(string(back.next(t).Payload()), " ")
		seen[id] = true
	}
}

// TestNoDisconnectToV3: a DISCONNECT written to an MQTT 3.1.1 client is
// dropped (3.1.1 has no server DISCONNECT); one to an MQTT 5 client, and
// other packets, go out.
func TestNoDisconnectToV3(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version byte
		want    []byte
	}{
		{4, []byte{0x30, 0x03, 0x00, 0x01, 'a'}},
		{3, []byte{0x30, 0x03, 0x00, 0x01, 'a'}},
		{5, []byte{0xe0, 0x00, 0x30, 0x03, 0x00, 0x01, 'a'}},
	} {
		server, client := net.Pipe()
		rc := newReasonConn(server, 0)
		rc.version = tt.version
		ac := newAsyncConn(rc, time.Second, func(net.Conn, error) {}, func() {})
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(client); got <- b }()
		if n, err := ac.Write([]byte{0xe0, 0x00}); n != 2 || err != nil {
			t.Fatalf("v%d: Write(DISCONNECT) = %d, %v", tt.version, n, err)
		}
		if _, err := ac.Write([]byte{0x30, 0x03, 0x00, 0x01, 'a'}); err != nil {
			t.Fatal(err)
		}
		_ = ac.Close()
		if b := <-got; !bytes.Equal(b, tt.want) {
			t.Errorf("v%d: the client read % x, want % x", tt.version, b, tt.want)
		}
	}
}

// TestIdleConnKeepsNoBurstBuffer: once a burst is written, the connection
// keeps at most idleWriteBuffer bytes of write buffer; small writes keep
// theirs (no allocation per message when the flusher keeps up).
func TestIdleConnKeepsNoBurstBuffer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		size    int
		maxKept int
	}{
		{"burst", 8 << 10, idleWriteBuffer},
		{"small", 100, idleWriteBuffer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			ac := newAsyncConn(server, time.Second, func(net.Conn, error) {}, func() {})
			defer ac.Close()
			// One write at a time, each read before the next: the flusher
			// swaps its two buffers, so the second write leaves the
			// first's buffer behind.
			for range 3 {
				if _, err := ac.Write(make([]byte, tt.size)); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(client, make([]byte, tt.size)); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(wait)
			for {
				ac.mu.Lock()
				flushing, kept := ac.flushing, cap(ac.buf)
				ac.mu.Unlock()
				if !flushing {
					if kept > tt.maxKept {
						t.Fatalf("idle connection keeps %d bytes of buffer, want at most %d", kept, tt.maxKept)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the flusher did not go idle")
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}
