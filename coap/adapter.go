// Package coap is the hub's CoAP adapter (RFC 7252). Topics are the
// resources /ps/{topic}, one URI-Path segment per topic level:
//
//   - POST publishes (2.04); PUT publishes and retains (2.01 for a topic
//     with no retained value yet, 2.04 otherwise); DELETE clears the
//     retained value (2.02).
//   - GET reads the bus's retained value (2.05; 4.04 when there is none),
//     as REST and XMPP do; of a filter, every retained value under it the
//     client may read, as a JSON array of RetainedJSON in topic order
//     (?limit=, default 100), block-wise when large. GET with Observe: 0
//     (RFC 7641) subscribes, a filter with + or # included; notifications
//     of a filter carry their topic in Location-Path. Every value and notification is checked with
//     adapters.Auth.CanRead against the client's principal before it is
//     sent, so a revoked right ends what an observation delivers within
//     adapters.ReadCacheTTL. Observe: 1, a Reset, an unacknowledged CON
//     notification or the end of the endpoint ends the observation.
//   - A CON request publishes at QoS 1, a NON one at QoS 0; the query
//     options qos= (0..2 or qos0..qos2) and retain= (true/false) override,
//     as in EMQX's CoAP gateway. An observer registered with CON gets CON
//     notifications for QoS >= 1; a DTLS device's CON observation is a
//     durable subscription, so QoS 1 envelopes it misses while away reach
//     it when it observes again.
//   - Block-wise transfer (RFC 7959) carries bodies up to MaxPayload both
//     ways; /.well-known/core (RFC 6690) lists /ps and the retained topics.
//   - Errors: 4.00 bad path, topic or query; 4.01 no or bad credentials;
//     4.03 refused by the ACL; 4.04 no value; 4.05 method; 4.06 Accept;
//     4.13 body over MaxPayload (Size1 gives the limit); 4.15 unknown
//     Content-Format; 5.03 bus or store unavailable. Errors carry a
//     diagnostic payload.
//
// The plain UDP listener takes EMQX-style credentials in the query
// (c= or clientid= client id, u= or username=, p= or password=); without
// them a client is anonymous, allowed on a loopback listener or with
// AllowAnonymous. The DTLS listener authenticates devices by pre-shared
// key: the PSK identity is the device id, the principal a device, and the
// device is reported online while it has a session.
package coap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options/config"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/files"
)

// Defaults of Config.
const (
	DefaultAddr          = "127.0.0.1:5683"
	DefaultMaxPayload    = 64 << 10
	DefaultBlockSize     = 1024
	DefaultAckTimeout    = 2 * time.Second
	DefaultMaxRetransmit = 4
	DefaultIdleTimeout   = 5 * time.Minute
	DefaultMaxObserve    = 256
	// DefaultEndpointIdleTimeout covers MAX_TRANSMIT_SPAN (45 s), the
	// time a client may retransmit a request that must be deduplicated.
	DefaultEndpointIdleTimeout = time.Minute
)

// PSKFunc returns the DTLS pre-shared key of a device; store.DevicePSK fits.
type PSKFunc func(ctx context.Context, identity string) ([]byte, error)

