// Package mqtt is the hub's MQTT 3.1.1 and 5 adapter: an embedded
// mochi-mqtt broker runs the wire (packets, the client's own QoS
// handshakes, keepalive, wills, TLS and WebSocket listeners) and a hook
// translates between it and the bus. The adapter keeps no queue, retained
// tree, ordering or in-flight store of its own: each client's session is a
// bus subscription (durable for a persistent session), which owns the
// queue, the delivery window, redelivery, bounds and drop reports, the
// retained values and the access check of every delivered envelope.
//
// Publishing: a client's PUBLISH goes to the bus, and only once the bus
// has it (durable at QoS >= 1) does mochi send the PUBACK or PUBREC; mochi
// neither routes nor retains it (CodeSuccessIgnore). When the bus refuses,
// an MQTT 5 client gets PUBACK/PUBREC with reason 0x97 (quota exceeded,
// for broker.ErrStorage), 0x90 (topic name invalid) or 0x83
// (implementation specific error); an MQTT 3.1.1 client, which has no
// negative acknowledgement, is disconnected (without its will).
//
// Subscribing: SUBSCRIBE and UNSUBSCRIBE change the filters of the
// client's bus subscription, with MQTT 5's options (no-local,
// retain-as-published, retain handling, subscription identifiers) and
// shared subscriptions ($share/{group}/{filter}) as bus consumer groups;
// the bus replays retained values after the SUBACK.
//
// Delivering: the bus hands the session each delivery, within a window of
// the client's Receive Maximum (capped by MaxInflight); the session writes
// the PUBLISH with a packet id of its own and acks the delivery on the
// client's PUBACK or PUBCOMP. A returning persistent session gets, in
// order, first what was delivered and not acknowledged (DUP set, same
// packet id within a hub's lifetime), then what was queued.
//
// Slow consumers: writes to a client never block the bus (see asyncConn);
// a client that does not take its bytes within WriteTimeout is
// disconnected, its persistent session kept.
//
// Authorization: every publish and subscription is checked with
// adapters.Auth, and so is every delivered envelope (the bus asks before
// each delivery); Auth caches a principal's rules for at most a second and
// forgets them when they change, so a changed ACL rule takes effect within
// two seconds.
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
	// DefaultMaxInflight bounds the QoS 1/2 deliveries out to one client
	// and not acknowledged (its Receive Maximum, for MQTT 5, when lower).
	DefaultMaxInflight = 1000
	// DefaultSubscriberID is the id of the durable bus subscription an
	// earlier version of the adapter fed its own queues from; Start
	// migrates what it holds.
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
	// RequireTLS refuses a CONNECT with credentials on a listener without
	// TLS that is not loopback-only (they came in clear).
	RequireTLS bool
	// Sessions keeps the records of persistent sessions across restarts
	// (nil: every session is clean).
	Sessions SessionStore
	// Node is this hub's id in Origin.Node (default broker.NodeID()).
	Node string
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
	// MaxQueued bounds the messages queued per client (0:
	// DefaultMaxQueued): a persistent session's durable queue, a clean
	// session's deliveries waiting in memory.
	MaxQueued uint16
	// MaxInflight bounds the QoS 1/2 deliveries out to one client and not
	// acknowledged (0: DefaultMaxInflight).
	MaxInflight uint16
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
	// ParkAfter is how long a client of the plain TCP listener may send
	// nothing before it is parked: held without a goroutine or read
	// buffer until it sends again (0: DefaultParkAfter; negative: never).
	ParkAfter time.Duration
}

