// Package gateway assembles a running hub from its configuration: the
// store, the bus, the device registry and every enabled protocol adapter,
// started in order and stopped in reverse. cmd/hub and the end-to-end
// tests (hubtest) both build hubs through it.
//
// Its errors carry no "hub:" prefix: the command line adds that once.
package gateway

import (
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/cluster"
	"github.com/hubsmith/hub/history"
	"github.com/hubsmith/hub/mqtt"
	"github.com/hubsmith/hub/rest"
	"github.com/hubsmith/hub/store"
	"github.com/hubsmith/hub/xmpp"
)

// Off is the address value that disables a listener.
const Off = "off"

// Config is the whole configuration of a hub. Field names in YAML are the
// snake_case forms; every flag of `hub serve` maps onto one field.
type Config struct {
	// DataDir holds the SQLite store and generated certificates.
	DataDir string `yaml:"data_dir"`
	// AllowAnonymous lets clients without credentials in on listeners that
	// are not loopback-only (loopback ones always allow them).
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// Node names this hub in envelopes' origin (default: random).
	Node string `yaml:"node"`
	// WriteThrough stores every QoS >= 1 envelope for its durable
	// subscribers (MQTT sessions behind the MQTT adapter, XMPP topic
	// subscribers) before the publisher is acknowledged, so an
	// acknowledged message survives kill -9 (and a power loss as
	// SyncInterval says). Turning it off trades that for throughput: the
	// store is then used only for subscribers that are away or fall
	// behind.
	WriteThrough bool `yaml:"write_through"`
	// SyncInterval is when the store's commits reach the disk, named as
	// NATS JetStream's sync_interval: "always" fsyncs every commit before
	// it returns (SQLite synchronous=FULL), so what the hub acknowledged
	// survives a power loss too; a duration (default 1s) returns once the
	// commit is in SQLite's WAL, which survives kill -9 of the hub, and
	// fsyncs the WAL at most that long later, so a power loss or kernel
	// crash can take the last interval's acknowledged messages (the
	// database stays consistent). See store.DefaultSyncInterval for why a
	// second. Read at start.
	SyncInterval string `yaml:"sync_interval"`
	// MaxQueued and MaxQueuedBytes bound each durable subscriber queue in
	// the store (XMPP topic subscribers, returning CoAP observers,
	// bridges, the MQTT adapter's feed) by envelopes and by topic and
	// payload bytes; past either, envelopes are dropped as QueuePolicy
	// says, counted and reported on $hub/subscribers/{id}/dropped. 0
	// means no bound of that kind. The defaults (100 000 envelopes, 64
	// MiB) keep a day of one reading a second for a subscriber that is
	// away, within what an SD card can spare per subscriber.
	MaxQueued      int   `yaml:"max_queued"`
	MaxQueuedBytes int64 `yaml:"max_queued_bytes"`
	// QueuePolicy is what full queues drop, the bus's and MQTT clients':
	// drop_oldest (default: a subscriber that comes back gets the latest
	// readings, as with EMQX) or drop_newest (it gets an unbroken run of
	// the oldest, as with Mosquitto).
	QueuePolicy string `yaml:"queue_policy"`

	MQTT MQTTConfig `yaml:"mqtt"`
	CoAP CoAPConfig `yaml:"coap"`
	XMPP XMPPConfig `yaml:"xmpp"`
	HTTP HTTPConfig `yaml:"http"`
	// NATS is an external NATS the bus runs over (URL "" : none).
	NATS NATSConfig `yaml:"nats"`
	// Cluster embeds a NATS node in the hub, clustered with the other
	// hubs' (Name "" : none). Without NATS or Cluster the bus is in-process.
	Cluster cluster.Config `yaml:"cluster"`
	// PprofAddr serves Go's profiles (net/http/pprof) when not off.
	PprofAddr string `yaml:"pprof_addr"`
	// TLS is the certificate used by TLS listeners that have none of
	// their own (mqtts, XMPP STARTTLS).
	TLS TLSFiles `yaml:"tls"`
	// ACL holds configured ACL rules per principal, consulted before the
	// stored ones and shown read-only by the API; the key "anonymous"
	// holds the rules of anonymous clients (adapters.AnonymousName;
	// default adapters.DefaultAnonymousRules), which then apply on
	// loopback-only listeners too.
	ACL map[string][]adapters.ACLRule `yaml:"acl"`
	// Bridges link the bus to upstream MQTT brokers.
	Bridges []bridge.Config `yaml:"bridges"`
	// RequireTLS refuses credentials sent in clear on listeners that are
	// not loopback-only: MQTT without TLS, plain HTTP, XMPP before
	// STARTTLS, CoAP over UDP without DTLS. Without it the hub warns at
	// start about each listener where they could.
	RequireTLS bool `yaml:"require_tls"`
	// Security holds what guards the logins.
	Security SecurityConfig `yaml:"security"`
	// Files configures the file store (gateway/files.go).
	Files FilesConfig `yaml:"files"`
	// History keeps numeric readings as time series, with retention per
	// topic filter (see history.Config; default history.Defaults()).
	History history.Config `yaml:"history"`
	// Limits bound what clients may hold: connections, subscriptions,
	// sessions, resources, pending writes and topic length
	// (adapters.LimitsConfig, reloaded: applied to what comes next, nobody
	// connected is dropped) and the storage quotas (StorageLimits, read at
	// start). 0: the default, negative: no limit.
	Limits LimitsConfig `yaml:"limits"`
	// Log configures logging.
	Log LogConfig `yaml:"log"`
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// SecurityConfig guards the logins of every protocol.
type SecurityConfig struct {
	// SCRAMIterations is the PBKDF2 count of new credentials (0:
	// store.SCRAMIterations, 10,000; at least store.MinSCRAMIterations).
	// A stored credential with fewer is re-derived at its user's next
	// login that gives the password (MQTT, REST, XMPP PLAIN): a SCRAM
	// login never shows the server the password.
	SCRAMIterations int `yaml:"scram_iterations"`
	// LoginBackoff bounds failed logins per source address and per
	// account in every protocol: after `free` failures (5) each further
	// one doubles the wait from `base` (1s) to `max` (60s), during which
	// logins from that address or to that account are refused unchecked;
	// `forget` (15m) of quiet clears it, as does a good login.
	LoginBackoff adapters.GuardConfig `yaml:"login_backoff"`
}

// MQTTConfig configures the MQTT listeners.
type MQTTConfig struct {
	Addr    string `yaml:"addr"`
	TLSAddr string `yaml:"tls_addr"`
	// WSAddr is the MQTT over WebSocket listener (any path, subprotocol
	// mqtt), for browsers and MQTT.js.
	WSAddr        string `yaml:"ws_addr"`
	MaxPacketSize int    `yaml:"max_packet_size"`
	// MaxQueued bounds the messages queued per MQTT session (like
	// Mosquitto's max_queued_messages) and MaxQueuedBytes their topic and
	// payload bytes (0: no byte bound). Past either, messages are dropped
	// as queue_policy says and reported on $hub/clients/{id}/dropped.
	MaxQueued      int   `yaml:"max_queued"`
	MaxQueuedBytes int64 `yaml:"max_queued_bytes"`
	// MaxInflight bounds the QoS 1/2 deliveries out to a client and not
	// acknowledged (a lower Receive Maximum of an MQTT 5 client wins); it
	// is also the Receive Maximum the hub announces.
	MaxInflight int `yaml:"max_inflight"`
	// ParkAfter is how long a client of the plain TCP listener may send
	// nothing before it is parked, held without a goroutine until it sends
	// again (0: the default, 2s; negative: never).
	ParkAfter time.Duration `yaml:"park_after"`
}

// minParkAfter is the shortest mqtt.park_after.
const minParkAfter = 100 * time.Millisecond

// CoAPConfig configures the CoAP listeners.
type CoAPConfig struct {
	Addr       string `yaml:"addr"`
	DTLSAddr   string `yaml:"dtls_addr"`
	MaxPayload int    `yaml:"max_payload"`
	// Observation caps per endpoint, per principal and in all (0: the
	// coap package's defaults 256, 1024, 4096).
	MaxObservations        int `yaml:"max_observations"`
	MaxObservationsPerUser int `yaml:"max_observations_per_user"`
	MaxObservationsTotal   int `yaml:"max_observations_total"`
	// Block-wise reassembly bounds per endpoint and in all (0: 2 and 64
	// times max_payload) and the idle timeout of a transfer (0: 30s).
	MaxUploadBytesPerEndpoint int64         `yaml:"max_upload_bytes_per_endpoint"`
	MaxUploadBytesTotal       int64         `yaml:"max_upload_bytes_total"`
	BlockwiseTimeout          time.Duration `yaml:"blockwise_timeout"`
	// VerifyLoopback checks return routability of loopback peers too.
	VerifyLoopback bool `yaml:"verify_loopback"`
	// RFC 7252's ACK_TIMEOUT and MAX_RETRANSMIT (0: 2s and 4).
	AckTimeout    time.Duration `yaml:"ack_timeout"`
	MaxRetransmit int           `yaml:"max_retransmit"`
	// EndpointIdleTimeout forgets a plain UDP endpoint that observes
	// nothing after this long without traffic (0: 1m).
	EndpointIdleTimeout time.Duration `yaml:"endpoint_idle_timeout"`
}

// XMPPConfig configures the XMPP server and component mode.
type XMPPConfig struct {
	Addr            string `yaml:"addr"`
	Domain          string `yaml:"domain"`
	ComponentAddr   string `yaml:"component_addr"`
	ComponentDomain string `yaml:"component_domain"`
	ComponentSecret string `yaml:"component_secret"`
	// ComponentPeers is what users of the server the hub is a component
	// of may do when no ACL rules are keyed by their bare JID: deny
	// (default), read (subscribe and read) or user (as a user without
	// rules).
	ComponentPeers string   `yaml:"component_peers"`
	MaxStanza      int      `yaml:"max_stanza"`
	TLS            TLSFiles `yaml:"tls"`
	// ProxyAddr is the XEP-0065 SOCKS5 bytestreams proxy (proxy.{domain})
	// listener, "off" for none; ProxyHost the host it is announced at
	// (the listener's host when empty).
	ProxyAddr string `yaml:"proxy_addr"`
	ProxyHost string `yaml:"proxy_host"`
	// JIDRules map topics to JIDs besides the default
	// a.b.c@topics.{domain} rule, e.g. sensors/{room}/temp ↔
	// {room}-temp@sensors.{domain}.
	JIDRules []xmpp.JIDRule `yaml:"jid_rules"`
	// ClusterLiveness is how often, in a cluster, a hub asks whether the
	// users of other hubs its users see available are still connected
	// (two misses: unavailable presence; 0: 10s).
	ClusterLiveness time.Duration `yaml:"cluster_liveness"`
}

// HTTPConfig configures the REST API listener.
type HTTPConfig struct {
	Addr string `yaml:"addr"`
	// TLSAddr is the HTTPS listener (the REST API, SSE, WebSocket,
	// /healthz and /metrics over TLS), with tls.cert_file and key_file.
	TLSAddr string `yaml:"tls_addr"`
	MaxBody int64  `yaml:"max_body"`
	// PublicMetrics serves /metrics without credentials on a listener
	// that is not loopback-only (default: a token or basic auth is
	// needed there).
	PublicMetrics bool `yaml:"public_metrics"`
	// StreamWriteTimeout cuts off an SSE or WebSocket client that has not
	// read for this long (default 10s).
	StreamWriteTimeout time.Duration `yaml:"stream_write_timeout"`
	// MaxTokenTTL caps the life of a token minted by POST
	// /api/v1/tokens (default 720h, 30 days).
	MaxTokenTTL time.Duration `yaml:"max_token_ttl"`
	// ReadHeaderTimeout bounds the time a client takes to send its
	// request headers (default 10s), ReadTimeout a whole request with its
	// body (60s), IdleTimeout the wait for the next request on a
	// keep-alive connection (120s); MaxHeaderBytes bounds the headers
	// (64 KiB; larger get 431). SSE and WebSocket streams outlive the read
	// timeout; there is no write timeout to cut them.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`
}

// maxHeaderBytesLimit is the largest http.max_header_bytes accepted.
const maxHeaderBytesLimit = 16 << 20

// TLSFiles names a PEM certificate chain and key.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// validate checks the HTTP server's bounds (0 means the default).
func (h *HTTPConfig) validate() error {
	for name, d := range map[string]time.Duration{
		"http.read_header_timeout": h.ReadHeaderTimeout, "http.read_timeout": h.ReadTimeout, "http.idle_timeout": h.IdleTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%s %v: must not be negative (0: the default)", name, d)
		}
	}
	if h.ReadHeaderTimeout > 0 && h.ReadTimeout > 0 && h.ReadHeaderTimeout > h.ReadTimeout {
		return fmt.Errorf("http.read_header_timeout %v: must not exceed http.read_timeout %v", h.ReadHeaderTimeout, h.ReadTimeout)
	}
	if h.MaxHeaderBytes < 0 || h.MaxHeaderBytes > maxHeaderBytesLimit {
		return fmt.Errorf("http.max_header_bytes %d: want 0..%d (0: the default, %d)", h.MaxHeaderBytes, maxHeaderBytesLimit, rest.DefaultMaxHeaderBytes)
	}
	return nil
}

