// Package mqtt is the hub's MQTT 3.1.1 and 5 adapter: an embedded mochi-mqtt
// broker whose hooks authenticate clients against adapters.Auth, put every
// client publish on the bus, and keep persistent sessions in the store,
// while one bus subscription injects everything published by other
// protocols (or other hubs) into mochi for its MQTT subscribers.
//
// Routing: MQTT-to-MQTT traffic is routed by mochi itself; the adapter's
// bus subscription skips envelopes of its own protocol and node
// (NoLocalProtocol/NoLocalNode), so nothing is delivered twice.
//
// Acknowledgements: mochi runs the OnPublish hook before it writes PUBACK or
// PUBREC, but delivers to subscribers only after writing it. The hook
// therefore publishes to the bus, then routes the packet to mochi's
// subscribers itself (through an inline stand-in of the client), and only
// then lets mochi acknowledge it: a QoS 1/2 publisher is acknowledged once
// Bus.Publish has returned nil (the envelope is durable) and once the
// copies queued for offline persistent MQTT sessions are in the store.
// When a copy for an offline persistent session cannot be stored (a full
// disk), the copies are taken back and the publish is refused as for
// broker.ErrStorage; an envelope from the bus is then not acknowledged to
// the bus, which delivers it again (see route).
// When the bus refuses, an MQTT 5 client gets PUBACK/PUBREC with reason
// 0x97 (quota exceeded, for broker.ErrStorage), 0x90 (topic name invalid)
// or 0x83 (implementation specific error); an MQTT 3.1.1 client, which has
// no negative acknowledgement, is disconnected (without its will). QoS 0
// publishes the bus refuses are dropped and counted.
//
// Retained values: the bus (persisted by the store through broker.Spool) is
// the only source of truth. mochi's retained tree is a cache filled from
// Bus.Retained at start and kept current by the traffic itself; the
// session store never holds retained messages.
//
// Sessions: clean sessions live in memory only. Persistent ones (clean
// session false, or an MQTT 5 session expiry) are written to a
// SessionStore: the client, its subscriptions, and every QoS 1/2 message
// in flight to it or queued while it is offline (mochi keeps those in the
// client's in-flight table and reports them through OnQosPublish). A
// returning client gets them in the order they were published (see
// queueOrder), before anything newer (routing pauses while mochi resends a
// session: see pauseForResume), and an envelope the bus replays after a
// crash is not queued twice. Copies for offline sessions are stored before
// the acknowledgement; those in flight to connected clients are written
// behind the delivery, in batches, and synced before the publisher's
// PUBACK or the bus's acknowledgement (see inflightWriter). A client's
// queue holds at most
// MaxQueued messages: when full, the oldest is dropped, counted, and
// reported on $hub/clients/{clientid}/dropped (see makeRoom).
//
// Slow consumers: writes to a client never block the publisher or the bus
// (see asyncConn); a client that does not take its bytes within
// WriteTimeout is disconnected, its persistent session kept.
//
// Listeners: plain TCP, TLS and WebSocket, each reporting its bound
// address. mochi publishes its $SYS topics (kept out of the bus) every
// SysInterval.
//
// Authorization: every publish, subscription and delivery is checked with
// adapters.Auth; decisions for users and devices are cached for aclTTL, so
// a changed ACL rule takes effect within two seconds.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Defaults of Config.
const (
	DefaultAddr = "127.0.0.1:1883"
	// DefaultMaxPacketSize bounds an MQTT packet. mochi allocates the
	// whole announced length before reading it, so without a bound one
	// client could make a small gateway allocate 256 MiB; 1 MiB carries any
	// sensor reading or command, and files travel over REST or CoAP.
	DefaultMaxPacketSize = 1 << 20
	// DefaultMaxQueued is the number of QoS 1/2 messages kept in flight or
	// queued per client (Mosquitto's max_queued_messages is 1000 too).
	DefaultMaxQueued = 1000
	// DefaultConnectTimeout is how long a new connection may take to send
	// CONNECT (and finish the TLS handshake).
	DefaultConnectTimeout = 10 * time.Second
	// DefaultSysInterval is how often $SYS topics are published (as in
	// Mosquitto).
	DefaultSysInterval = 10 * time.Second
	// DefaultSubscriberID is the id of the adapter's bus subscription.
	DefaultSubscriberID = "mqtt-adapter"
)

// Off disables a listener address.
const Off = "off"

