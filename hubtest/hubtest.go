// Package hubtest starts a whole hub in-process for tests: every listener
// on a free loopback port, a fresh store in a temporary directory, stopped
// when the test ends. Cross-protocol tests stay short with it.
package hubtest

import (
	"context"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/xmpp"
)

// Hub is a running test hub.
type Hub struct {
	*gateway.Hub
	Config gateway.Config
}

// Option changes the configuration before the hub starts.
type Option func(*gateway.Config)

// Start starts a hub with every listener on 127.0.0.1 port 0 and stops it
// when t ends. Users admin/adminpw (admin) and alice/alicepw (user) exist.
func Start(t testing.TB, opts ...Option) *Hub {
	t.Helper()
	cfg := gateway.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.CoAP.Addr = "127.0.0.1:0"
	cfg.XMPP.Addr = "127.0.0.1:0"
	cfg.XMPP.ProxyAddr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	for _, o := range opts {
		o(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig starts a hub with cfg as it is (use it to restart a hub on
// the same data directory).
func StartConfig(t testing.TB, cfg gateway.Config) *Hub {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("HUB_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return StartLogged(t, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// StartLogged is StartConfig logging to log (a test that reads the logs).
func StartLogged(t testing.TB, cfg gateway.Config, log *slog.Logger) *Hub {
	t.Helper()
	// Tests run side by side: the proxy's fixed default port would clash.
	if cfg.XMPP.ProxyAddr == xmpp.DefaultProxyAddr {
		cfg.XMPP.ProxyAddr = "127.0.0.1:0"
	}
	h, err := gateway.New(cfg, log)
	if err != nil {
		t.Fatalf("hubtest: new hub: %v", err)
	}
	ctx := context.Background()
	for _, u := range []struct{ name, pw, role string }{
		{"admin", "adminpw", adapters.RoleAdmin},
		{"alice", "alicepw", adapters.RoleUser},
	} {
		if _, err := h.Store.GetUser(ctx, u.name); err == nil {
			continue
		}
		if err := h.Store.AddUser(ctx, u.name, u.pw, u.role); err != nil {
			t.Fatalf("hubtest: add user %s: %v", u.name, err)
		}
	}
	if err := h.Start(ctx); err != nil {
		t.Fatalf("hubtest: start: %v", err)
	}
	th := &Hub{Hub: h, Config: cfg}
	t.Cleanup(func() { th.Close(t) })
	return th
}

// stopTimeout bounds Close; a stop still running after dumpAfter has the
// hub's goroutines logged (see stuckGoroutines), as they are then.
const (
	stopTimeout = 10 * time.Second
	dumpAfter   = stopTimeout - time.Second
)

// Close stops the hub (safe to call more than once).
func (h *Hub) Close(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	dump := time.AfterFunc(dumpAfter, func() {
		t.Logf("hubtest: stop still running after %v; the hub's goroutines:\n%s", dumpAfter, stuckGoroutines())
	})
	err := h.Stop(ctx)
	dump.Stop()
	if err != nil {
		t.Errorf("hubtest: stop: %v", err)
	}
}

// stuckGoroutines returns the stacks of the goroutines running the hub's
// code (or the MQTT broker it embeds), those with the same stack counted
// once, to say where a stop that does not end waits. Goroutines with no
// frame in those (clients' libraries, the test runner) are left out; the
// tests' own functions, in hubsmith/hub packages, stay in.
func stuckGoroutines() string {
	var all strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&all, 1)
	var b strings.Builder
	for _, g := range strings.Split(all.String(), "\n\n") {
		if strings.Contains(g, "hubtest.stuckGoroutines") {
			continue
		}
		if strings.Contains(g, "hubsmith/hub/") || strings.Contains(g, "mochi-mqtt/server") {
			b.WriteString(g)
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

// Addr returns the bound address of the first listener whose key starts
// with prefix (keys are "adapter.listener", e.g. "mqtt.tcp"); it fails the
// test when there is none.
func (h *Hub) Addr(t testing.TB, prefix string) string {
	t.Helper()
	addrs := h.Addrs()
	best := ""
	for k := range addrs {
		if strings.HasPrefix(k, prefix) && (best == "" || k < best) {
			best = k
		}
	}
	if best == "" {
		t.Fatalf("hubtest: no listener %q among %v", prefix, addrs)
	}
	return addrs[best]
}