// Defaults returns the configuration `hub serve` uses with no flags:
// every listener on loopback, the store in ./hub-data.
func Defaults() Config {
	return Config{
		DataDir:        "./hub-data",
		PprofAddr:      Off,
		WriteThrough:   true,
		SyncInterval:   "1s",
		MaxQueued:      100000,
		MaxQueuedBytes: 64 << 20,
		QueuePolicy:    broker.DropOldest,
		MQTT:           MQTTConfig{Addr: "127.0.0.1:1883", TLSAddr: Off, WSAddr: Off, MaxQueued: 1000, MaxQueuedBytes: 16 << 20, MaxInflight: mqtt.DefaultMaxInflight, ParkAfter: mqtt.DefaultParkAfter},
		CoAP:           CoAPConfig{Addr: "127.0.0.1:5683", DTLSAddr: Off},
		XMPP:           XMPPConfig{Addr: "127.0.0.1:5222", Domain: "localhost", ComponentAddr: Off, ProxyAddr: xmpp.DefaultProxyAddr},
		HTTP: HTTPConfig{Addr: "127.0.0.1:8080", TLSAddr: Off, ReadHeaderTimeout: rest.DefaultReadHeaderTimeout, ReadTimeout: rest.DefaultReadTimeout,
			IdleTimeout: rest.DefaultIdleTimeout, MaxHeaderBytes: rest.DefaultMaxHeaderBytes},
		Log:     LogConfig{Level: "info", Format: "text"},
		Files:   defaultFiles(),
		History: history.Defaults(),

		ShutdownTimeout: 10 * time.Second,
	}
}