// Adapter is the MQTT adapter. It implements adapters.Adapter,
// adapters.HealthChecker, adapters.Addresser and adapters.PresenceSource.
type Adapter struct {
	cfg     Config
	auth    *adapters.Auth
	log     *slog.Logger
	metrics *metrics

	// lifetime context of calls made from hooks (auth, bus publish).
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	state  int
	srv    *mochi.Server
	lns    []boundListener
	lnAddr map[string]string // listener id -> configured address

	running atomic.Bool                     // serving; read by Healthy without mu
	served  atomic.Pointer[[]boundListener] // the listeners, once started

	sink     atomic.Pointer[adapters.PresenceSink]
	roles    sync.Map // username -> role of authenticated principals
	presMu   sync.Mutex
	presence map[string]int // device id -> connections
	online   sync.Map       // *mochi.Client -> device id, for connected devices

	// sessions are the client ids' bus subscriptions.
	smu      sync.Mutex
	sessions map[string]*session

	revoked     sync.Map // *mochi.Client -> struct{}, closed by Revoke until its OnDisconnect ended
	present     sync.Map // *mochi.Client -> session present, until its CONNACK
	subscribing sync.Map // *mochi.Client -> struct{} while its SUBSCRIBE is checked
	granted     sync.Map // *mochi.Client -> []broker.Filter whose retained values follow its SUBACK
	overCap     overCap  // filters of a SUBSCRIBE over the client's bound (limits.go)

	sysLast map[string]string // $SYS topic -> last value published (mochi's loop goroutine)
	wg      sync.WaitGroup    // the sweeper

	// ackQueues hold the acknowledgements waiting for the bus, by client
	// (see publishAsync); ackWG counts their goroutines.
	ackQueues sync.Map // *mochi.Client -> *ackQueue
	ackWG     sync.WaitGroup
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
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = DefaultParkAfter
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
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = DefaultMaxInflight
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Adapter{
		cfg:      cfg,
		auth:     cfg.Auth,
		log:      cfg.Logger,
		presence: make(map[string]int),
		lnAddr:   make(map[string]string),
		sessions: make(map[string]*session),
		sysLast:  make(map[string]string),
	}
	if a.auth == nil {
		a.auth = adapters.NewAuth(nil, nil)
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

// Start binds the listeners, migrates the sessions of an earlier version
// and starts serving. It can be called once.
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
	caps.MaximumMessageExpiryInterval = 0
	caps.ReceiveMaximum = a.cfg.MaxInflight
	// mochi's own outbound queue carries nothing (deliveries are written by
	// the sessions through asyncConn): its buffer need not be 8 KiB a client.
	caps.MaximumClientWritesPending = 8
	// mochi would copy a PUBLISH's properties into its PUBACK, PUBREC and
	// PUBCOMP, which MQTT 5 allows only a reason string and user
	// properties in.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		// mochi gives every client a read buffer of this size for as long
		// as it is connected (its default, 2 KiB, was a quarter of an idle
		// connection's heap). A packet body at least this large is read
		// straight into the packet; smaller packets share a read(2).
		ClientNetReadBufferSize: clientReadBuffer,
		Logger:                  a.log.With("component", "mochi"),
		SysTopicResendInterval:  int64(a.cfg.SysInterval / time.Second),
	})
	if err := srv.AddHook(&hook{a: a}, nil); err != nil {
		return fmt.Errorf("mqtt: add hook: %w", err)
	}
	a.srv = srv

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
			tl.slow, tl.writeTimeout, tl.maxPacket = a.slowConsumer, a.cfg.WriteTimeout, a.cfg.MaxPacketSize
			tl.limits = a.auth.Limits()
			tl.parkAfter = max(a.cfg.ParkAfter, 0)
			ln = tl
		case "ws":
			wl := newWSListener(l.id, l.addr, nil, a.cfg.ConnectTimeout, a.connEnded)
			wl.slow, wl.writeTimeout, wl.maxPacket = a.slowConsumer, a.cfg.WriteTimeout, a.cfg.MaxPacketSize
			wl.limits = a.auth.Limits()
			ln = wl
		}
		if err := srv.AddListener(ln); err != nil {
			a.closeListeners()
			return err
		}
		a.lns = append(a.lns, ln)
		a.lnAddr[l.id] = l.addr
	}
	if err := a.migrate(ctx); err != nil {
		a.closeListeners()
		return err
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return fmt.Errorf("mqtt: serve: %w", err)
	}
	if err := a.metrics.register(a.cfg.Registerer); err != nil {
		_ = srv.Close()
		return err
	}
	a.wg.Add(1)
	go a.sweeper()
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

// Stop disconnects every client (persistent sessions stay on the bus),
// closes the listeners and returns once every goroutine has ended, or
// when ctx is done.
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
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.srv.Close()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("mqtt: stop: %w", ctx.Err()))
	}
	a.smu.Lock()
	ss := make([]*session, 0, len(a.sessions))
	for _, s := range a.sessions {
		ss = append(ss, s)
	}
	a.smu.Unlock()
	for _, s := range ss {
		s.detach(nil)
	}
	a.ackWG.Wait() // each ends once the bus has answered for its messages
	a.cancel()
	a.wg.Wait()
	a.metrics.unregister(a.cfg.Registerer)
	return errors.Join(errs...)
}

// sessionOf returns the session cl delivers for, nil when it is not (or
// no longer) the client id's connection.
func (a *Adapter) sessionOf(cl *mochi.Client) *session {
	a.smu.Lock()
	s := a.sessions[cl.ID]
	a.smu.Unlock()
	if s == nil || s.conn() != cl {
		return nil
	}
	return s
}

// Healthy reports nil while the adapter serves and every listener accepts
// (one out of descriptors is "failing" until it accepts again).
func (a *Adapter) Healthy() error {
	if !a.running.Load() {
		return errors.New("mqtt: not running")
	}
	for _, l := range *a.served.Load() {
		if err := l.health(); err != nil {
			return fmt.Errorf("mqtt: %w", err)
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
