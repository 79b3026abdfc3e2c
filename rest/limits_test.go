package rest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// closedWithin waits until the server closes c (a read returns EOF or a
// reset) and fails if that takes longer than within or never happens.
func closedWithin(t *testing.T, c net.Conn, within time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after %v", what, within)
	}
	return time.Since(start)
}

func dialHub(t *testing.T, h *testHub) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The server bounds a connection that sends nothing, a slow body, an idle
// keep-alive connection and oversized headers.
func TestHTTPServerBounds(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{readHeaderTimeout: 300 * time.Millisecond, readTimeout: 700 * time.Millisecond,
		idleTimeout: 500 * time.Millisecond, maxHeaderBytes: 4 << 10})

	// Connected and silent: closed after ReadHeaderTimeout.
	if d := closedWithin(t, dialHub(t, h), 5*time.Second, "silent connection"); d < 250*time.Millisecond {
		t.Errorf("silent connection closed after %v, before the header timeout", d)
	}

	// Headers sent, the body trickles: cut after ReadTimeout (the
	// unauthenticated token endpoint, as in the issue).
	c := dialHub(t, h)
	if _, err := io.WriteString(c, "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c, " "); err != nil {
			break // the server closed it
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(make([]byte, 512)); n > 0 || (err != nil && !isTimeout(err)) {
			break // an answer (408/400) or the close
		}
		if time.Now().After(deadline) {
			t.Fatal("slow body: still being read after 5s")
		}
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("slow body cut after %v, before the read timeout", d)
	}

	// One request on a keep-alive connection, then silence: closed after
	// IdleTimeout.
	c = dialHub(t, h)
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if d := closedWithin(t, c, 5*time.Second, "idle keep-alive"); d < 400*time.Millisecond {
		t.Errorf("idle connection closed after %v, before the idle timeout", d)
	}

	// Headers over MaxHeaderBytes: 431.
	req, _ := http.NewRequest("GET", h.base+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 8<<10))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r2.Body.Close()
	if r2.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB header over a 4 KiB bound: %d, want 431", r2.StatusCode)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// An SSE stream and a WebSocket outlive the read timeout (net/http would
// cancel the request's context when it ran out) and still deliver.
func TestStreamsOutliveReadTimeout(t *testing.T) {
	t.Parallel()
	const readTimeout = 300 * time.Millisecond
	h := startHub(t, hubOpts{readHeaderTimeout: 100 * time.Millisecond, readTimeout: readTimeout, idleTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events, resp := h.sseStream(ctx, "filter=long/%23", "")
	if events == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/subscribe?filter=long/%23", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	// The client reads all along (pings are answered while it reads).
	wsMsgs := make(chan []byte, 16)
	go func() {
		defer close(wsMsgs)
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			wsMsgs <- data
		}
	}()
	// Heartbeats (every 200 ms) keep coming well past the read timeout.
	start := time.Now()
	for time.Since(start) < 4*readTimeout {
		select {
		case _, ok := <-events:
			if !ok {
				t.Fatalf("SSE stream ended after %v (read timeout %v)", time.Since(start), readTimeout)
			}
		case <-ctx.Done():
			t.Fatal("no heartbeat")
		}
	}
	publishOnBus(t, h, &broker.Envelope{Topic: "long/a", Payload: []byte("still here")})
	var got EnvelopeJSON
	if err := json.Unmarshal([]byte(nextMessage(t, events).data), &got); err != nil || got.Payload != "still here" {
		t.Fatalf("SSE after the read timeout: %+v %v", got, err)
	}
	data, ok := <-wsMsgs
	if !ok {
		t.Fatal("WebSocket ended before the message")
	}
	if err := json.Unmarshal(data, &got); err != nil || got.Payload != "still here" {
		t.Fatalf("WebSocket message %q: %v", data, err)
	}
}

// GET /healthz is JSON naming the listener; a listener that does not
// accept makes it 503.
func TestHealthzJSON(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	s, hdr, b := h.do("GET", "/healthz", "", "", "")
	var r adapters.HealthReport
	if err := json.Unmarshal([]byte(b), &r); err != nil || s != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("healthz: %d %s %q: %v", s, hdr.Get("Content-Type"), b, err)
	}
	if r.Status != adapters.HealthOK || len(r.Listeners) != 1 || r.Listeners[0].Name != "http" ||
		r.Listeners[0].State != adapters.ListenerAccepting || r.Listeners[0].Addr != h.a.Addrs()["http"] {
		t.Fatalf("report %+v", r)
	}
	// A hub-wide report with a failing listener answers 503 with it.
	h.a.cfg.HealthReport = func() adapters.HealthReport {
		return adapters.HealthReport{Status: adapters.HealthUnavailable, Errors: []string{"mqtt: listener mqtt failing"},
			Listeners: []adapters.ListenerStatus{{Adapter: "mqtt", Name: "mqtt", State: adapters.ListenerFailing, Error: "too many open files"}}}
	}
	if s, _, b := h.do("GET", "/healthz", "", "", ""); s != 503 || !strings.Contains(b, `"state":"failing"`) || !strings.Contains(b, "too many open files") {
		t.Fatalf("failing listener: %d %s", s, b)
	}
}

func TestNewValidatesServerBounds(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	for _, cfg := range []Config{{ReadTimeout: -1}, {ReadHeaderTimeout: -time.Second}, {IdleTimeout: -1}, {MaxHeaderBytes: -1}} {
		cfg.Addr, cfg.Bus, cfg.Store, cfg.Auth, cfg.Devices = "127.0.0.1:0", h.bus, h.st, h.auth, h.reg
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	a, err := New(Config{Addr: "127.0.0.1:0", Bus: h.bus, Store: h.st, Auth: h.auth, Devices: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	if c := a.cfg; c.ReadHeaderTimeout != DefaultReadHeaderTimeout || c.ReadTimeout != DefaultReadTimeout ||
		c.IdleTimeout != DefaultIdleTimeout || c.MaxHeaderBytes != DefaultMaxHeaderBytes {
		t.Errorf("defaults not filled: %+v", c)
	}
}

// TestStalledStreamCutOff: an SSE client that stops reading while
// envelopes keep coming loses its stream (and its bus subscription) once a
// write has been blocked for StreamWriteTimeout, instead of holding them
// for ever.
func TestStalledStreamCutOff(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{streamWriteTimeout: 300 * time.Millisecond})
	base := h.bus.Stats().Subscriptions
	c, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	if _, err := io.WriteString(c, "GET /api/v1/subscribe?filter=big/%23 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := c.Read(buf); err != nil || !strings.Contains(string(buf), "200 OK") {
		t.Fatalf("stream start: %q %v", buf, err)
	}
	// From here on the client reads nothing.
	payload := bytes.Repeat([]byte("x"), 8<<10)
	deadline := time.Now().Add(20 * time.Second)
	for h.bus.Stats().Subscriptions > base {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled stream still holds its subscription after 20 s (%d > %d)", h.bus.Stats().Subscriptions, base)
		}
		for range 64 {
			_ = h.bus.Publish(context.Background(), &broker.Envelope{Topic: "big/x", Payload: payload})
		}
		time.Sleep(20 * time.Millisecond)
	}
}
