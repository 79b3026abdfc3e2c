package xmpp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/store"
)

// Defaults of Config.
const (
	DefaultAddr          = "127.0.0.1:5222"
	DefaultDomain        = "localhost"
	DefaultResumeTimeout = 60 * time.Second
	DefaultOfflineLimit  = 1000
	// DefaultOfflineMaxBytes bounds the bytes of the chat messages kept
	// for one offline user.
	DefaultOfflineMaxBytes = 16 << 20
	DefaultRateStanzas     = 200     // per second, burst twice that
	DefaultRateBytes       = 1 << 20 // per second, burst twice that
)

// Store is what the adapter needs from the hub's store: SCRAM credentials,
// user roles, and key/value buckets for rosters, topic subscriptions and
// offline messages. *store.Store implements it.
type Store interface {
	SCRAM(ctx context.Context, name, mechanism string) (store.SCRAMCredential, error)
	// SCRAMIterationCount is offered for unknown users, as for known ones.
	SCRAMIterationCount() int
	GetUser(ctx context.Context, name string) (store.User, error)
	KVPut(ctx context.Context, bucket, key string, value []byte) error
	KVGet(ctx context.Context, bucket, key string) ([]byte, error)
	KVDelete(ctx context.Context, bucket, key string) error
	KVList(ctx context.Context, bucket string) ([]store.KV, error)
}

var _ Store = (*store.Store)(nil)

// Config configures the XMPP adapter.
type Config struct {
	// Addr is the c2s listen address ("" or "off": no c2s listener, only
	// the component connection when ComponentAddr is set).
	Addr string
	// Domain is the XMPP domain users log in to (DefaultDomain when empty);
	// topic JIDs live at topics.{Domain} and PubSub at pubsub.{Domain}.
	Domain string
	// Bus carries the envelopes.
	Bus broker.Bus
	// Auth authenticates PLAIN logins and authorizes topic access.
	Auth *adapters.Auth
	// Store holds SCRAM credentials, rosters, subscriptions, offline messages.
	Store Store
	// AllowAnonymous lets clients log in with SASL ANONYMOUS on a
	// non-loopback listener (see adapters.AnonymousAllowed).
	AllowAnonymous bool
	// DataDir is where a self-signed certificate is generated
	// (xmpp-cert.pem, xmpp-key.pem) when TLSConfig is nil.
	DataDir string
	// TLSConfig is the STARTTLS configuration with a configured certificate.
	TLSConfig *tls.Config
	// MaxStanza bounds a stanza in bytes (DefaultMaxStanza when 0).
	MaxStanza int64
	// MaxDepth bounds element nesting in a stanza (DefaultMaxDepth when 0).
	MaxDepth int
	// RateStanzas and RateBytes are per-connection limits per second
	// (defaults when 0, no limit when negative); a burst of twice the rate
	// is allowed.
	RateStanzas, RateBytes float64
	// ResumeTimeout is how long a XEP-0198 session waits to be resumed.
	ResumeTimeout time.Duration
	// OfflineLimit bounds the chat messages kept for an offline user, and
	// OfflineMaxBytes their bytes (0: DefaultOfflineMaxBytes, negative:
	// no byte bound); past either a message is refused with
	// resource-constraint.
	OfflineLimit    int
	OfflineMaxBytes int64
	// ComponentAddr, ComponentDomain and ComponentSecret connect the hub as
	// an XEP-0114 component to an existing server; the topic JIDs then live
	// at ComponentDomain.
	ComponentAddr, ComponentDomain, ComponentSecret string
	// DeviceCommand runs a device command over whatever protocol the device
	// speaks (the devices registry); with it chat users run XEP-0050
	// commands on {device}@devices.{Domain}. nil: no such JIDs.
	DeviceCommand func(ctx context.Context, cmd adapters.Command) (json.RawMessage, error)
	// DeviceCommands returns the commands a device declares (the devices
	// registry): its XEP-0050 command list and forms (adhoc.go). nil: no
	// declarations, every command runs at once.
	DeviceCommands func(ctx context.Context, device string) ([]devices.Command, error)
	// JIDRules are template rules mapping topics to JIDs besides the
	// default rule, first match first (see JIDRule); {domain} is Domain
	// for c2s users and ComponentDomain for the users of the server the
	// hub is a component of (which must route the rule's subdomain of it
	// to the component).
	JIDRules []JIDRule
	// ProxyAddr is the listener of the XEP-0065 SOCKS5 bytestreams proxy
	// served as proxy.{Domain} ("" or "off": no proxy; see socks5.go).
	ProxyAddr string
	// ProxyHost is the host the proxy is announced at in streamhost
	// answers (the listener's host when empty, Domain when that is
	// unspecified).
	ProxyHost string
	// Files keeps the files chat users send: XEP-0363 upload slots at
	// upload.{Domain}, XEP-0096 offers to topic, device and offline user
	// JIDs over IBB or SOCKS5 (nil: none of that; see files.go).
	Files FileStore
	// Archive, when set, answers XEP-0313 queries addressed to topic JIDs
	// with the topics' archived readings (see mam.go).
	Archive Archive
	// Cluster links the c2s server to the other hubs of a cluster (zero:
	// this hub alone; see cluster.go).
	Cluster Cluster
	// Logger receives the adapter's logs (slog.Default() when nil).
	Logger *slog.Logger
	// Registerer receives the adapter's metrics (nil: no metrics).
	Registerer prometheus.Registerer
}