// Config configures the CoAP adapter.
type Config struct {
	// Addr is the plain UDP listen address (DefaultAddr is the hub's
	// default); "" disables it. Addr or DTLSAddr is required.
	Addr string
	// DTLSAddr is the DTLS (coaps) listen address; "" disables it.
	DTLSAddr string
	// PSK looks up a device's pre-shared key by PSK identity (= device id);
	// required with DTLSAddr.
	PSK PSKFunc
	// Bus is the hub's bus (required).
	Bus broker.Bus
	// Durables lists the ids of the bus's durable subscriptions (the
	// store's LoadSubscriptions), so that Revoke finds the queues of a
	// device that is away; nil: Revoke ends those of connected devices
	// only.
	Durables func(ctx context.Context) ([]string, error)
	// Auth checks query credentials and ACLs (required).
	Auth *adapters.Auth
	// AllowAnonymous lets clients without credentials in on a non-loopback
	// plain listener (see adapters.AnonymousAllowed).
	AllowAnonymous bool
	// RequireTLS refuses query credentials (?u=&p=) over plain UDP on a
	// listener that is not loopback-only: use DTLS (coaps).
	RequireTLS bool
	// Node is stamped into Origin.Node (default broker.NodeID()).
	Node string
	// Logger receives the adapter's logs (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the adapter's metrics (nil: no metrics).
	Registerer prometheus.Registerer
	// MaxPayload bounds a request body, block-wise bodies included
	// (0: DefaultMaxPayload); larger ones get 4.13.
	MaxPayload int
	// BlockSize is the largest block of a block-wise transfer: a power of
	// two from 16 to 1024 (0: DefaultBlockSize).
	BlockSize int
	// AckTimeout and MaxRetransmit are RFC 7252's ACK_TIMEOUT and
	// MAX_RETRANSMIT for confirmable notifications (0: defaults 2 s and 4).
	AckTimeout    time.Duration
	MaxRetransmit int
	// IdleTimeout closes a client's state after this long without traffic
	// when it observes nothing, marking a DTLS device offline; an observer
	// silent this long gets its next notification as CON to check that it
	// is still there (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// EndpointIdleTimeout closes the state of a plain UDP endpoint that
	// observes nothing after this long without traffic (0:
	// DefaultEndpointIdleTimeout, at most IdleTimeout): a client that went
	// away costs its state (a goroutine, the response cache) no longer.
	EndpointIdleTimeout time.Duration
	// MaxObservations bounds the observations of one client
	// (0: DefaultMaxObserve); beyond it a GET with Observe is answered as
	// a plain GET, as RFC 7641 allows.
	MaxObservations int
	// MaxObservationsPerUser bounds the observations of one principal
	// over all its endpoints, anonymous clients counting as one
	// (0: DefaultMaxObservePerUser); MaxObservationsTotal bounds those of
	// the adapter (0: DefaultMaxObserveTotal). Beyond either, a GET with
	// Observe is answered as a plain GET, as with MaxObservations.
	MaxObservationsPerUser int
	MaxObservationsTotal   int
	// VerifyLoopback checks the return routability (see routability.go)
	// of loopback peers too; by default they are trusted, as only a local
	// process can send from a loopback address. Other plain UDP peers are
	// always checked, DTLS sessions never.
	VerifyLoopback bool
	// MaxUploadBytesPerEndpoint bounds what one endpoint has in
	// block-wise reassembly to /ps (0: 2 × MaxPayload; beyond: 4.13), and
	// MaxUploadBytesTotal what all endpoints have (0: 64 × MaxPayload;
	// beyond: 5.03). See uploads.go.
	MaxUploadBytesPerEndpoint int64
	MaxUploadBytesTotal       int64
	// BlockwiseTimeout is how long go-coap keeps a block-wise transfer
	// that goes on no further (0: DefaultBlockwiseTimeout).
	BlockwiseTimeout time.Duration
	// Files serves /files/{name} (block-wise GET and PUT, DELETE); nil:
	// 4.04. MaxFileUploads bounds the block-wise PUTs in progress (0:
	// DefaultMaxFileUploads), and one idle for FileUploadTimeout is
	// discarded (0: DefaultFileUploadTimeout).
	Files             *files.Store
	MaxFileUploads    int
	FileUploadTimeout time.Duration
}

