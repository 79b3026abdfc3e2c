package mqtt

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/mqttwire"
)

// idleConnect is an MQTT 3.1.1 CONNECT: clean session, keepalive 900 s,
// client id "idle-NNNNNN".
func idleConnect(i int) []byte {
	return mqttwire.AppendConnect(nil, mqttwire.ConnectSpec{ClientID: fmt.Sprintf("idle-%06d", i), KeepAlive: 900, Clean: true})
}

// idleFootprint is what n idle connections cost the adapter, per
// connection: Go heap and goroutine stack bytes and goroutines.
type idleFootprint struct{ heap, stack, goroutines float64 }

// measureIdle opens n idle connections to a fresh hub (raw sockets sending
// CONNECT and reading CONNACK, so the client side costs almost nothing) and
// returns what they added after a few GCs; start and stop bracket the
// connecting (a benchmark's timer).
func measureIdle(tb testing.TB, n int, start, stop func()) idleFootprint {
	tb.Helper()
	// The connections come from one address: the per-address and total
	// connection limits (1,000 by default) would refuse most of them.
	h := newHub(tb, func(c *Config) {
		c.Auth.SetLimits(adapters.NewLimits(adapters.LimitsConfig{MaxConnections: -1, MaxConnectionsPerAddress: -1}))
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	start()
	for i := range n {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(idleConnect(i)); err != nil {
			tb.Fatal(err)
		}
		ack := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			tb.Fatalf("connection %d: CONNACK % x, %v", i, ack, err)
		}
	}
	stop()
	// Let the sessions finish attaching before measuring.
	deadline := time.Now().Add(wait)
	for h.a.srv.Clients.Len() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for range 4 { // each GC halves at most once a stack that could be smaller
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	f := float64(n)
	return idleFootprint{
		heap:       float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / f,
		stack:      float64(int64(after.StackInuse)-int64(before.StackInuse)) / f,
		goroutines: float64(runtime.NumGoroutine()-g0) / f,
	}
}

// BenchmarkIdleConnection measures what an idle MQTT connection costs the
// adapter: b.N connections are opened and the Go heap, goroutine stacks
// and goroutines they added are reported per connection after a GC. Run
// with -benchtime 2000x; the figure is the in-process part of what
// `hubload idle` sees as RSS.
func BenchmarkIdleConnection(b *testing.B) {
	fp := measureIdle(b, b.N, b.ResetTimer, b.StopTimer)
	b.ReportMetric(fp.heap, "heap-B/conn")
	b.ReportMetric(fp.stack, "stack-B/conn")
	b.ReportMetric(fp.goroutines, "goroutines/conn")
}

// TestIdleConnectionFootprint holds what the patches to mochi (see
// third_party/mochi-mqtt/PATCHES.md) won: an idle MQTT connection has one
// goroutine (upstream: two, the second a write loop the hub never feeds)
// whose stack shrinks to 4 KiB (upstream: 16 KiB, with the CONNECT packet's
// frame under the read of the next packet; 24 KiB a connection in all).
// The race detector's larger stack guard keeps stacks at 8 KiB, so it
// runs without -race only (CI runs it so).
func TestIdleConnectionFootprint(t *testing.T) {
	if raceEnabled {
		t.Skip("stack sizes differ under the race detector")
	}
	fp := measureIdle(t, 300, func() {}, func() {})
	t.Logf("per idle connection: %.0f B heap, %.0f B stack, %.2f goroutines", fp.heap, fp.stack, fp.goroutines)
	if fp.goroutines > 1.05 {
		t.Errorf("%.2f goroutines per idle connection, want 1", fp.goroutines)
	}
	if fp.stack > 5000 {
		t.Errorf("%.0f bytes of goroutine stack per idle connection, want about 4096", fp.stack)
	}
}