// Adapter is the XMPP adapter. It implements adapters.Adapter,
// adapters.HealthChecker, adapters.Addresser, adapters.PresenceSource and
// adapters.Commander.
type Adapter struct {
	cfg       Config
	log       *slog.Logger
	anonymous adapters.AnonymousAccess
	tls       *tls.Config
	metrics   *metrics
	fakeKey   []byte // derives made-up SCRAM salts for unknown users

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	timers sync.WaitGroup // resumption timers, presence bursts
	smUse  smUsage        // unacknowledged XEP-0198 bytes per user (smbound.go)
	// offlineMu orders "user becomes available" against "store a stanza
	// because the user is not", so nothing is stored after the user's
	// offline stanzas were fetched.
	offlineMu sync.Mutex

	mu        sync.Mutex
	ln        net.Listener
	retry     *adapters.RetryListener // ln, when the c2s listener is on
	conns     map[net.Conn]struct{}
	sessions  map[string]map[string]*session // bare JID → resource → session
	resume    map[string]*session            // XEP-0198 id → session
	sink      adapters.PresenceSink
	compState component
	started   bool

	topics *topicService
	cmds   *commands
	proxy  *proxy // nil when Config.ProxyAddr is off
	xfer   *transfers
	cl     *link // nil without a cluster
	// carbons are the sessions with XEP-0280 carbons on (carbons.go).
	carbons carbonSet

	rules     *ruleSet // JIDRules at Domain
	compRules *ruleSet // JIDRules at ComponentDomain
}

var (
	_ adapters.Adapter          = (*Adapter)(nil)
	_ adapters.HealthChecker    = (*Adapter)(nil)
	_ adapters.ListenerReporter = (*Adapter)(nil)
	_ adapters.Addresser        = (*Adapter)(nil)
	_ adapters.PresenceSource   = (*Adapter)(nil)
	_ adapters.Commander        = (*Adapter)(nil)
)