// Adapter is the CoAP adapter. It implements adapters.Adapter,
// adapters.HealthChecker, adapters.Addresser and adapters.PresenceSource.
type Adapter struct {
	cfg     Config
	log     *slog.Logger
	anonOK  adapters.AnonymousAccess
	szx     blockwise.SZX
	node    string
	metrics *metrics
	echo    echoKey // MAC key of the Echo values the adapter issues

	mu       sync.Mutex
	started  bool
	stopped  bool
	udp      *udpServer.Server
	dtls     *dtlsServer.Server
	addrs    map[string]string
	conns    map[*udpClient.Conn]*connState
	presence adapters.PresenceSink
	online   map[string]int
	durables map[string]*observation // durable subscription id -> holder
	up       fileUploads             // block-wise PUTs to /files in progress
	// obsTotal and obsByUser count observations against
	// MaxObservationsTotal and MaxObservationsPerUser.
	obsTotal  int
	obsByUser map[string]int
	// uploadTotal is what all endpoints have in block-wise reassembly.
	uploadTotal atomic.Int64

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	serving sync.WaitGroup
	// spawnMu and draining order spawn's wg.Add before Stop's wg.Wait:
	// go-coap may still run a handler (ending an observation) while Stop
	// waits, and an Add racing a Wait at zero is not allowed.
	spawnMu  sync.Mutex
	draining bool
}

var (
	_ adapters.Adapter        = (*Adapter)(nil)
	_ adapters.HealthChecker  = (*Adapter)(nil)
	_ adapters.Addresser      = (*Adapter)(nil)
	_ adapters.PresenceSource = (*Adapter)(nil)
)

