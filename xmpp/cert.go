package xmpp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Certificate files generated in Config.DataDir when no TLSConfig is given.
const (
	CertFile = "xmpp-cert.pem"
	KeyFile  = "xmpp-key.pem"
)

// tlsConfig returns the configured TLS settings, or loads (generating on
// first start) a self-signed certificate for the domain from the data dir.
func (a *Adapter) tlsConfig() (*tls.Config, error) {
	if a.cfg.TLSConfig != nil {
		return a.cfg.TLSConfig, nil
	}
	certPath := filepath.Join(a.cfg.DataDir, CertFile)
	keyPath := filepath.Join(a.cfg.DataDir, KeyFile)
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		if err := generateCert(certPath, keyPath, a.cfg.Domain); err != nil {
			return nil, err
		}
		a.log.Info("xmpp: generated a self-signed certificate", "file", certPath)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		// The hub's own pair, damaged (a hub older than the synced
		// writes, killed by a power cut): a new one is as good, and
		// better than not starting.
		a.log.Warn("xmpp: generated certificate unreadable, generating a new one", "file", certPath, "err", err)
		if err := generateCert(certPath, keyPath, a.cfg.Domain); err != nil {
			return nil, err
		}
		if cert, err = tls.LoadX509KeyPair(certPath, keyPath); err != nil {
			return nil, fmt.Errorf("xmpp: load certificate %s: %w", certPath, err)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// generateCert writes a self-signed ECDSA certificate valid for domain and
// its topics. and pubsub. subdomains.
func generateCert(certPath, keyPath, domain string) error {
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return fmt.Errorf("xmpp: certificate directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("xmpp: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return fmt.Errorf("xmpp: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain, Organization: []string{"hub"}},
		DNSNames:              []string{domain, "topics." + domain, "pubsub." + domain},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("xmpp: create certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("xmpp: marshal key: %w", err)
	}
	// The key first: a certificate on disk means both are there.
	if err := writeFileSynced(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("xmpp: write key: %w", err)
	}
	if err := writeFileSynced(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("xmpp: write certificate: %w", err)
	}
	return nil
}

// writeFileSynced replaces path with data so that a crash or power cut
// leaves the old file or the new one, never a torn or empty one: a
// temporary file, fsynced, renamed over path, and the directory fsynced.
func writeFileSynced(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// metrics are the adapter's Prometheus metrics.
type metrics struct {
	stanzasIn, stanzasOut prometheus.Counter
	sessions              prometheus.Gauge
	streamErrors          *prometheus.CounterVec
	denied                prometheus.Counter
	acceptErrors          prometheus.Counter
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		stanzasIn:    prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_xmpp_stanzas_received_total", Help: "Stanzas received from XMPP clients."}),
		stanzasOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_xmpp_stanzas_sent_total", Help: "Stanzas sent to XMPP clients."}),
		sessions:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "hub_xmpp_sessions", Help: "Bound XMPP sessions."}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_xmpp_stream_errors_total", Help: "Streams closed with a stream error."}, []string{"condition"}),
		denied:       prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_xmpp_denied_total", Help: "Envelopes, items and listing entries not sent because the user may not read their topic."}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_xmpp_accept_errors_total", Help: "Temporary accept errors (out of descriptors and the like) retried on the c2s listener."}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.stanzasIn, m.stanzasOut, m.sessions, m.streamErrors, m.denied, m.acceptErrors} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("xmpp: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