// New validates cfg and returns an adapter; Start opens its listener.
func New(cfg Config) (*Adapter, error) {
	if cfg.Addr == "off" {
		cfg.Addr = ""
	}
	if cfg.ComponentAddr == "off" {
		cfg.ComponentAddr = ""
	}
	if cfg.ProxyAddr == "off" {
		cfg.ProxyAddr = ""
	}
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	switch {
	case cfg.Bus == nil:
		return nil, errors.New("xmpp: Bus is nil")
	case cfg.Auth == nil:
		return nil, errors.New("xmpp: Auth is nil")
	case cfg.Store == nil:
		return nil, errors.New("xmpp: Store is nil")
	case strings.ContainsAny(cfg.Domain, "@/ "):
		return nil, fmt.Errorf("xmpp: Domain %q: not a domain name", cfg.Domain)
	case cfg.Addr == "" && cfg.ComponentAddr == "":
		return nil, errors.New("xmpp: Addr and ComponentAddr are both off")
	case cfg.MaxStanza < 0:
		return nil, fmt.Errorf("xmpp: MaxStanza %d: must not be negative", cfg.MaxStanza)
	case cfg.MaxStanza != 0 && cfg.MaxStanza < 4096:
		return nil, fmt.Errorf("xmpp: MaxStanza %d: must be at least 4096 (RFC 6120 13.12)", cfg.MaxStanza)
	case cfg.MaxDepth < 0:
		return nil, fmt.Errorf("xmpp: MaxDepth %d: must not be negative", cfg.MaxDepth)
	case cfg.ResumeTimeout < 0:
		return nil, fmt.Errorf("xmpp: ResumeTimeout %v: must not be negative", cfg.ResumeTimeout)
	case cfg.OfflineLimit < 0:
		return nil, fmt.Errorf("xmpp: OfflineLimit %d: must not be negative", cfg.OfflineLimit)
	case cfg.Addr != "" && cfg.TLSConfig == nil && cfg.DataDir == "":
		return nil, errors.New("xmpp: DataDir is empty and no TLSConfig is given: no place for the certificate")
	}
	if cfg.ComponentAddr != "" {
		if cfg.ComponentDomain == "" || strings.ContainsAny(cfg.ComponentDomain, "@/ ") {
			return nil, fmt.Errorf("xmpp: ComponentDomain %q: a domain is needed with ComponentAddr", cfg.ComponentDomain)
		}
		if cfg.ComponentSecret == "" {
			return nil, errors.New("xmpp: ComponentSecret is empty")
		}
		if _, _, err := net.SplitHostPort(cfg.ComponentAddr); err != nil {
			return nil, fmt.Errorf("xmpp: ComponentAddr %q: %w", cfg.ComponentAddr, err)
		}
	}
	if cfg.Addr != "" {
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			return nil, fmt.Errorf("xmpp: Addr %q: %w", cfg.Addr, err)
		}
	}
	if cfg.ProxyAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.ProxyAddr); err != nil {
			return nil, fmt.Errorf("xmpp: ProxyAddr %q: %w", cfg.ProxyAddr, err)
		}
	}
	rules, err := compileRules(cfg.JIDRules, cfg.Domain, "topics."+cfg.Domain, "pubsub."+cfg.Domain, "devices."+cfg.Domain,
		"proxy."+cfg.Domain, "upload."+cfg.Domain)
	if err != nil {
		return nil, err
	}
	var compRules *ruleSet
	if cfg.ComponentAddr != "" {
		if compRules, err = compileRules(cfg.JIDRules, cfg.ComponentDomain); err != nil {
			return nil, err
		}
	}
	if cfg.MaxStanza == 0 {
		cfg.MaxStanza = DefaultMaxStanza
	}
	if cfg.MaxDepth == 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.RateStanzas == 0 {
		cfg.RateStanzas = DefaultRateStanzas
	}
	if cfg.RateBytes == 0 {
		cfg.RateBytes = DefaultRateBytes
	}
	if cfg.ResumeTimeout == 0 {
		cfg.ResumeTimeout = DefaultResumeTimeout
	}
	if cfg.OfflineLimit == 0 {
		cfg.OfflineLimit = DefaultOfflineLimit
	}
	if cfg.OfflineMaxBytes == 0 {
		cfg.OfflineMaxBytes = DefaultOfflineMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Adapter{
		cfg:       cfg,
		log:       cfg.Logger.With("adapter", "xmpp"),
		anonymous: adapters.AnonymousAllowed(cfg.Addr, cfg.AllowAnonymous),
		conns:     map[net.Conn]struct{}{},
		sessions:  map[string]map[string]*session{},
		resume:    map[string]*session{},
		rules:     rules,
		compRules: compRules,
	}
	a.fakeKey = make([]byte, 32)
	_, _ = rand.Read(a.fakeKey)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	a.metrics = m
	a.topics = &topicService{a: a}
	a.cmds = newCommands(a)
	a.xfer = newTransfers(a)
	a.cl = newLink(a, cfg.Cluster)
	return a, nil
}

// proxyListener is the proxy's listener (nil without a proxy).
func proxyListener(px *proxy) *adapters.RetryListener {
	if px == nil {
		return nil
	}
	return px.ln
}

// stopProxy stops the SOCKS5 proxy, if it runs.
func (a *Adapter) stopProxy() {
	if a.proxy != nil {
		a.proxy.stop()
	}
}

// rulesFor returns the template rules for p's JIDs.
func (a *Adapter) rulesFor(p peer) *ruleSet {
	if _, ok := p.(clientPeer); ok {
		return a.rules
	}
	return a.compRules
}

// Name returns "xmpp".
func (a *Adapter) Name() string { return broker.ProtoXMPP }