// New validates cfg and returns an adapter; Start binds its listeners.
func New(cfg Config) (*Adapter, error) {
	if cfg.Bus == nil {
		return nil, errors.New("coap: Bus is required")
	}
	if cfg.Auth == nil {
		return nil, errors.New("coap: Auth is required")
	}
	if cfg.Addr == "" && cfg.DTLSAddr == "" {
		return nil, errors.New("coap: Addr or DTLSAddr is required")
	}
	if cfg.Addr != "" {
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			return nil, fmt.Errorf("coap: Addr %q: %w", cfg.Addr, err)
		}
	}
	if cfg.DTLSAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.DTLSAddr); err != nil {
			return nil, fmt.Errorf("coap: DTLSAddr %q: %w", cfg.DTLSAddr, err)
		}
		if cfg.PSK == nil {
			return nil, errors.New("coap: PSK is required with DTLSAddr")
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Node == "" {
		cfg.Node = broker.NodeID()
	}
	switch {
	case cfg.MaxPayload == 0:
		cfg.MaxPayload = DefaultMaxPayload
	case cfg.MaxPayload < 0:
		return nil, fmt.Errorf("coap: MaxPayload %d: must not be negative", cfg.MaxPayload)
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	szx, ok := blockSZX(cfg.BlockSize)
	if !ok {
		return nil, fmt.Errorf("coap: BlockSize %d: must be a power of two 16..1024", cfg.BlockSize)
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.AckTimeout < 0 {
		return nil, fmt.Errorf("coap: AckTimeout %v: must be positive", cfg.AckTimeout)
	}
	switch {
	case cfg.MaxRetransmit == 0:
		cfg.MaxRetransmit = DefaultMaxRetransmit
	case cfg.MaxRetransmit < 0 || cfg.MaxRetransmit > 20:
		return nil, fmt.Errorf("coap: MaxRetransmit %d: must be 1..20", cfg.MaxRetransmit)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.IdleTimeout < 0 {
		return nil, fmt.Errorf("coap: IdleTimeout %v: must be positive", cfg.IdleTimeout)
	}
	if cfg.EndpointIdleTimeout == 0 {
		cfg.EndpointIdleTimeout = min(DefaultEndpointIdleTimeout, cfg.IdleTimeout)
	}
	if cfg.EndpointIdleTimeout < 0 {
		return nil, fmt.Errorf("coap: EndpointIdleTimeout %v: must be positive", cfg.EndpointIdleTimeout)
	}
	if cfg.MaxObservations == 0 {
		cfg.MaxObservations = DefaultMaxObserve
	}
	if cfg.MaxObservations < 0 {
		return nil, fmt.Errorf("coap: MaxObservations %d: must be positive", cfg.MaxObservations)
	}
	if cfg.BlockwiseTimeout == 0 {
		cfg.BlockwiseTimeout = DefaultBlockwiseTimeout
	}
	if cfg.BlockwiseTimeout < 0 {
		return nil, fmt.Errorf("coap: BlockwiseTimeout %v: must be positive", cfg.BlockwiseTimeout)
	}
	if cfg.MaxUploadBytesPerEndpoint == 0 {
		cfg.MaxUploadBytesPerEndpoint = defaultUploadEndpointFactor * int64(cfg.MaxPayload)
	}
	if cfg.MaxUploadBytesTotal == 0 {
		cfg.MaxUploadBytesTotal = defaultUploadTotalFactor * int64(cfg.MaxPayload)
	}
	if cfg.MaxUploadBytesPerEndpoint < 0 || cfg.MaxUploadBytesTotal < 0 {
		return nil, fmt.Errorf("coap: MaxUploadBytesPerEndpoint %d, MaxUploadBytesTotal %d: must be positive", cfg.MaxUploadBytesPerEndpoint, cfg.MaxUploadBytesTotal)
	}
	if err := validateObservationCaps(&cfg); err != nil {
		return nil, err
	}
	if cfg.MaxFileUploads == 0 {
		cfg.MaxFileUploads = DefaultMaxFileUploads
	}
	if cfg.FileUploadTimeout == 0 {
		cfg.FileUploadTimeout = DefaultFileUploadTimeout
	}
	if cfg.MaxFileUploads < 0 || cfg.FileUploadTimeout < 0 {
		return nil, fmt.Errorf("coap: MaxFileUploads %d, FileUploadTimeout %v: must be positive", cfg.MaxFileUploads, cfg.FileUploadTimeout)
	}
	key, err := newEchoKey()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("coap: metrics: %w", err)
	}
	a := &Adapter{
		cfg:     cfg,
		log:     cfg.Logger.With("adapter", "coap"),
		anonOK:  adapters.AnonymousAllowed(cfg.Addr, cfg.AllowAnonymous),
		szx:     szx,
		node:    cfg.Node,
		metrics: m,
		echo:    key,
		addrs:   make(map[string]string),
		conns:   make(map[*udpClient.Conn]*connState),
		online:  make(map[string]int),

		obsByUser: make(map[string]int),

		durables: make(map[string]*observation),
	}
	return a, nil
}

func blockSZX(size int) (blockwise.SZX, bool) {
	for szx := blockwise.SZX16; szx <= blockwise.SZX1024; szx++ {
		if int(szx.Size()) == size {
			return szx, true
		}
	}
	return 0, false
}

// Name implements adapters.Adapter.
func (a *Adapter) Name() string { return "coap" }

// SetPresenceSink implements adapters.PresenceSource: DTLS devices are
// reported online on their first datagram and offline when their session
// closes or idles out. Call it before Start.
func (a *Adapter) SetPresenceSink(s adapters.PresenceSink) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.presence = s
}

// Start implements adapters.Adapter: it binds the UDP (and DTLS) listeners
// and returns once they accept.
func (a *Adapter) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return errors.New("coap: already started")
	}
	a.started = true
	a.ctx, a.cancel = context.WithCancel(context.Background())
	fail := func(err error) error {
		a.stopped = true
		a.cancel()
		return err
	}
	// Bind every listener before serving any, so a failure has nothing to stop.
	var (
		l   *coapNet.UDPConn
		ln  *coapNet.DTLSListener
		err error
	)
	closeAll := func() {
		if l != nil {
			_ = l.Close()
		}
		if ln != nil {
			_ = ln.Close()
		}
	}
	if a.cfg.Addr != "" {
		if l, err = coapNet.NewListenUDP("udp", a.cfg.Addr); err != nil {
			return fail(fmt.Errorf("coap: listen %s: %w", a.cfg.Addr, err))
		}
	}
	if a.cfg.DTLSAddr != "" {
		if ln, err = coapNet.NewDTLSListener("udp", a.cfg.DTLSAddr, a.dtlsOptions()); err != nil {
			closeAll()
			return fail(fmt.Errorf("coap: listen dtls %s: %w", a.cfg.DTLSAddr, err))
		}
	}
	if l != nil {
		a.addrs["coap"] = l.LocalAddr().String()
		a.udp = udp.NewServer(serverOption{a: a})
		a.serving.Add(1)
		go func() {
			defer a.serving.Done()
			if err := a.udp.Serve(l); err != nil {
				a.log.Error("coap: udp server ended", "err", err)
			}
		}()
	}
	if ln != nil {
		a.addrs["coaps"] = ln.Addr().String()
		a.dtls = dtls.NewServer(serverOption{a: a})
		a.serving.Add(1)
		go func() {
			defer a.serving.Done()
			if err := a.dtls.Serve(ln); err != nil {
				a.log.Error("coap: dtls server ended", "err", err)
			}
		}()
	}
	if a.cfg.Files != nil {
		a.wg.Add(1)
		go a.sweepFileUploads()
	}
	a.log.Info("coap: listening", "addrs", a.addrs)
	return nil
}

