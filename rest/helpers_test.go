package rest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/store"
)

// testHub is a REST adapter on a real listener over a real bus and store.
type testHub struct {
	t     testing.TB
	a     *Adapter
	bus   *broker.Memory
	st    *store.Store
	auth  *adapters.Auth
	reg   *devices.Registry
	fs    *files.Store // with hubOpts.files
	base  string
	httpc *http.Client
}

type hubOpts struct {
	addr    string // default 127.0.0.1:0
	maxBody int64
	// the HTTP server's bounds (0: the defaults)
	readHeaderTimeout, readTimeout, idleTimeout time.Duration
	maxHeaderBytes                              int
	metrics                                     http.Handler
	publicMetrics, allowAnonymous               bool
	streamWriteTimeout                          time.Duration
	streamMaxPending                            int64
	// heartbeat is Config.Heartbeat (0: 200 ms).
	heartbeat time.Duration
	// plainBus hides the bus's optional interfaces (a clustered bus has
	// no RetainedPager).
	plainBus bool
	// files, when set, gives the adapter a file store whose config it
	// may change.
	files     func(*files.Config)
	dashboard fs.FS // Config.Dashboard
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startHub(t testing.TB, o hubOpts) *testHub {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st, Node: "test", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	auth := adapters.NewAuth(st, nil)
	reg, err := devices.New(devices.Config{Store: st, Bus: bus, Logger: quietLogger(), Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	if o.heartbeat == 0 {
		o.heartbeat = 200 * time.Millisecond
	}
	var (
		fs   *files.Store
		base atomic.Pointer[string] // set once listening
	)
	if o.files != nil {
		fc := files.Config{Dir: t.TempDir(), DB: st, Bus: bus, Logger: quietLogger(), BaseURL: func() string { return *base.Load() }}
		o.files(&fc)
		if fs, err = files.Open(ctx, fc); err != nil {
			t.Fatal(err)
		}
	}
	var abus broker.Bus = bus
	if o.plainBus {
		abus = struct{ broker.Bus }{bus}
	}
	a, err := New(Config{Addr: o.addr, Bus: abus, Store: st, Auth: auth, Devices: reg, Files: fs,
		MaxBody: o.maxBody, Heartbeat: o.heartbeat, Logger: quietLogger(), Node: "test",
		ReadHeaderTimeout: o.readHeaderTimeout, ReadTimeout: o.readTimeout, IdleTimeout: o.idleTimeout, MaxHeaderBytes: o.maxHeaderBytes,
		Metrics: o.metrics, PublicMetrics: o.publicMetrics, AllowAnonymous: o.allowAnonymous,
		StreamWriteTimeout: o.streamWriteTimeout, StreamMaxPending: o.streamMaxPending, Dashboard: o.dashboard})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(a.Addrs()["http"])
	url := "http://127.0.0.1:" + port
	base.Store(&url)
	h := &testHub{t: t, a: a, bus: bus, st: st, auth: auth, reg: reg, fs: fs,
		base: url, httpc: &http.Client{Timeout: 20 * time.Second}}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(sctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		if fs != nil {
			_ = fs.Close()
		}
		_ = bus.Close()
		_ = st.Close()
	})
	return h
}

// do sends a request and returns the status and body. auth is "" (none),
// "user:password" for basic auth, or "Bearer X".
func (h *testHub) do(method, path, auth, contentType, body string) (int, http.Header, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	switch {
	case strings.HasPrefix(auth, "Bearer "):
		req.Header.Set("Authorization", auth)
	case auth != "":
		u, p, _ := strings.Cut(auth, ":")
		req.SetBasicAuth(u, p)
	}
	resp, err := h.httpc.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// errorOf decodes an error body and fails when it is not {"error": "..."}.
func errorOf(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\": message}", body)
	}
	return e.Error
}

// busSub subscribes on the bus and returns a channel of envelopes.
func (h *testHub) busSub(filters ...string) <-chan *broker.Envelope {
	h.t.Helper()
	ch := make(chan *broker.Envelope, 64)
	sub, err := h.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: filters, QoS: 2},
		func(_ context.Context, e *broker.Envelope) error { ch <- e; return nil })
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	event, id, data string
}

// sseStream opens a subscribe stream and returns its events; it returns
// once the hub said the subscription is in place.
func (h *testHub) sseStream(ctx context.Context, query, auth string) (<-chan sseEvent, *http.Response) {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/api/v1/subscribe?"+query, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		h.t.Fatalf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != ": subscribed\n" {
		h.t.Fatalf("first line %q, %v", line, err)
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.event != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ch <- sseEvent{event: "comment", data: line}
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "event":
					ev.event = v
				case "id":
					ev.id = v
				case "data":
					ev.data += v
				}
			}
		}
	}()
	return ch, resp
}

// nextMessage skips heartbeat comments.
func nextMessage(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.event == "message" {
				return ev
			}
		case <-deadline:
			t.Fatal("timed out waiting for an SSE message")
		}
	}
}
