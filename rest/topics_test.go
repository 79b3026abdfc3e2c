package rest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/store"
)

func TestPublishReachesBus(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	ch := h.busSub("sensors/#")
	tests := []struct {
		name, query, ct, body string
		status                int
		qos                   byte
		retain                bool
	}{
		{"qos0 default", "", "text/plain", "21.5", http.StatusAccepted, 0, false},
		{"qos1", "?qos=1", "application/json", `{"t":21.5}`, http.StatusOK, 1, false},
		{"qos2 retained", "?qos=2&retain=true", "application/senml+json", `[{"v":1}]`, http.StatusOK, 2, true},
		{"no content type", "?qos=0", "", "\x00\x01", http.StatusAccepted, 0, false},
	}
	for _, tt := range tests {
		status, _, body := h.do("POST", "/api/v1/topics/sensors/room1/temp"+tt.query, "", tt.ct, tt.body)
		if status != tt.status {
			t.Fatalf("%s: status %d (%s), want %d", tt.name, status, body, tt.status)
		}
		var res publishResult
		if err := json.Unmarshal([]byte(body), &res); err != nil || res.ID == "" {
			t.Fatalf("%s: body %q", tt.name, body)
		}
		e := recv(t, ch, tt.name)
		if e.ID != res.ID || e.Topic != "sensors/room1/temp" || string(e.Payload) != tt.body ||
			e.ContentType != tt.ct || e.QoS != tt.qos || e.Retain != tt.retain {
			t.Errorf("%s: envelope %+v", tt.name, e)
		}
		if e.Origin.Protocol != broker.ProtoREST || e.Origin.Node != "test" || e.Origin.Remote == "" {
			t.Errorf("%s: origin %+v", tt.name, e.Origin)
		}
	}
}

func TestPublishRefusals(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{maxBody: 1024})
	tests := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"plus wildcard", "/api/v1/topics/a/+/c", "x", 400, "wildcards"},
		{"hash wildcard", "/api/v1/topics/a/%23", "x", 400, "wildcards"},
		{"empty topic", "/api/v1/topics/", "x", 400, "invalid topic"},
		{"hub topic", "/api/v1/topics/$hub/x", "x", 400, "hub's own"},
		{"qos 3", "/api/v1/topics/a?qos=3", "x", 400, "qos"},
		{"qos word", "/api/v1/topics/a?qos=one", "x", 400, "qos"},
		{"retain word", "/api/v1/topics/a?retain=maybe", "x", 400, "retain"},
		{"too large", "/api/v1/topics/a", strings.Repeat("x", 1025), 413, "1024 bytes"},
	}
	for _, tt := range tests {
		status, _, body := h.do("POST", tt.path, "", "text/plain", tt.body)
		if status != tt.status {
			t.Errorf("%s: status %d (%s), want %d", tt.name, status, body, tt.status)
			continue
		}
		if msg := errorOf(t, body); !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: message %q does not say %q", tt.name, msg, tt.msg)
		}
	}
}