// Stop implements adapters.Adapter: it closes the listeners, ends every
// observation and returns when the adapter's goroutines have ended.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	if !a.started || a.stopped {
		a.mu.Unlock()
		return nil
	}
	a.stopped = true
	a.cancel()
	udpSrv, dtlsSrv := a.udp, a.dtls
	a.mu.Unlock()
	// go-coap closes sessions synchronously, and their close hooks take a.mu.
	if udpSrv != nil {
		udpSrv.Stop()
	}
	if dtlsSrv != nil {
		dtlsSrv.Stop()
	}
	done := make(chan struct{})
	go func() {
		a.serving.Wait()
		a.mu.Lock()
		states := make([]*connState, 0, len(a.conns))
		for _, cs := range a.conns {
			states = append(states, cs)
		}
		a.mu.Unlock()
		for _, cs := range states {
			_ = cs.cc.Close()
			a.connClosed(cs)
		}
		a.spawnMu.Lock()
		a.draining = true
		a.spawnMu.Unlock()
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("coap: stop: %w", ctx.Err())
	}
}

// Healthy implements adapters.HealthChecker.
func (a *Adapter) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !a.started:
		return errors.New("coap: not started")
	case a.stopped:
		return errors.New("coap: stopped")
	}
	return nil
}

// Addrs implements adapters.Addresser: "coap" (and "coaps") to the bound
// address.
func (a *Adapter) Addrs() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]string, len(a.addrs))
	for k, v := range a.addrs {
		m[k] = v
	}
	return m
}

// maxTransmitWait is RFC 7252's MAX_TRANSMIT_WAIT for the configured
// parameters: how long a CON message may wait for its ACK.
func (a *Adapter) maxTransmitWait() time.Duration {
	return time.Duration(float64(a.cfg.AckTimeout) * float64(int(1)<<(a.cfg.MaxRetransmit+1)-1) * 1.5)
}

// serverOption applies the adapter's settings to go-coap's UDP or DTLS
// server configuration.
type serverOption struct{ a *Adapter }

func (o serverOption) UDPServerApply(c *udpServer.Config) {
	o.common(&c.Common)
	c.Handler = o.a.handle
	c.OnNewConn = func(cc *udpClient.Conn) { o.a.newConn(cc, false) }
	c.RequestMonitor = o.a.monitorRequest
	c.CreateInactivityMonitor = o.a.inactivityMonitor
	c.TransmissionAcknowledgeTimeout = o.a.cfg.AckTimeout
	c.TransmissionMaxRetransmit = uint32(o.a.cfg.MaxRetransmit)
}