// Config configures the MQTT adapter.
type Config struct {
	// Addr is the plain TCP listener ("" = DefaultAddr, "off" = none).
	Addr string
	// TLSAddr is the MQTT-over-TLS listener ("" or "off" = none); it
	// needs TLSConfig.
	TLSAddr   string
	TLSConfig *tls.Config
	// WSAddr is the MQTT-over-WebSocket listener ("" or "off" = none):
	// plain HTTP, any path, subprotocol "mqtt", for browser clients.
	WSAddr string
	// Bus carries envelopes to and from the other adapters (required).
	Bus broker.Bus
	// Auth authenticates and authorizes clients (nil: anonymous access
	// only, under the listener rule).
	Auth *adapters.Auth
	// AllowAnonymous lets clients without credentials in on non-loopback
	// listeners as well (adapters.AnonymousAllowed).
	AllowAnonymous bool
	// Sessions keeps persistent sessions across restarts (nil: in memory).
	Sessions SessionStore
	// Node is this hub's id in Origin.Node (default broker.NodeID()).
	Node string
	// SubscriberID is the id of the adapter's durable bus subscription
	// (default DefaultSubscriberID). It must stay the same across restarts
	// (the durable queue is found again under it) and, on a shared
	// clustered bus, differ from hub to hub.
	SubscriberID string
	// Logger receives the adapter's and mochi's logs (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the adapter's metrics (nil: no metrics).
	Registerer prometheus.Registerer
	// MaxPacketSize bounds an incoming packet in bytes (0:
	// DefaultMaxPacketSize).
	MaxPacketSize uint32
	// MaxClients bounds connected clients (0: no limit); a client over
	// the limit gets CONNACK "server unavailable" / "server busy".
	MaxClients int
	// MaxKeepalive, when non-zero, caps the keepalive in seconds: an MQTT
	// 5 client asking for 0 or more is told this one (server keep alive);
	// an MQTT 3.1.1 client, which cannot be told, is refused (CONNACK
	// "identifier rejected"), as Mosquitto's max_keepalive does.
	MaxKeepalive uint16
	// MaxQueued bounds QoS 1/2 messages in flight or queued per client (0:
	// DefaultMaxQueued).
	MaxQueued uint16
	// MaxQueuedBytes bounds the topic and payload bytes of the QoS 1/2
	// messages queued for a persistent session (0: no bound, MaxQueued
	// only).
	MaxQueuedBytes int64
	// QueuePolicy says what a full client queue drops: broker.DropOldest
	// (the default: the oldest go to make room) or broker.DropNewest (new
	// messages for the client are not delivered until it catches up, as
	// with Mosquitto).
	QueuePolicy string
	// ConnectTimeout bounds the time from accept to CONNECT (0:
	// DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// SysInterval is the $SYS publish interval (0: DefaultSysInterval).
	SysInterval time.Duration
	// WriteTimeout bounds one write to a client's connection (0:
	// DefaultWriteTimeout); a client that takes longer
	// is disconnected, its persistent session kept. Writes never block
	// publishers (see asyncConn).
	WriteTimeout time.Duration
}

// Adapter is the MQTT adapter. It implements adapters.Adapter,
// adapters.HealthChecker, adapters.Addresser and adapters.PresenceSource.
type Adapter struct {
	cfg      Config
	auth     *adapters.Auth
	log      *slog.Logger
	sessions *sessions
	order    *queueOrder
	metrics  *metrics

	// lifetime context of calls made from hooks (auth, bus publish).
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	state   int
	srv     *mochi.Server
	inline  *mochi.Client
	sub     broker.Subscription
	lns     []boundListener
	lnAddr  map[string]string // listener id -> configured address
	gate    chan struct{}
	expires map[string]int64 // restored in-flight expiry, until Start ends

	running atomic.Bool                     // serving; read by Healthy without mu
	served  atomic.Pointer[[]boundListener] // the listeners, once started

	sink     atomic.Pointer[adapters.PresenceSink]
	roles    sync.Map // username -> role of authenticated principals
	presMu   sync.Mutex
	presence map[string]int // device id -> connections
	online   sync.Map       // *mochi.Client -> device id, for connected devices

	retMu    sync.Mutex
	retained map[string]string // topic -> envelope id of the retained value

	// treeMu serializes writes to mochi's retained tree with its
	// wildcard scans (see hook.OnSubscribe).
	treeMu sync.RWMutex
	// proxies are the inline stand-ins that route connected clients'
	// publishes (see hook.OnPublish), by client.
	proxies sync.Map

	aclMu    sync.Mutex
	aclCache map[aclKey]aclEntry

	// injecting tracks routings in progress and the copies they could
	// not store (see route).
	injecting *injections
	// busMu serializes injections from the bus; busEnv is the id of the
	// envelope being injected, which OnPublish puts in the packet Origin.
	busMu  sync.Mutex
	busEnv atomic.Pointer[string]

	// resume stops routings into mochi (read-locked by each) while a
	// returning client gets its stored session (see pauseForResume);
	// resuming holds the *sync.Once releasing it, by client.
	resume   sync.RWMutex
	resuming sync.Map
	wg       sync.WaitGroup // resume watchers

	// subscribing holds the clients whose SUBSCRIBE is being processed;
	// drops counts each client's dropped messages (see makeRoom).
	subscribing sync.Map // *mochi.Client -> struct{}
	drops       sync.Map // client id -> *drops

	// ownMu orders the session-record writes of a connection that ends
	// with those of a new connection taking its client id.
	ownMu sync.Mutex

	// ackQueues hold the PUBACKs waiting for the store, by client (see
	// deferAck); ackWG counts their goroutines.
	ackQueues sync.Map // *mochi.Client -> *ackQueue
	ackWG     sync.WaitGroup
	hook      *hook // the adapter's mochi hook (the ack queue stores PUBREC states through it)
}

