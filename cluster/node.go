// Package cluster runs the NATS server a hub embeds in cluster mode:
// JetStream on, clustered with the other hubs' nodes when routes are
// given, the hub's bus connected to it in process. It also holds what the
// hubs of a cluster share in JetStream KV beside the bus: store buckets
// (KV: MQTT session records), principals (Principals: users, devices, ACL
// rules and tokens, each hub's SQLite store being its local copy, kept in
// step through the bucket hub_principals, last writer wins by KV
// revision) and leases (Leases: a bridge configured on several hubs runs
// on the one holding its lease in hub_leases).
package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config is the YAML `cluster:` section.
type Config struct {
	// Name is the cluster's name, the same on every node (required).
	Name string `yaml:"name"`
	// NodeName names this node, unique in the cluster ("" : the host
	// name and listen port).
	NodeName string `yaml:"node_name"`
	// Listen is the host:port this node takes routes from the others on.
	Listen string `yaml:"listen"`
	// Routes are the other nodes' listen addresses (host:port or
	// nats-route://host:port); none makes a cluster of one.
	Routes []string `yaml:"routes"`
	// StoreDir is where JetStream keeps its files ("": the caller's
	// default, the hub's data directory).
	StoreDir string `yaml:"store_dir"`
	// Replicas is how many copies of the bus's stream and buckets
	// JetStream keeps (0: 3 when there are at least 3 nodes, else 1).
	Replicas int `yaml:"replicas"`
	// ClientListen is where the node takes NATS client connections
	// (tools such as the nats CLI; "" : a random loopback port); the hub
	// itself connects in process.
	ClientListen string `yaml:"client_listen"`
}

// Enabled reports whether a cluster is configured.
func (c Config) Enabled() bool { return c.Name != "" || c.Listen != "" || len(c.Routes) > 0 }

// Validate checks the section, naming the field at fault.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("cluster: name is required")
	}
	if strings.ContainsAny(c.Name, " .*>") {
		return fmt.Errorf("cluster: name %q: no spaces, '.', '*' or '>'", c.Name)
	}
	if c.Listen == "" {
		return errors.New("cluster: listen is required (host:port for the other nodes)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("cluster: listen %q: %w", c.Listen, err)
	}
	if c.ClientListen != "" {
		if _, _, err := net.SplitHostPort(c.ClientListen); err != nil {
			return fmt.Errorf("cluster: client_listen %q: %w", c.ClientListen, err)
		}
	}
	for _, r := range c.Routes {
		if _, err := routeURL(r); err != nil {
			return err
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("cluster: replicas %d: want 1..5", c.Replicas)
	}
	return nil
}

// EffectiveReplicas is Replicas, or its default for the number of nodes.
func (c Config) EffectiveReplicas() int {
	if c.Replicas > 0 {
		return c.Replicas
	}
	if len(c.Routes)+1 >= 3 {
		return 3
	}
	return 1
}

func routeURL(r string) (string, error) {
	hp := strings.TrimPrefix(r, "nats-route://")
	if _, _, err := net.SplitHostPort(hp); err != nil {
		return "", fmt.Errorf("cluster: route %q: %w", r, err)
	}
	return "nats-route://" + hp, nil
}

// Node is a running embedded NATS server.
type Node struct {
	srv *server.Server
}

// Start starts the node and waits until it takes connections (JetStream
// may still be electing its leaders: the bus waits for those).
func Start(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("cluster: store_dir is required")
	}
	if log == nil {
		log = slog.Default()
	}
	host, portStr, _ := net.SplitHostPort(cfg.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen %q: port: %w", cfg.Listen, err)
	}
	name := cfg.NodeName
	if name == "" {
		name = strings.NewReplacer(".", "_", ":", "_").Replace(cfg.Listen)
	}
	opts := &server.Options{
		ServerName: name,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		// The server starts routing only once a client listener is open,
		// so there is always one: on a random loopback port unless
		// ClientListen says where.
		Host:   "127.0.0.1",
		Port:   server.RANDOM_PORT,
		NoSigs: true,
		Cluster: server.ClusterOpts{
			Name: cfg.Name,
			Host: host,
			Port: port,
		},
	}
	if cfg.ClientListen != "" {
		ch, cp, _ := net.SplitHostPort(cfg.ClientListen)
		p, err := strconv.Atoi(cp)
		if err != nil {
			return nil, fmt.Errorf("cluster: client_listen %q: port: %w", cfg.ClientListen, err)
		}
		opts.Host, opts.Port = ch, p
	}
	for _, r := range cfg.Routes {
		u, _ := routeURL(r)
		opts.Routes = append(opts.Routes, server.RoutesFromStr(u)...)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: nats server: %w", err)
	}
	srv.SetLoggerV2(&logger{log: log.With("component", "nats")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("cluster: nats server on %s did not start", cfg.Listen)
	}
	return &Node{srv: srv}, nil
}

// Connect opens an in-process connection to the node.
func (n *Node) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(n.srv), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("cluster: connect: %w", err)
	}
	return nc, nil
}

// ClusterAddr is the address the node takes routes on.
func (n *Node) ClusterAddr() net.Addr { return n.srv.ClusterAddr() }

// ClientURL is the URL of the client listener ("" when there is none).
func (n *Node) ClientURL() string {
	if n.srv.Addr() == nil {
		return ""
	}
	return n.srv.ClientURL()
}

// Shutdown stops the node and waits until it has.
func (n *Node) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// logger hands the server's log lines to slog.
type logger struct{ log *slog.Logger }

func (l *logger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *logger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *logger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *logger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, "Error trying to connect to route") {
		// Expected while the other nodes start: the server retries.
		l.log.Debug(msg)
		return
	}
	l.log.Error(msg)
}
func (l *logger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *logger) Tracef(format string, v ...any) {}