func (o serverOption) DTLSServerApply(c *dtlsServer.Config) {
	o.common(&c.Common)
	c.Handler = o.a.handle
	c.OnNewConn = func(cc *udpClient.Conn) { o.a.newConn(cc, true) }
	c.RequestMonitor = o.a.monitorRequest
	c.CreateInactivityMonitor = o.a.inactivityMonitor
	c.TransmissionAcknowledgeTimeout = o.a.cfg.AckTimeout
	c.TransmissionMaxRetransmit = uint32(o.a.cfg.MaxRetransmit)
	c.HandshakeTimeout = 15 * time.Second
}

// common sets what the UDP and DTLS servers share.
func (o serverOption) common(c *config.Common[*udpClient.Conn]) {
	a := o.a
	c.Ctx = a.ctx
	c.Errors = a.goCoAPError
	c.PeriodicRunner = a.periodic
	c.MaxMessageSize = uint32(max(a.cfg.MaxPayload+1024, 64<<10))
	c.BlockwiseEnable = true
	c.BlockwiseSZX = a.szx
	c.BlockwiseTransferTimeout = a.cfg.BlockwiseTimeout
	c.ProcessReceivedMessage = processReceived
}

func (a *Adapter) goCoAPError(err error) {
	a.log.Debug("coap: transport", "err", err)
}

// spawn runs f on a goroutine Stop waits for; once Stop is waiting for
// them, f runs in the caller instead.
func (a *Adapter) spawn(f func()) {
	a.spawnMu.Lock()
	if a.draining {
		a.spawnMu.Unlock()
		f()
		return
	}
	a.wg.Add(1)
	a.spawnMu.Unlock()
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// periodic runs go-coap's housekeeping (retransmissions, expirations)
// on a ticker owned by the adapter, so that it ends with Stop.
func (a *Adapter) periodic(f func(now time.Time) bool) {
	a.spawnMu.Lock()
	if a.draining {
		a.spawnMu.Unlock()
		return // stopping: nothing left to retransmit
	}
	a.wg.Add(1)
	a.spawnMu.Unlock()
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(tick(a.cfg.AckTimeout))
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				if !f(now) {
					return
				}
			case <-a.ctx.Done():
				return
			}
		}
	}()
}

func tick(ack time.Duration) time.Duration {
	return min(max(ack/4, 5*time.Millisecond), 250*time.Millisecond)
}

func (a *Adapter) dtlsOptions() coapNet.DTLSServerOptions {
	return coapNet.NewDTLSServerOptions(
		piondtls.WithPSK(func(identity []byte) ([]byte, error) {
			ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
			defer cancel()
			// pion tells the callback no address: an identity that is
			// tried too often backs off as an account does.
			g := a.cfg.Auth.Guard()
			if err := g.Allow(broker.ProtoCoAP, "", string(identity)); err != nil {
				a.log.Info("coap: dtls: psk identity backing off", "identity", string(identity), "err", err)
				return nil, fmt.Errorf("coap: psk of %q: %w", identity, err)
			}
			key, err := a.cfg.PSK(ctx, string(identity))
			if err != nil {
				g.Fail(broker.ProtoCoAP, "", string(identity))
				a.log.Info("coap: dtls: unknown psk identity", "identity", string(identity), "err", err)
				return nil, fmt.Errorf("coap: psk of %q: %w", identity, err)
			}
			return key, nil
		}),
		piondtls.WithPSKIdentityHint([]byte("hub")),
		piondtls.WithCipherSuites(
			piondtls.TLS_PSK_WITH_AES_128_CCM_8,
			piondtls.TLS_PSK_WITH_AES_128_CCM,
			piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
		),
	)
}

// handlerFunc is go-coap's request handler type.
type handlerFunc = func(*responsewriter.ResponseWriter[*udpClient.Conn], *pool.Message)

var _ handlerFunc = (*Adapter)(nil).handle
