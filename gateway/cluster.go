package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/natsbus"
	"github.com/hubsmith/hub/cluster"
	"github.com/hubsmith/hub/mqtt"
)

// NATSConfig is the `nats:` section: an existing NATS deployment the bus
// runs over. `nats: URL` alone is the short form.
type NATSConfig struct {
	// URL is the NATS server URL, or several comma-separated ("" : no
	// NATS; --nats sets it).
	URL string `yaml:"url"`
	// Credentials is a NATS credentials file (JWT and NKey seed).
	Credentials string `yaml:"credentials"`
	// TLS is the client's TLS: CAFile checks the servers, CertFile and
	// KeyFile are the client certificate when the servers ask for one.
	TLS NATSTLS `yaml:"tls"`
	// Replicas is how many copies JetStream keeps of the bus's stream and
	// buckets (0: 1; 3 for a three-node JetStream cluster).
	Replicas int `yaml:"replicas"`
	// Prefix names the bus's subjects, stream and buckets ("" : "hub"),
	// for several hub clusters on one NATS.
	Prefix string `yaml:"prefix"`
	// AckWait is how long JetStream waits for a delivery's
	// acknowledgement before it delivers it again, to a member of the
	// same consumer group on another hub when the hub it was out to died
	// (0: 30 s).
	AckWait time.Duration `yaml:"ack_wait"`
}

// NATSTLS are the TLS files of a NATS client connection.
type NATSTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// UnmarshalYAML takes `nats: URL` as well as the full section.
func (n *NATSConfig) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode {
		return v.Decode(&n.URL)
	}
	type plain NATSConfig
	return v.Decode((*plain)(n))
}

// Enabled reports whether the bus runs over an external NATS.
func (n NATSConfig) Enabled() bool { return n.URL != "" }

// validateCluster checks the nats and cluster sections.
func (c *Config) validateCluster() error {
	if c.NATS.Enabled() && c.Cluster.Enabled() {
		return errors.New("nats and cluster: choose one (an external NATS, or NATS embedded in each hub)")
	}
	if c.NATS.Enabled() {
		for _, u := range splitURLs(c.NATS.URL) {
			p, err := url.Parse(u)
			if err != nil || p.Host == "" {
				return fmt.Errorf("nats.url %q: want nats://host:port", u)
			}
		}
		if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
			return errors.New("nats.tls: cert_file and key_file go together")
		}
		if c.NATS.Replicas < 0 || c.NATS.Replicas > 5 {
			return fmt.Errorf("nats.replicas %d: want 1..5", c.NATS.Replicas)
		}
	}
	if c.NATS.AckWait < 0 {
		return fmt.Errorf("nats.ack_wait %v: must not be negative (0: 30s)", c.NATS.AckWait)
	}
	if c.Cluster.Enabled() {
		if err := c.Cluster.Validate(); err != nil {
			return err
		}
	}
	return c.validateXMPPCluster()
}

func splitURLs(s string) []string {
	var out []string
	for u := range strings.SplitSeq(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// clusterStartTimeout bounds the wait for JetStream (its leaders elected,
// a quorum of nodes up) when a hub starts.
const clusterStartTimeout = 90 * time.Second

// natsHub is what a hub on NATS holds beyond the bus: the embedded node,
// if any, the connection, and the cluster-wide session store.
type natsHub struct {
	node     *cluster.Node
	nc       *nats.Conn
	sessions mqtt.SessionStore
	kv       *cluster.KV // the cluster's key/value buckets
	// js, prefix and replicas are the JetStream the bus runs on, for
	// what cluster_principals.go keeps there; prefix also names the
	// subjects, stream and buckets.
	js       jetstream.JetStream
	prefix   string
	replicas int
	shared   clusterShared // cluster_principals.go
}

func (n *natsHub) close() {
	if n == nil {
		return
	}
	n.shared.stop()
	if n.nc != nil {
		n.nc.Close()
	}
	if n.node != nil {
		n.node.Shutdown()
	}
}

// openNATS starts the embedded node or connects to the external NATS, and
// builds the bus over it. It returns nil, nil when neither is configured.
func openNATS(cfg Config, log *slog.Logger) (*natsbus.Bus, *natsHub, error) {
	if !cfg.NATS.Enabled() && !cfg.Cluster.Enabled() {
		return nil, nil, nil
	}
	n := &natsHub{}
	ok := false
	defer func() {
		if !ok {
			n.close()
		}
	}()
	replicas, prefix := cfg.NATS.Replicas, cfg.NATS.Prefix
	if cfg.Cluster.Enabled() {
		cc := cfg.Cluster
		if cc.StoreDir == "" {
			cc.StoreDir = filepath.Join(cfg.DataDir, "nats")
		}
		node, err := cluster.Start(cc, log)
		if err != nil {
			return nil, nil, err
		}
		n.node = node
		if n.nc, err = node.Connect("hub " + cfg.Node); err != nil {
			return nil, nil, err
		}
		replicas = cc.EffectiveReplicas()
		log.Info("cluster: embedded NATS node started", "cluster", cc.Name, "listen", cc.Listen, "routes", cc.Routes, "replicas", replicas)
	} else {
		opts := []nats.Option{nats.Name("hub " + cfg.Node), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats: disconnected", "err", err) }),
			nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats: reconnected", "url", nc.ConnectedUrl()) })}
		if f := cfg.NATS.Credentials; f != "" {
			opts = append(opts, nats.UserCredentials(f))
		}
		if f := cfg.NATS.TLS.CAFile; f != "" {
			opts = append(opts, nats.RootCAs(f))
		}
		if cfg.NATS.TLS.CertFile != "" {
			opts = append(opts, nats.ClientCert(cfg.NATS.TLS.CertFile, cfg.NATS.TLS.KeyFile))
		}
		nc, err := nats.Connect(cfg.NATS.URL, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("nats: connect %s: %w", cfg.NATS.URL, err)
		}
		n.nc = nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	bus, err := natsbus.New(ctx, natsbus.Config{Conn: n.nc, Prefix: prefix, Replicas: replicas, Node: cfg.Node, Logger: log,
		AckWait: cfg.NATS.AckWait, Quotas: cfg.Limits.Storage.quotas(cfg.DataDir),
		ColdRetainedAbove: pick(cfg.Limits.Storage.RetainedColdAbove, DefaultRetainedColdAbove)})
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(n.nc)
	if err != nil {
		_ = bus.Close()
		return nil, nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	if prefix == "" {
		prefix = natsbus.DefaultPrefix
	}
	kv := cluster.NewKV(js, prefix, replicas)
	if err := kv.Ensure(ctx, mqtt.SessionBuckets...); err != nil {
		_ = bus.Close()
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	if err := kv.Ensure(ctx, xmppBuckets...); err != nil {
		_ = bus.Close()
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	n.sessions, n.kv = kv, kv
	n.js, n.prefix, n.replicas = js, prefix, replicas
	ok = true
	return bus, n, nil
}

var _ broker.Bus = (*natsbus.Bus)(nil)

// sessionStore is where the MQTT adapter keeps its session records: the
// cluster's KV when the bus runs over NATS, so that a client resumes its
// session on any hub; else the store.
func (h *Hub) sessionStore() mqtt.SessionStore {
	if h.nats != nil {
		return h.nats.sessions
	}
	return h.Store
}
