package xmpp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

func TestNewValidation(t *testing.T) {
	t.Parallel()
	bus, err := broker.NewMemory(broker.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	h := startHub(t, nil)
	good := Config{Addr: "127.0.0.1:0", Bus: bus, Auth: adapters.NewAuth(nil, nil), Store: h.st, DataDir: t.TempDir()}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no bus", func(c *Config) { c.Bus = nil }, "Bus"},
		{"no auth", func(c *Config) { c.Auth = nil }, "Auth"},
		{"no store", func(c *Config) { c.Store = nil }, "Store"},
		{"bad domain", func(c *Config) { c.Domain = "a@b" }, "Domain"},
		{"nothing enabled", func(c *Config) { c.Addr = "off" }, "Addr"},
		{"bad addr", func(c *Config) { c.Addr = "nohost" }, "Addr"},
		{"tiny stanza limit", func(c *Config) { c.MaxStanza = 100 }, "MaxStanza"},
		{"negative depth", func(c *Config) { c.MaxDepth = -1 }, "MaxDepth"},
		{"no certificate place", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"component without domain", func(c *Config) { c.ComponentAddr = "127.0.0.1:5347" }, "ComponentDomain"},
		{"component without secret", func(c *Config) { c.ComponentAddr, c.ComponentDomain = "127.0.0.1:5347", "t.example" }, "ComponentSecret"},
		{"negative resume timeout", func(c *Config) { c.ResumeTimeout = -time.Second }, "ResumeTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Errorf("New(good): %v", err)
	}
}

// verifiedLogin logs in with full certificate verification against roots.
func verifiedLogin(ctx context.Context, addr string, roots *x509.CertPool) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	s, err := mxmpp.NewClientSession(ctx, jid.MustParse("alice@localhost"), conn,
		mxmpp.StartTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}),
		mxmpp.SASL("", "alicepw", sasl.ScramSha256), mxmpp.BindResource())
	if err != nil {
		_ = conn.Close()
		return err
	}
	return s.Close()
}

func TestGeneratedCertificateIsKept(t *testing.T) {
	h := startHub(t, nil)
	pemBytes, err := os.ReadFile(filepath.Join(h.dir, CertFile))
	if err != nil {
		t.Fatalf("generated certificate: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("generated certificate does not parse")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := verifiedLogin(ctx, h.addr, roots); err != nil {
		t.Fatalf("login verifying the generated certificate: %v", err)
	}
	// A second start with the same data dir serves the same certificate.
	if err := h.a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(h.dir, CertFile))
	if string(again) != string(pemBytes) {
		t.Error("certificate regenerated on restart")
	}
	if err := verifiedLogin(ctx, h.a.Addrs()["xmpp"], roots); err != nil {
		t.Errorf("login after restart: %v", err)
	}
}

// TestDamagedGeneratedCertificate: a generated certificate left empty by a
// power cut (written by a hub that did not sync it) does not keep the hub
// from starting: a new one is generated.
func TestDamagedGeneratedCertificate(t *testing.T) {
	h := startHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	certPath := filepath.Join(h.dir, CertFile)
	if err := os.WriteFile(certPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.a.Start(ctx); err != nil {
		t.Fatalf("start with an empty generated certificate: %v", err)
	}
	pemBytes, _ := os.ReadFile(certPath)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no new certificate")
	}
	if err := verifiedLogin(ctx, h.a.Addrs()["xmpp"], roots); err != nil {
		t.Errorf("login with the new certificate: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(h.dir, ".xmpp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestConfiguredCertificate(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := generateCert(cert, key, "localhost"); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	h := startHub(t, func(c *Config) {
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	})
	if _, err := os.Stat(filepath.Join(h.dir, CertFile)); err == nil {
		t.Error("a certificate was generated although one is configured")
	}
	pemBytes, _ := os.ReadFile(cert)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := verifiedLogin(ctx, h.addr, roots); err != nil {
		t.Fatalf("login verifying the configured certificate: %v", err)
	}
}
