package bridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/broker"
)

func newBridge(t *testing.T, bus broker.Bus, cfg Config, reg prometheus.Registerer) *Bridge {
	t.Helper()
	b, err := New(Options{Config: cfg, Bus: bus, Node: "n1", Logger: quiet, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

func stop(t *testing.T, b *Bridge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStoppedBridgeKeepsBoth: while the bridge is stopped, the bus keeps
// what it owes the upstream (its durable subscription) and the upstream
// keeps what it owes the bridge (the persistent session); both arrive once
// it starts again.
//
// Both directions are QoS 1, so a message may arrive twice, and under load
// it does: the upstream (mochi) resends its in-flight PUBLISH right after
// CONNACK, and when the bridge's SUBSCRIBE reaches it before the PUBACK of
// that resend, mochi refuses the subscription with 0x91 (it keeps one
// packet-id space for both directions), the bridge reconnects and the
// upstream resends once more. The test counts copies, not exactly one.
func TestStoppedBridgeKeepsBoth(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "127.0.0.1:0", "r/#")
	bus := newBus(t)
	got := collect(t, bus, "l/#")
	cfg := Config{Name: "keep", URL: "tcp://" + up.addr,
		In: []Rule{{Filter: "#", RemotePrefix: "u/", LocalPrefix: "l/"}}, Out: []Rule{{Filter: "#", LocalPrefix: "o/", RemotePrefix: "r/"}}}
	reg := prometheus.NewRegistry()
	b := newBridge(t, bus, cfg, reg)
	waitHealthy(t, b)
	stop(t, b)

	publish(t, bus, "o/1", "out", 1) // returns once stored for the bridge's durable subscription
	if err := up.srv.Publish("u/1", []byte("in"), false, 1); err != nil {
		t.Fatal(err)
	}
	// The upstream holds the message for the session once it has seen the
	// bridge go and has the message in flight for it.
	eventually(t, "upstream session holds the message", 10*time.Second, func() bool {
		cl, ok := up.srv.Clients.Get(cfg.clientID())
		return ok && cl.Closed() && cl.State.Inflight.Len() == 1
	})
	if len(up.received()) != 0 || len(got()) != 0 {
		t.Fatalf("a stopped bridge moved messages: %v %d", up.received(), len(got()))
	}

	b = newBridge(t, bus, cfg, reg) // same registry: Stop unregistered the metrics
	defer stop(t, b)
	waitHealthy(t, b)
	eventually(t, "out after restart", 10*time.Second, func() bool { return len(up.received()) >= 1 })
	eventually(t, "in after restart", 10*time.Second, func() bool { return len(got()) >= 1 })
	for _, m := range up.received() {
		if m != "r/1=out" {
			t.Fatalf("upstream got %q", m)
		}
	}
	for _, e := range got() {
		if e.Topic != "l/1" || string(e.Payload) != "in" {
			t.Fatalf("got %q %q", e.Topic, e.Payload)
		}
	}
	values := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]float64{}
		for _, mf := range mfs {
			m := mf.GetMetric()[0]
			v[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	// The counters count copies: one per message, one more per QoS 1
	// redelivery the bridge took.
	eventually(t, "counters match what moved", 10*time.Second, func() bool {
		v := values()
		return v["hub_bridge_out_total"] == float64(len(up.received())) &&
			v["hub_bridge_in_total"] == float64(len(got())) && v["hub_bridge_connected"] == 1
	})
}

func TestHealthNamesUpstream(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	b := newBridge(t, newBus(t), Config{Name: "h", URL: "tcp://" + addr, In: []Rule{{Filter: "#"}}}, nil)
	defer stop(t, b)
	eventually(t, "a failed attempt", 5*time.Second, func() bool {
		err := b.Healthy()
		return err != nil && strings.Contains(err.Error(), "connect:")
	})
	if err := b.Healthy(); !strings.Contains(err.Error(), `bridge "h": not connected to tcp://`+addr) {
		t.Fatalf("health %v", err)
	}
	if b.Name() != "bridge:h" {
		t.Fatalf("name %q", b.Name())
	}
}

// selfSigned writes a certificate for 127.0.0.1 and returns its TLS pair
// and the path of its PEM.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

func TestTLSUpstream(t *testing.T) {
	t.Parallel()
	cert, caFile := selfSigned(t)
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: quiet})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	bus := newBus(t)
	got := collect(t, bus, "#")

	// Without the CA the upstream's certificate is refused.
	bad := newBridge(t, bus, Config{Name: "untrusted", URL: "ssl://" + l.Address(), In: []Rule{{Filter: "#"}}}, nil)
	eventually(t, "certificate refused", 10*time.Second, func() bool {
		err := bad.Healthy()
		return err != nil && strings.Contains(err.Error(), "certificate")
	})
	stop(t, bad)

	b := newBridge(t, bus, Config{Name: "tls", URL: "ssl://" + l.Address(), TLS: TLSConfig{CAFile: caFile}, In: []Rule{{Filter: "#"}}}, nil)
	defer stop(t, b)
	waitHealthy(t, b)
	if err := srv.Publish("secure", []byte("yes"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "message over TLS", 5*time.Second, func() bool { return len(got()) == 1 })
}

func TestForget(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "127.0.0.1:0", "#")
	bus := newBus(t)
	cfg := Config{Name: "gone", URL: "tcp://" + up.addr, Out: []Rule{{Filter: "#"}}}
	b := newBridge(t, bus, cfg, nil)
	waitHealthy(t, b)
	stop(t, b)
	publish(t, bus, "dropped", "x", 1)
	if err := Forget(context.Background(), bus, "gone"); err != nil {
		t.Fatal(err)
	}
	b = newBridge(t, bus, cfg, nil)
	defer stop(t, b)
	waitHealthy(t, b)
	publish(t, bus, "fresh", "y", 1)
	eventually(t, "fresh message", 5*time.Second, func() bool { return len(up.received()) >= 1 })
	time.Sleep(200 * time.Millisecond)
	if s := strings.Join(up.received(), ","); s != "fresh=y" {
		t.Fatalf("upstream got %s (the forgotten queue was kept)", s)
	}
}

func TestWebSocketUpstream(t *testing.T) {
	t.Parallel()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: quiet})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	if err := srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	bus := newBus(t)
	got := collect(t, bus, "#")
	b := newBridge(t, bus, Config{Name: "ws", URL: "ws://" + addr + "/mqtt", In: []Rule{{Filter: "#"}}}, nil)
	defer stop(t, b)
	waitHealthy(t, b)
	if err := srv.Publish("over/ws", []byte("yes"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "message over a websocket", 5*time.Second, func() bool { return len(got()) == 1 })
}
