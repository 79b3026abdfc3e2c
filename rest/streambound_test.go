package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubsmith/hub/broker"
)

// TestPendingBound checks the queue between the bus and a stream: order,
// the byte bound (an envelope costs its Size and envelopeOverhead), and
// that passing it drops what waits and signals once.
func TestPendingBound(t *testing.T) {
	e := func(n int) *broker.Envelope { return &broker.Envelope{Topic: "t", Payload: make([]byte, n)} }
	calls := 0
	p := newPending(3 * (envelopeOverhead + 101))
	p.setOnPass(func() { calls++ })
	for range 3 {
		p.push(e(100))
	}
	if got := p.pop(); got == nil || isPassed(p) {
		t.Fatal("pop after 3 pushes within the bound")
	}
	p.push(e(100)) // 3 waiting: at the bound, not past it
	if isPassed(p) {
		t.Fatal("passed at the bound")
	}
	p.push(e(1))
	if !isPassed(p) || calls != 1 || p.pop() != nil {
		t.Fatalf("past the bound: passed %v, hook calls %d, still waiting", isPassed(p), calls)
	}
	p.push(e(1))
	if calls != 1 || p.pop() != nil {
		t.Error("pushes after the bound was passed are kept")
	}
}

// stalledClient opens a stream with a raw connection that reads the
// response head and then nothing.
func stalledClient(t *testing.T, h *testHub, request string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if n, err := c.Read(buf); err != nil || !bytes.Contains(buf[:n], []byte(" 10")) && !bytes.Contains(buf[:n], []byte("200 OK")) {
		t.Fatalf("stream start: %q %v", buf[:n], err)
	}
	return c
}

// TestSlowStreamClosed: an SSE or WebSocket client that stops reading is
// closed once more than StreamMaxPending waits for it, long before its
// write deadline, with a final event (SSE) or close reason (WebSocket)
// saying why, and counted; its bus subscription goes.
func TestSlowStreamClosed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ kind, request string }{
		{"sse", "GET /api/v1/subscribe?filter=slow/%23 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"websocket", "GET /api/v1/subscribe?filter=slow/%23 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			// A heartbeat of a minute: a WebSocket ping the stalled client
			// cannot answer would otherwise end the stream after 200 ms, a
			// race with the bound a loaded machine lost.
			h := startHub(t, hubOpts{streamWriteTimeout: time.Minute, streamMaxPending: 1 << 20, heartbeat: time.Minute})
			base := h.bus.Stats().Subscriptions
			c := stalledClient(t, h, tc.request)
			payload := bytes.Repeat([]byte("x"), 64<<10)
			deadline := time.Now().Add(60 * time.Second)
			for h.a.slowCut.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the stalled stream was not closed for its pending bound within 60 s")
				}
				for range 16 {
					_ = h.bus.Publish(context.Background(), &broker.Envelope{Topic: "slow/x", Payload: payload})
				}
				time.Sleep(10 * time.Millisecond)
			}
			for h.bus.Stats().Subscriptions > base {
				if time.Now().After(deadline) {
					t.Fatal("the closed stream still holds its bus subscription")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Reading now: what was sent, then the reason, then the end.
			// The receive buffer grows first: the 4 KiB window of the stall
			// held the rest to zero-window probes, whose backoff (up to
			// TCP_RTO_MAX) after a long stall outlasted the read deadline
			// although the hub had closed its side.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4 << 20)
			}
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			rest, err := io.ReadAll(c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection was not closed: %v", err)
			}
			if tc.kind == "sse" && !bytes.Contains(rest, []byte("event: error")) {
				t.Logf("no final event reached the client (it was not reading): %d bytes", len(rest))
			}
			if tc.kind == "sse" && bytes.Contains(rest, []byte("event: error")) && !bytes.Contains(rest, []byte("slow consumer")) {
				t.Errorf("final event does not say why")
			}
		})
	}
}

// TestSlowStreamReason: a WebSocket client that reads, but too slowly for
// a flood, gets the close reason.
func TestSlowStreamReason(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{streamMaxPending: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/subscribe?filter=flood/%23", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	payload := bytes.Repeat([]byte("y"), 32<<10)
	go func() {
		for i := 0; i < 2000 && ctx.Err() == nil && h.a.slowCut.Load() == 0; i++ {
			_ = h.bus.Publish(context.Background(), &broker.Envelope{Topic: "flood/x", Payload: payload})
		}
	}()
	for {
		if _, _, err := conn.Read(ctx); err != nil {
			if websocket.CloseStatus(err) != websocket.StatusTryAgainLater || !strings.Contains(err.Error(), "slow consumer") {
				t.Fatalf("stream ended with %v, want close 1013 saying slow consumer", err)
			}
			return
		}
		time.Sleep(2 * time.Millisecond) // slower than the flood
	}
}

// TestStreamRetainedPages: a stream's retained values, read a page at a
// time from the bus, all come first, each once, in topic order, for two
// overlapping filters.
func TestStreamRetainedPages(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	for i := range 250 {
		if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: fmt.Sprintf("pg/%03d", i), Payload: []byte("v"), Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, _ := h.sseStream(ctx, "filter=pg/%23&filter=pg/%2B", "")
	var topics []string
	for len(topics) < 250 {
		ev := nextMessage(t, ch)
		var e EnvelopeJSON
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			t.Fatal(err)
		}
		if n := len(topics); n > 0 && e.Topic <= topics[n-1] {
			t.Fatalf("retained %q after %q: out of order or twice", e.Topic, topics[n-1])
		}
		topics = append(topics, e.Topic)
	}
}