const (
	stateNew = iota
	stateStarted
	stateStopped
)

var (
	_ adapters.Adapter        = (*Adapter)(nil)
	_ adapters.HealthChecker  = (*Adapter)(nil)
	_ adapters.Addresser      = (*Adapter)(nil)
	_ adapters.PresenceSource = (*Adapter)(nil)
)

// New validates cfg, fills its defaults and returns an adapter ready to
// Start.
func New(cfg Config) (*Adapter, error) {
	if cfg.Bus == nil {
		return nil, errors.New("mqtt: Bus is required")
	}
	switch cfg.Addr {
	case "":
		cfg.Addr = DefaultAddr
	case Off:
		cfg.Addr = ""
	}
	if cfg.TLSAddr == Off {
		cfg.TLSAddr = ""
	}
	if cfg.WSAddr == Off {
		cfg.WSAddr = ""
	}
	if cfg.TLSAddr != "" && cfg.TLSConfig == nil {
		return nil, fmt.Errorf("mqtt: TLSAddr %q: TLSConfig is required", cfg.TLSAddr)
	}
	if cfg.Addr == "" && cfg.TLSAddr == "" && cfg.WSAddr == "" {
		return nil, errors.New("mqtt: Addr, TLSAddr and WSAddr are all off: no listener")
	}
	if cfg.Addr != "" && cfg.Addr == cfg.TLSAddr && !strings.HasSuffix(cfg.Addr, ":0") {
		return nil, fmt.Errorf("mqtt: Addr and TLSAddr are both %q", cfg.Addr)
	}
	if cfg.MaxClients < 0 {
		return nil, fmt.Errorf("mqtt: MaxClients %d: must be >= 0", cfg.MaxClients)
	}
	if cfg.ConnectTimeout < 0 {
		return nil, fmt.Errorf("mqtt: ConnectTimeout %v: must be >= 0", cfg.ConnectTimeout)
	}
	if cfg.WriteTimeout < 0 {
		return nil, fmt.Errorf("mqtt: WriteTimeout %v: must be >= 0", cfg.WriteTimeout)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.SysInterval < 0 || (cfg.SysInterval > 0 && cfg.SysInterval < time.Second) {
		return nil, fmt.Errorf("mqtt: SysInterval %v: must be at least 1s", cfg.SysInterval)
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.MaxPacketSize < 64 {
		return nil, fmt.Errorf("mqtt: MaxPacketSize %d: must be at least 64 bytes", cfg.MaxPacketSize)
	}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	switch cfg.QueuePolicy {
	case "":
		cfg.QueuePolicy = broker.DropOldest
	case broker.DropOldest, broker.DropNewest:
	default:
		return nil, fmt.Errorf("mqtt: queue policy %q: want %s or %s", cfg.QueuePolicy, broker.DropOldest, broker.DropNewest)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.SysInterval == 0 {
		cfg.SysInterval = DefaultSysInterval
	}
	if cfg.Node == "" {
		cfg.Node = broker.NodeID()
	}
	if cfg.SubscriberID == "" {
		cfg.SubscriberID = DefaultSubscriberID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Adapter{
		cfg:      cfg,
		auth:     cfg.Auth,
		log:      cfg.Logger,
		presence: make(map[string]int),
		retained: make(map[string]string),
		lnAddr:   make(map[string]string),
		order:    newQueueOrder(),

		injecting: newInjections(),
	}
	if a.auth == nil {
		a.auth = adapters.NewAuth(nil, nil)
	}
	if cfg.Sessions != nil {
		a.sessions = newSessions(cfg.Sessions, a.log)
	}
	a.metrics = newMetrics(a)
	return a, nil
}

// Name returns "mqtt".
func (a *Adapter) Name() string { return broker.ProtoMQTT }

// SetPresenceSink implements adapters.PresenceSource: devices (principals
// of role device) are reported online when they connect and offline when
// their last connection ends, however it ends (DISCONNECT, will, keepalive
// timeout, error).
func (a *Adapter) SetPresenceSink(s adapters.PresenceSink) {
	if s == nil {
		a.sink.Store(nil)
		return
	}
	a.sink.Store(&s)
}

// Start binds the listeners, loads the retained values from the bus and
// the persistent sessions from the store, subscribes to the bus and starts
// serving. It can be called once.
func (a *Adapter) Start(ctx context.Context) (err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state != stateNew {
		return errors.New("mqtt: Start: adapter already started")
	}
	a.state = stateStopped // unless everything below succeeds
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.cancel()
		}
	}()

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = a.cfg.MaxPacketSize
	caps.MaximumClients = math.MaxInt64
	if a.cfg.MaxClients > 0 {
		caps.MaximumClients = int64(a.cfg.MaxClients)
	}
	// No forced expiry: retained values and queued messages live until
	// their own MQTT 5 expiry, as in Mosquitto (mochi's default drops
	// them after a day).
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumInflight = a.cfg.MaxQueued
	caps.MaximumClientWritesPending = 1024
	srv := mochi.New(&mochi.Options{
		Capabilities:           caps,
		InlineClient:           true,
		Logger:                 a.log.With("component", "mochi"),
		SysTopicResendInterval: int64(a.cfg.SysInterval / time.Second),
	})
	inline, ok := srv.Clients.Get(mochi.InlineClientId)
	if !ok {
		return errors.New("mqtt: Start: mochi has no inline client")
	}
	// Injected packets carry MQTT 5 properties, and mochi honours
	// message expiry only for version 5 packets.
	inline.Properties.ProtocolVersion = 5
	a.hook = &hook{a: a}
	if err := srv.AddHook(a.hook, nil); err != nil {
		return fmt.Errorf("mqtt: add hook: %w", err)
	}
	a.srv, a.inline = srv, inline

	for _, l := range []struct{ id, addr string }{{"mqtt", a.cfg.Addr}, {"mqtts", a.cfg.TLSAddr}, {"ws", a.cfg.WSAddr}} {
		if l.addr == "" {
			continue
		}
		var ln boundListener
		switch l.id {
		case "mqtt", "mqtts":
			var tc *tls.Config
			if l.id == "mqtts" {
				tc = a.cfg.TLSConfig
			}
			tl := newListener(l.id, l.addr, tc, a.cfg.ConnectTimeout, a.connEnded)
			tl.slow, tl.writeTimeout = a.slowConsumer, a.cfg.WriteTimeout
			ln = tl
		case "ws":
			wl := newWSListener(l.id, l.addr, nil, a.cfg.ConnectTimeout, a.connEnded)
			wl.slow, wl.writeTimeout = a.slowConsumer, a.cfg.WriteTimeout
			ln = wl
		}
		if err := srv.AddListener(ln); err != nil {
			a.closeListeners()
			return err
		}
		a.lns = append(a.lns, ln)
		a.lnAddr[l.id] = l.addr
	}

	a.gate = make(chan struct{})
	a.sub, err = a.cfg.Bus.Subscribe(ctx, broker.SubscribeOptions{
		ID:              a.cfg.SubscriberID,
		Filters:         []string{"#", "$hub/#"},
		QoS:             2,
		Durable:         true,
		NoLocalProtocol: broker.ProtoMQTT,
		NoLocalNode:     a.cfg.Node,
		Sync:            a.syncBehind,
	}, a.fromBus)
	if err != nil {
		a.closeListeners()
		return fmt.Errorf("mqtt: subscribe to the bus: %w", err)
	}
	fail := func(err error) error {
		close(a.gate)
		_ = a.sub.Detach()
		_ = srv.Close()
		return err
	}
	if err := a.loadRetained(ctx); err != nil {
		a.closeListeners()
		return fail(err)
	}
	if err := srv.Serve(); err != nil {
		return fail(fmt.Errorf("mqtt: serve: %w", err))
	}
	a.restoreExpiry()
	if err := a.metrics.register(a.cfg.Registerer); err != nil {
		return fail(err)
	}
	close(a.gate)
	if a.sessions != nil {
		go a.sessions.behind.run()
	}
	a.state = stateStarted
	lns := a.lns
	a.served.Store(&lns)
	a.running.Store(true)
	a.log.Info("mqtt: listening", "addrs", a.Addrs())
	return nil
}

func (a *Adapter) closeListeners() {
	for _, l := range a.lns {
		l.closeBound()
	}
}

// loadRetained fills mochi's retained tree from the bus.
func (a *Adapter) loadRetained(ctx context.Context) error {
	now := time.Now()
	for _, f := range []string{"#", "$hub/#"} {
		es, err := a.cfg.Bus.Retained(ctx, f)
		if err != nil {
			return fmt.Errorf("mqtt: load retained %q: %w", f, err)
		}
		for _, e := range es {
			pk, _, ok := packetFromEnvelope(e, now)
			if !ok || len(pk.Payload) == 0 {
				continue
			}
			pk.FixedHeader.Retain = true
			pk.ProtocolVersion = 5
			pk.Origin = mochi.InlineClientId
			if i := pk.Properties.MessageExpiryInterval; i > 0 {
				pk.Expiry = now.Unix() + int64(i)
			}
			a.srv.Topics.RetainMessage(pk)
			a.retained[e.Topic] = e.ID
		}
	}
	atomic.StoreInt64(&a.srv.Info.Retained, int64(a.srv.Topics.Retained.Len()))
	return nil
}

// restoreExpiry gives in-flight messages loaded from the store their
// absolute expiry back (mochi's storage record has no field for it).
func (a *Adapter) restoreExpiry() {
	for key, exp := range a.expires {
		id, pid, ok := splitInflightKey(key)
		if !ok {
			continue
		}
		cl, ok := a.srv.Clients.Get(id)
		if !ok {
			continue
		}
		if pk, ok := cl.State.Inflight.Get(pid); ok {
			pk.Expiry = exp
			// mochi expires only version 5 packets; the copy for a 3.1.1
			// subscriber is one too (as when it was queued: injected
			// packets are version 5), and WritePacket encodes it in the
			// subscriber's version anyway.
			pk.ProtocolVersion = 5
			cl.State.Inflight.Set(pk)
		}
	}
	a.expires = nil
}

// Stop detaches the bus subscription (a durable one keeps collecting),
// disconnects every client (persistent sessions stay in the store), closes
// the listeners and returns once every goroutine has ended, or when ctx is
// done.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state != stateStarted {
		a.state = stateStopped
		return nil
	}
	a.state = stateStopped
	a.running.Store(false)
	var errs []error
	if err := a.sub.Detach(); err != nil {
		errs = append(errs, fmt.Errorf("mqtt: detach from the bus: %w", err))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.srv.Close()
	}()
	select {
	case <-done:
		a.wg.Wait() // the clients are closed: the resume watchers end
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("mqtt: stop: %w", ctx.Err()))
	}
	if a.sessions != nil {
		a.sessions.behind.close() // writes what is left
	}
	a.ackWG.Wait() // their waits end with the last write
	a.cancel()
	a.metrics.unregister(a.cfg.Registerer)
	return errors.Join(errs...)
}