// validateACL checks every configured rule, naming the first bad one and
// what is wrong with it.
func validateACL(acl map[string][]adapters.ACLRule) error {
	names := make([]string, 0, len(acl))
	for name := range acl {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		check := adapters.ValidateRule
		if name == adapters.AnonymousName {
			check = adapters.ValidateAnonymousRule
		}
		for i, r := range acl[name] {
			if err := check(r); err != nil {
				return fmt.Errorf("acl.%s rule %d {action: %q, filter: %q, allow: %v}: %w", name, i+1, r.Action, r.Filter, r.Allow, err)
			}
		}
	}
	return nil
}

// Enabled reports whether a listener address is set and not "off".
func Enabled(addr string) bool { return addr != "" && addr != Off }

// Validate checks the configuration. Its errors name the field at fault
// ("mqtt.addr ...") and leave saying where the configuration came from to
// the caller.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("data_dir: must be set")
	}
	for name, addr := range map[string]string{
		"mqtt.addr": c.MQTT.Addr, "mqtt.tls_addr": c.MQTT.TLSAddr, "mqtt.ws_addr": c.MQTT.WSAddr,
		"coap.addr": c.CoAP.Addr, "coap.dtls_addr": c.CoAP.DTLSAddr,
		"xmpp.addr": c.XMPP.Addr, "xmpp.component_addr": c.XMPP.ComponentAddr, "xmpp.proxy_addr": c.XMPP.ProxyAddr,
		"http.addr": c.HTTP.Addr, "http.tls_addr": c.HTTP.TLSAddr,
	} {
		if !Enabled(addr) {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: want host:port or %q: %w", name, addr, Off, err)
		}
	}
	if Enabled(c.XMPP.Addr) && c.XMPP.Domain == "" {
		return fmt.Errorf("xmpp.domain: must be set when xmpp.addr is enabled")
	}
	if Enabled(c.XMPP.ComponentAddr) && (c.XMPP.ComponentDomain == "" || c.XMPP.ComponentSecret == "") {
		return fmt.Errorf("xmpp.component_domain and xmpp.component_secret: must be set with xmpp.component_addr")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("tls: cert_file and key_file go together")
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	if err := validateACL(c.ACL); err != nil {
		return err
	}
	switch c.XMPP.ComponentPeers {
	case "", adapters.PeerDeny, adapters.PeerRead, adapters.PeerUser:
	default:
		return fmt.Errorf("xmpp.component_peers %q: want %s, %s or %s", c.XMPP.ComponentPeers, adapters.PeerDeny, adapters.PeerRead, adapters.PeerUser)
	}
	if n := c.Security.SCRAMIterations; n != 0 && n < store.MinSCRAMIterations {
		return fmt.Errorf("security.scram_iterations %d: must be at least %d", n, store.MinSCRAMIterations)
	}
	if err := bridge.ValidateAll(c.Bridges); err != nil {
		return fmt.Errorf("bridges: %w", err)
	}
	if _, err := store.ParseSyncInterval(c.SyncInterval); err != nil {
		return fmt.Errorf("sync_interval %w", err)
	}
	switch c.QueuePolicy {
	case "", broker.DropOldest, broker.DropNewest:
	default:
		return fmt.Errorf("queue_policy %q: want %s or %s", c.QueuePolicy, broker.DropOldest, broker.DropNewest)
	}
	for name, v := range map[string]int64{
		"max_queued": int64(c.MaxQueued), "max_queued_bytes": c.MaxQueuedBytes, "mqtt.max_queued_bytes": c.MQTT.MaxQueuedBytes,
	} {
		if v < 0 {
			return fmt.Errorf("%s %d: must not be negative (0: no bound)", name, v)
		}
	}
	if c.MQTT.MaxQueued < 0 || c.MQTT.MaxQueued > 65535 {
		return fmt.Errorf("mqtt.max_queued %d: want 1..65535 (0: the default, %d)", c.MQTT.MaxQueued, mqtt.DefaultMaxQueued)
	}
	if c.MQTT.ParkAfter > 0 && c.MQTT.ParkAfter < minParkAfter {
		return fmt.Errorf("config: mqtt.park_after %v: want at least %v (a sweep runs every half of it), or -1s for never", c.MQTT.ParkAfter, minParkAfter)
	}
	if c.MQTT.MaxInflight < 0 || c.MQTT.MaxInflight > 65535 {
		return fmt.Errorf("config: mqtt.max_inflight %d: want 1..65535 (0: the default, %d)", c.MQTT.MaxInflight, mqtt.DefaultMaxInflight)
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if err := c.HTTP.validate(); err != nil {
		return err
	}
	if err := c.Limits.Storage.validate(); err != nil {
		return err
	}
	if err := c.History.Validate(); err != nil {
		return err
	}
	if err := c.Files.validate(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	return nil
}
