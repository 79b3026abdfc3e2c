package mqtt

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/mqttwire"
	"github.com/hubsmith/hub/mqttwire/wiretest"
)

// parkAfter is the ParkAfter of the parking tests: short, so that their
// clients park and resume many times.
const parkAfter = 40 * time.Millisecond

func newParkingHub(t *testing.T) *testHub {
	return newHub(t, func(c *Config) {
		c.ParkAfter = parkAfter
		c.Auth.SetLimits(adapters.NewLimits(adapters.LimitsConfig{MaxConnections: -1, MaxConnectionsPerAddress: -1}))
	})
}

// plainParker is the plain listener's parker.
func (h *testHub) plainParker() *parker {
	for _, ln := range h.a.lns {
		if l, ok := ln.(*listener); ok && l.tls == nil {
			return l.parker()
		}
	}
	return nil
}

// parked is the number of the plain listener's parked clients.
func (h *testHub) parked() int {
	if p := h.plainParker(); p != nil {
		return p.parkedCount()
	}
	return -1
}

// waitParked waits until n clients are parked.
func (h *testHub) waitParked(t *testing.T, n int) {
	t.Helper()
	waitFor(t, func() bool { return h.parked() == n })
}

// dialSubscribed connects id and subscribes it to filter at qos.
func dialSubscribed(t *testing.T, addr, id, filter string, qos byte) *wiretest.Client {
	t.Helper()
	c := wiretest.Dial(t, addr, mqttwire.ConnectSpec{ClientID: id, KeepAlive: 60, Clean: true})
	if codes := c.Subscribe(t, qos, filter); len(codes) != 1 || codes[0] != qos {
		t.Fatalf("SUBACK codes % x", codes)
	}
	return c
}

// TestParkedClientsKeepWorking parks a subscriber and a publisher between
// every message: each message resumes the publisher's goroutine (and the
// subscriber's, for its PUBACK), and every one arrives, at QoS 0 and 1.
func TestParkedClientsKeepWorking(t *testing.T) {
	h := newParkingHub(t)
	sub := dialSubscribed(t, h.addr, "sub", "park/#", 1)
	pub := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "pub", KeepAlive: 60, Clean: true})
	for i := range 6 {
		h.waitParked(t, 2)
		qos := byte(i % 2)
		pub.Send(t, mqttwire.AppendPublish(nil, mqttwire.PublishHeader{Topic: "park/t", QoS: qos, ID: uint16(i + 1)}, fmt.Appendf(nil, "m%d", i)))
		if qos == 1 {
			if p := pub.Next(t); p.Type != mqttwire.Puback {
				t.Fatalf("PUBACK: %+v", p)
			}
		}
		pv := sub.ReadPublish(t)
		if string(pv.Payload) != fmt.Sprintf("m%d", i) {
			t.Fatalf("got %q, want m%d", pv.Payload, i)
		}
		if pv.QoS == 1 {
			sub.Send(t, mqttwire.AppendAck(nil, mqttwire.Puback, pv.ID))
		}
	}
	// A ping from a parked client is answered.
	h.waitParked(t, 2)
	pub.Ping(t)
}

// TestParkedClientFootprint: parked, idle clients hold no goroutine and
// no stack (unparked: one goroutine and 4 KiB each, TestIdleConnectionFootprint).
func TestParkedClientFootprint(t *testing.T) {
	h := newParkingHub(t)
	// Enough clients that the process's other stacks, which move by
	// whole 32 KiB spans, stay well under the bound per client: 200 saw
	// ±1.3 KB a client under load.
	const n = 500
	primeDeadGoroutines()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	for i := range n {
		wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: fmt.Sprintf("idle-%d", i), KeepAlive: 60, Clean: true})
	}
	h.waitParked(t, n)
	// Goroutines end after the park is registered: wait for them.
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine()-g0 > n/20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	g := float64(runtime.NumGoroutine()-g0) / n
	stack := float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
	t.Logf("per parked client: %.2f goroutines, %.0f B of stack", g, stack)
	if g > 0.05 {
		t.Errorf("%.2f goroutines per parked client, want 0", g)
	}
	if stack > 1024 {
		t.Errorf("%.0f B of stack per parked client, want none", stack)
	}
}

// primeDeadGoroutines fills the runtime's per-P caches of dead goroutines,
// whose stacks are kept for reuse (up to 64 a P; a collection frees only
// the global list's): the goroutines the connections end with leave their
// stacks there, and with the caches empty before, up to 64 stacks a P
// showed as stack in use after (CI: 1,311 B a parked client, with no
// goroutine left). Full before, they stay full.
func primeDeadGoroutines() {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) * 128 {
		wg.Go(func() {
			<-start // all alive at once, so each is a goroutine of its own
			deepStack(16)
		})
	}
	close(start)
	wg.Wait()
}

// deepStack uses about n × 512 bytes of stack.
func deepStack(n int) byte {
	var b [512]byte
	b[n%len(b)] = byte(n)
	if n == 0 {
		return b[0]
	}
	return deepStack(n-1) + b[n%len(b)]
}

