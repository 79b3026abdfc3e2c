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

// BenchmarkIdleConnection measures what an idle MQTT connection costs the
// adapter: b.N connections are opened (raw sockets sending CONNECT and
// reading CONNACK, so the client side costs almost nothing) and the Go
// heap, goroutine stacks and goroutines they added are reported per
// connection after a GC. Run with -benchtime 2000x; the figure is the
// in-process part of what `hubload idle` sees as RSS.
func BenchmarkIdleConnection(b *testing.B) {
	// The connections come from one address: the per-address and total
	// connection limits (1,000 by default) would refuse most of them.
	h := newHub(b, func(c *Config) {
		c.Auth.SetLimits(adapters.NewLimits(adapters.LimitsConfig{MaxConnections: -1, MaxConnectionsPerAddress: -1}))
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	b.ResetTimer()
	for i := range b.N {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(idleConnect(i)); err != nil {
			b.Fatal(err)
		}
		ack := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			b.Fatalf("connection %d: CONNACK % x, %v", i, ack, err)
		}
	}
	b.StopTimer()
	// Let the sessions finish attaching before measuring.
	deadline := time.Now().Add(wait)
	for h.a.srv.Clients.Len() < b.N && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for range 4 { // each GC halves at most once a stack that could be smaller
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	n := float64(b.N)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-B/conn")
	b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/n, "stack-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/conn")
}