// A chunked body (no Content-Length) above the limit is cut off while
// being read and still answers 413.
func TestPublishChunkedTooLarge(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{maxBody: 100})
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(strings.Repeat("y", 500)))
		_ = pw.Close()
	}()
	req, _ := http.NewRequest("POST", h.base+"/api/v1/topics/big", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

func TestRetainedReadAndClear(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	if s, _, b := h.do("GET", "/api/v1/topics/home/lamp", "", "", ""); s != 404 || !strings.Contains(errorOf(t, b), "no retained value") {
		t.Fatalf("read before publish: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/topics/home/lamp?retain=true&qos=1", "", "application/json", `{"on":true}`); s != 200 {
		t.Fatalf("publish: %d %s", s, b)
	}
	s, hdr, b := h.do("GET", "/api/v1/topics/home/lamp", "", "", "")
	if s != 200 || b != `{"on":true}` || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("read: %d %q %q", s, b, hdr.Get("Content-Type"))
	}
	if hdr.Get(HeaderQoS) != "1" || hdr.Get(HeaderOriginProtocol) != "rest" || hdr.Get(HeaderID) == "" || hdr.Get(HeaderTime) == "" {
		t.Errorf("headers %v", hdr)
	}
	// A filter reads every matching retained value as JSON.
	h.do("POST", "/api/v1/topics/home/fan?retain=true", "", "", "\xff\xfe")
	s, _, b = h.do("GET", "/api/v1/topics/home/%2B", "", "", "")
	var list []EnvelopeJSON
	if s != 200 || json.Unmarshal([]byte(b), &list) != nil || len(list) != 2 {
		t.Fatalf("filter read: %d %s", s, b)
	}
	if list[0].Topic != "home/fan" || list[0].PayloadEncoding != "base64" || list[0].Payload != base64.StdEncoding.EncodeToString([]byte("\xff\xfe")) {
		t.Errorf("binary entry %+v", list[0])
	}
	if list[1].Topic != "home/lamp" || list[1].Payload != `{"on":true}` || list[1].PayloadEncoding != "" {
		t.Errorf("text entry %+v", list[1])
	}
	if s, _, b := h.do("DELETE", "/api/v1/topics/home/lamp", "", "", ""); s != 204 {
		t.Fatalf("clear: %d %s", s, b)
	}
	if s, _, _ := h.do("GET", "/api/v1/topics/home/lamp", "", "", ""); s != 404 {
		t.Fatalf("read after clear: %d", s)
	}
	if s, _, _ := h.do("DELETE", "/api/v1/topics/home/lamp", "", "", ""); s != 404 {
		t.Fatalf("second clear: %d", s)
	}
	// $ topics can be read (here: nothing retained yet).
	if s, _, _ := h.do("GET", "/api/v1/topics/$hub/devices/x/presence", "", "", ""); s != 404 {
		t.Fatalf("read $hub topic: %d", s)
	}
	if s, _, _ := h.do("GET", "/api/v1/topics/a/%23/b", "", "", ""); s != 400 {
		t.Fatalf("read with a bad filter: %d", s)
	}
}

// A publish at QoS >= 1 that cannot be made durable answers 507.
func TestPublishStorageFailure(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	s, _, b := h.do("POST", "/api/v1/topics/a/b?qos=1&retain=true", "", "text/plain", "x")
	if s != http.StatusInsufficientStorage || !strings.Contains(errorOf(t, b), "storage") {
		t.Fatalf("status %d %s, want 507", s, b)
	}
	// QoS 0 without retain needs no storage.
	if s, _, b := h.do("POST", "/api/v1/topics/a/b", "", "text/plain", "x"); s != http.StatusAccepted {
		t.Fatalf("qos 0: %d %s", s, b)
	}
}

func TestHealthAndMisc(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	if s, _, b := h.do("GET", "/healthz", "", "", ""); s != 200 || !strings.Contains(b, `"status":"ok"`) ||
		!strings.Contains(b, `"name":"http"`) || !strings.Contains(b, `"state":"accepting"`) {
		t.Errorf("healthz: %d %q", s, b)
	}
	if s, _, b := h.do("GET", "/nope", "", "", ""); s != 404 {
		t.Errorf("unknown path: %d %s", s, b)
	} else {
		errorOf(t, b)
	}
	if s, _, b := h.do("PUT", "/api/v1/subscribe", "", "", ""); s != 405 {
		t.Errorf("wrong method: %d %s", s, b)
	}
	if s, _, b := h.do("GET", "/metrics", "", "", ""); s != 404 {
		t.Errorf("metrics without handler: %d %s", s, b)
	}
}

func TestHealthFuncAndMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bus, err := broker.NewMemory(broker.MemoryConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	reg, _ := devices.New(devices.Config{Store: st, Bus: bus})
	promReg := prometheus.NewRegistry()
	healthErr := errors.New("mqtt: listener closed")
	var sick atomic.Bool
	a, err := New(Config{Addr: "127.0.0.1:0", Bus: bus, Store: st, Auth: adapters.NewAuth(st, nil), Devices: reg,
		Health: func() error {
			if sick.Load() {
				return healthErr
			}
			return nil
		},
		Metrics: promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}), Registerer: promReg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	h := &testHub{t: t, base: "http://" + a.Addrs()["http"], httpc: http.DefaultClient}
	if s, _, b := h.do("GET", "/healthz", "", "", ""); s != 200 || !strings.Contains(b, `"status":"ok"`) {
		t.Fatalf("healthy: %d %q", s, b)
	}
	sick.Store(true)
	if s, _, b := h.do("GET", "/healthz", "", "", ""); s != 503 || !strings.Contains(b, "listener closed") || !strings.Contains(b, `"status":"unavailable"`) {
		t.Fatalf("sick: %d %q", s, b)
	}
	h.do("POST", "/api/v1/topics/m", "", "", "x")
	s, _, b := h.do("GET", "/metrics", "", "", "")
	if s != 200 || !strings.Contains(b, "hub_rest_published_total 1") ||
		!strings.Contains(b, `hub_rest_requests_total{code="202",method="POST",route="/api/v1/topics/*topic"} 1`) {
		t.Fatalf("metrics: %d %s", s, b)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bus, _ := broker.NewMemory(broker.MemoryConfig{})
	defer bus.Close()
	reg, _ := devices.New(devices.Config{Store: st, Bus: bus})
	auth := adapters.NewAuth(st, nil)
	ok := Config{Addr: "127.0.0.1:0", Bus: bus, Store: st, Auth: auth, Devices: reg}
	tests := []struct {
		field  string
		mutate func(*Config)
	}{
		{"Addr", func(c *Config) { c.Addr = "" }},
		{"Addr", func(c *Config) { c.Addr = "nohostport" }},
		{"TLSAddr", func(c *Config) { c.TLSAddr = "nohostport" }},
		{"TLSConfig", func(c *Config) { c.TLSAddr = "127.0.0.1:0" }},
		{"Bus", func(c *Config) { c.Bus = nil }},
		{"Store", func(c *Config) { c.Store = nil }},
		{"Auth", func(c *Config) { c.Auth = nil }},
		{"Devices", func(c *Config) { c.Devices = nil }},
		{"MaxBody", func(c *Config) { c.MaxBody = -1 }},
		{"Heartbeat", func(c *Config) { c.Heartbeat = -time.Second }},
	}
	for _, tt := range tests {
		c := ok
		tt.mutate(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: %v", tt.field, err)
		}
	}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
}

func TestIsText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ct, payload string
		want        bool
	}{
		{"text/plain", "hi", true},
		{"application/json", `{"a":1}`, true},
		{"application/x-www-form-urlencoded", "21.5", true},
		{"application/x-www-form-urlencoded", "\xff", false},
		{"application/octet-stream", "hi", false},
		{"", "hi", true},
		{"", "\x00\x01", false},
	}
	for _, tt := range tests {
		if got := isText(tt.ct, []byte(tt.payload)); got != tt.want {
			t.Errorf("isText(%q, %q) = %v", tt.ct, tt.payload, got)
		}
	}
}