// TestParkedClientKeepaliveExpires: a parked client that sends nothing
// for 1.5 times its keepalive is disconnected as an unparked one is, and
// its will is published.
func TestParkedClientKeepaliveExpires(t *testing.T) {
	h := newParkingHub(t)
	sub := dialSubscribed(t, h.addr, "watcher", "wills/#", 0)
	start := time.Now()
	quiet := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "quiet", KeepAlive: 2, Clean: true,
		Will: &mqttwire.Will{Topic: "wills/quiet", Payload: []byte("gone")}})
	h.waitParked(t, 2)
	quiet.WaitClosed(t)
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("closed after %v, before 1.5 x the keepalive", d)
	}
	if pv := sub.ReadPublish(t); string(pv.Topic) != "wills/quiet" || string(pv.Payload) != "gone" {
		t.Errorf("will: %q %q", pv.Topic, pv.Payload)
	}
}

// TestParkedClientLeavesAndIsTakenOver: a parked client's FIN ends its
// session, and a parked client whose id connects again is taken over.
func TestParkedClientLeavesAndIsTakenOver(t *testing.T) {
	h := newParkingHub(t)
	a := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "leaver", KeepAlive: 60, Clean: true})
	b := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "twice", KeepAlive: 60, Clean: true})
	h.waitParked(t, 2)
	_ = a.Close()
	waitFor(t, func() bool { _, ok := h.a.srv.Clients.Get("leaver"); return !ok })
	b2 := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "twice", KeepAlive: 60, Clean: true})
	b.WaitClosed(t)
	h.waitParked(t, 1)
	b2.Ping(t)
}

// TestStalledPacketIsNotParked: a client that stops in the middle of a
// packet is not parked (nor cut off); the rest of the packet, long after,
// completes it.
func TestStalledPacketIsNotParked(t *testing.T) {
	h := newParkingHub(t)
	sub := dialSubscribed(t, h.addr, "sub", "half/#", 0)
	pub := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "pub", KeepAlive: 60, Clean: true})
	h.waitParked(t, 2)
	msg := mqttwire.AppendPublish(nil, mqttwire.PublishHeader{Topic: "half/t"}, []byte("whole"))
	p := h.plainParker()
	swept := p.sweeps.Load()
	pub.Send(t, msg[:5])
	h.waitParked(t, 1) // the publisher resumed
	// The sweeps do not ask the stalled client to park...
	waitFor(t, func() bool { return p.sweeps.Load() >= swept+4 })
	// ...and a park asked all the same (as when the sweep's request and
	// the first bytes of a packet cross) is given up.
	cl, ok := h.a.srv.Clients.Get("pub")
	if !ok {
		t.Fatal("the publisher is gone")
	}
	ac := cl.Net.Conn.(*asyncConn)
	for range 3 {
		if !ac.requestPark(time.Now()) {
			t.Fatal("park not asked")
		}
		waitFor(t, func() bool { return !ac.requested.Load() })
	}
	if h.parked() != 1 {
		t.Fatalf("%d parked, want 1 (the subscriber)", h.parked())
	}
	pub.Send(t, msg[5:])
	if pv := sub.ReadPublish(t); string(pv.Payload) != "whole" {
		t.Fatalf("got %q", pv.Payload)
	}
}

// TestStopWithParkedClients: the adapter stops with clients parked, and
// they are disconnected.
func TestStopWithParkedClients(t *testing.T) {
	h := newParkingHub(t)
	var cs []*wiretest.Client
	for i := range 20 {
		cs = append(cs, wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: fmt.Sprintf("p%d", i), KeepAlive: 60, Clean: true}))
	}
	h.waitParked(t, len(cs))
	h.close()
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("after stop: %v", err)
		}
	}
}

// TestParkingOff: a negative ParkAfter (mqtt.park_after: -1s) parks no
// client.
func TestParkingOff(t *testing.T) {
	h := newHub(t, func(c *Config) { c.ParkAfter = -1 })
	if p := h.plainParker(); p != nil {
		t.Fatal("a parker runs with parking off")
	}
	c := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "awake", KeepAlive: 60, Clean: true})
	c.Ping(t)
}

// TestRevokeParkedClient: revoking a principal ends its parked sessions,
// as it ends those reading.
func TestRevokeParkedClient(t *testing.T) {
	h := newParkingHub(t)
	c := wiretest.Dial(t, h.addr, mqttwire.ConnectSpec{ClientID: "alice-1", Username: "alice", Password: "alicepw", KeepAlive: 60, Clean: true})
	h.waitParked(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if n := h.a.Revoke(ctx, "alice"); n != 1 {
		t.Fatalf("Revoke closed %d connections, want 1", n)
	}
	c.WaitClosed(t)
	waitFor(t, func() bool { _, ok := h.a.srv.Clients.Get("alice-1"); return !ok })
	if h.parked() != 0 {
		t.Fatalf("%d still parked", h.parked())
	}
}