// Healthy reports nil while the adapter serves on all its listeners.
func (a *Adapter) Healthy() error {
	if !a.running.Load() {
		return errors.New("mqtt: not running")
	}
	for _, l := range *a.served.Load() {
		if l.isClosed() {
			return fmt.Errorf("mqtt: listener %s closed", l.ID())
		}
	}
	return nil
}

// Addrs returns the bound addresses by listener name ("mqtt", "mqtts",
// "ws"); empty before Start.
func (a *Adapter) Addrs() map[string]string {
	m := make(map[string]string)
	if p := a.served.Load(); p != nil {
		for _, l := range *p {
			m[l.ID()] = l.Address()
		}
	}
	return m
}

// connEnded is told how each connection ended; malformed input is counted.
func (a *Adapter) connEnded(err error) {
	if err == nil {
		return
	}
	if isMalformed(err) {
		a.metrics.malformed.Add(1)
		a.log.Info("mqtt: malformed packet, connection closed", "err", err)
		return
	}
	a.log.Debug("mqtt: connection ended", "err", err)
}

// slowConsumer counts and logs a connection closed because its client
// stopped reading.
func (a *Adapter) slowConsumer(err error) {
	a.metrics.slowConsumers.Add(1)
	a.log.Warn("mqtt: slow consumer: connection closed (a persistent session keeps its queue)", "err", err)
}