// Start loads or generates the TLS certificate, binds the c2s listener and
// starts the component connection; it returns once the listener accepts.
func (a *Adapter) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return errors.New("xmpp: already started")
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	if a.cfg.ProxyAddr != "" {
		px, err := newProxy(ctx, a.cfg.ProxyAddr, a.cfg.ProxyHost, a.cfg.Domain, a.maxFileSize(), a.log.With("listener", "xmpp-proxy"))
		if err != nil {
			a.cancel()
			return err
		}
		a.proxy = px
	}
	if a.cfg.Addr != "" {
		tc, err := a.tlsConfig()
		if err != nil {
			a.stopProxy()
			return err
		}
		a.tls = tc
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", a.cfg.Addr)
		if err != nil {
			a.stopProxy()
			return fmt.Errorf("xmpp: listen %s: %w", a.cfg.Addr, err)
		}
		// Temporary accept errors (out of descriptors) are retried, never
		// the end of the accept loop.
		a.retry = adapters.NewRetryListener(ln, a.log.With("listener", "xmpp"), func(error) { a.metrics.acceptErrors.Inc() })
		a.ln = a.retry
		a.wg.Add(1)
		go a.accept(a.ln)
	}
	if a.cfg.ComponentAddr != "" {
		a.startComponent()
	}
	a.started = true
	a.log.Info("xmpp: started", "addr", a.Addrs()["xmpp"], "domain", a.cfg.Domain, "component", a.cfg.ComponentAddr)
	return nil
}

// Stop closes the listener and every connection and waits for the
// adapter's goroutines to end.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	if !a.started {
		a.mu.Unlock()
		return nil
	}
	a.started = false
	a.cancel()
	if a.ln != nil {
		_ = a.ln.Close()
	}
	for c := range a.conns {
		_ = c.Close()
	}
	a.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.stopProxy()
		a.xfer.shutdown()
		a.wg.Wait()
		a.shutdownSessions()
		a.cl.close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("xmpp: stop: %w", ctx.Err())
	}
}

// Healthy returns nil while the listener accepts (one out of descriptors
// is "failing" until it accepts again).
func (a *Adapter) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.started {
		return errors.New("xmpp: not started")
	}
	if a.ln == nil && !a.componentConnected() {
		return errors.New("xmpp: component not connected")
	}
	if a.retry != nil {
		if err := a.retry.Healthy(); err != nil {
			return fmt.Errorf("xmpp: %w", err)
		}
	}
	if a.proxy != nil {
		if err := a.proxy.ln.Healthy(); err != nil {
			return fmt.Errorf("xmpp: proxy: %w", err)
		}
	}
	return nil
}

// Listeners implements adapters.ListenerReporter: the c2s listener's
// state (none in component-only mode).
func (a *Adapter) Listeners() []adapters.ListenerStatus {
	a.mu.Lock()
	r, started, px := a.retry, a.started, a.proxy
	a.mu.Unlock()
	var out []adapters.ListenerStatus
	for _, l := range []struct {
		name string
		ln   *adapters.RetryListener
	}{{"xmpp", r}, {"xmpp-proxy", proxyListener(px)}} {
		if l.ln == nil {
			continue
		}
		s := adapters.StatusOf(l.ln)
		if !started {
			s.State = adapters.ListenerClosed
		}
		s.Adapter, s.Name = "xmpp", l.name
		out = append(out, s)
	}
	return out
}

// Addrs returns the bound c2s address under "xmpp".
func (a *Adapter) Addrs() map[string]string {
	out := map[string]string{}
	if a.ln != nil {
		out["xmpp"] = a.ln.Addr().String()
	}
	if a.proxy != nil {
		out["xmpp-proxy"] = a.proxy.addr()
	}
	return out
}

// SetPresenceSink makes the adapter report devices' presence (users of
// role device that send available or unavailable presence, or disconnect).
func (a *Adapter) SetPresenceSink(s adapters.PresenceSink) {
	a.mu.Lock()
	a.sink = s
	a.mu.Unlock()
}

func (a *Adapter) accept(ln net.Listener) {
	defer a.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if a.ctx.Err() == nil {
				a.log.Error("xmpp: accept", "err", err)
			}
			return
		}
		a.mu.Lock()
		if !a.started {
			a.mu.Unlock()
			_ = c.Close()
			return
		}
		a.conns[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			a.serveConn(c)
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
		}()
	}
}
