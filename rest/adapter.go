// Package rest is the hub's HTTP adapter: publish, read and clear topics
// (POST/GET/DELETE /api/v1/topics/{topic}), subscribe with Server-Sent
// Events or a WebSocket (/api/v1/subscribe?filter=), the device registry
// and device commands, users, ACLs and bearer tokens, the OpenAPI document,
// /healthz and /metrics, all on one listener.
package rest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/store"
)

// DefaultMaxBody is the request body limit when Config.MaxBody is 0.
const DefaultMaxBody = 1 << 20

// Defaults of the HTTP server's bounds (Config.ReadHeaderTimeout and the
// rest): a client gets 10 s to send its request headers, 60 s for a whole
// request with its body, and a keep-alive connection is closed after 120 s
// without a request. Streams (SSE, WebSocket) are not cut by the read
// timeout, and no write timeout is set, so a healthy stream lasts.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
)

// DefaultHeartbeat is the interval of SSE heartbeat comments and WebSocket
// pings when Config.Heartbeat is 0.
const DefaultHeartbeat = 15 * time.Second

// Config configures the REST adapter.
type Config struct {
	// Addr is the plain HTTP listen address (host:port, port 0 picks
	// one); TLSAddr the HTTPS one, served with TLSConfig. At least one.
	Addr      string
	TLSAddr   string
	TLSConfig *tls.Config
	// RequireTLS refuses credentials (basic auth, tokens, passwords in a
	// body) on the plain listener unless it is loopback-only: off
	// loopback they would travel in clear.
	RequireTLS bool
	// Bus is the hub's bus; required.
	Bus broker.Bus
	// Store keeps users, tokens and ACLs; required.
	Store *store.Store
	// Auth checks credentials and topic access; required.
	Auth *adapters.Auth
	// Devices is the device registry; required.
	Devices *devices.Registry
	// AllowAnonymous lets clients without credentials in on a listener that
	// is not loopback-only (loopback always allows them).
	AllowAnonymous bool
	// MaxBody limits request bodies in bytes (0: DefaultMaxBody); a larger
	// body is refused with 413.
	MaxBody int64
	// Health reports the whole hub's health for GET /healthz (nil: this
	// adapter's own); HealthReport, when set, is used instead and its
	// report is the body.
	Health func() error
	// HealthReport reports every listener's state and the store's for GET
	// /healthz (nil: Health, with this adapter's listener).
	HealthReport func() adapters.HealthReport
	// ReadHeaderTimeout bounds the time to read a request's headers
	// (0: DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to read a whole request, body included
	// (0: DefaultReadTimeout). It does not cut an SSE or WebSocket stream:
	// net/http clears the read deadline once a request's body is read
	// (its background read, in connReader.startBackgroundRead) and on
	// hijack.
	ReadTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (0: DefaultMaxHeaderBytes);
	// larger ones get 431.
	MaxHeaderBytes int
	// Metrics serves GET /metrics (nil: 404). Off loopback it needs a
	// principal's credentials, as the API does, unless PublicMetrics.
	Metrics http.Handler
	// StreamWriteTimeout bounds each write of an SSE or WebSocket stream
	// (0: DefaultStreamWriteTimeout); a client that does not read for that
	// long loses its stream.
	StreamWriteTimeout time.Duration
	// StreamMaxPending bounds the bytes waiting for one SSE or WebSocket
	// stream (0: DefaultStreamMaxPending); past it the stream is closed
	// with a final event saying why (rest/streambound.go).
	StreamMaxPending int64
	// Reload reads the configuration again and applies it, for POST
	// /api/v1/admin/reload (gateway.Hub.ReloadFromSource; nil: 404). It
	// returns what changed.
	Reload func(ctx context.Context) ([]string, error)
	// MaxTokenTTL caps the life of a minted token (0: DefaultMaxTokenTTL).
	MaxTokenTTL time.Duration
	// PublicMetrics serves /metrics to anyone on a listener that is not
	// loopback-only (a Prometheus without credentials on a trusted LAN).
	PublicMetrics bool
	// Registerer receives the adapter's metrics (nil: none).
	Registerer prometheus.Registerer
	// Heartbeat is the SSE heartbeat and WebSocket ping interval
	// (0: DefaultHeartbeat).
	Heartbeat time.Duration
	// Logger receives request errors (nil: slog.Default()).
	Logger *slog.Logger
	// Node is stamped into Origin.Node of published envelopes.
	Node string
	// Revoke ends a principal's connections, streams and sessions in
	// every protocol; the handlers call it after a user's or device's
	// deletion (gateway.Hub.Revoke; nil: this adapter's streams only).
	Revoke func(ctx context.Context, principal string) int
	// Files is the blob store behind /api/v1/files, the XEP-0363 slot and
	// shared URLs and device file commands (nil: those answer 404).
	Files *files.Store
	// Dashboard is the web dashboard's built files (dashboard.FS), served
	// at / (nil: none, / is 404). See dashboard.go.
	Dashboard fs.FS
	// Overview gathers GET /api/v1/admin/overview (nil: 404). See
	// overview.go.
	Overview func(ctx context.Context) (*Overview, error)
}

// Adapter is the REST adapter. It implements adapters.Adapter,
// adapters.HealthChecker and adapters.Addresser.
type Adapter struct {
	cfg    Config
	log    *slog.Logger
	anonOK adapters.AnonymousAccess
	engine *gin.Engine
	m      *metrics
	dash   *dashboard

	mu      sync.Mutex
	lns     []*listener // once started
	served  chan struct{}
	cancel  context.CancelFunc
	stopped bool

	// streams counts running SSE and WebSocket handlers; Stop waits for them.
	streams sync.WaitGroup
	// live are the running streams by principal, for Revoke.
	smu  sync.Mutex
	live map[string]map[*liveStream]struct{}
	// slowCut counts the streams closed for passing StreamMaxPending.
	slowCut atomic.Uint64
}

var (
	_ adapters.Adapter          = (*Adapter)(nil)
	_ adapters.HealthChecker    = (*Adapter)(nil)
	_ adapters.Addresser        = (*Adapter)(nil)
	_ adapters.ListenerReporter = (*Adapter)(nil)
)

// New validates cfg and returns an adapter ready to Start.
func New(cfg Config) (*Adapter, error) {
	switch {
	case cfg.Addr == "" && cfg.TLSAddr == "":
		return nil, errors.New("rest: Addr or TLSAddr is required")
	case cfg.TLSAddr != "" && cfg.TLSConfig == nil:
		return nil, errors.New("rest: TLSAddr needs a TLSConfig (tls.cert_file and tls.key_file)")
	case cfg.Bus == nil:
		return nil, errors.New("rest: Bus is required")
	case cfg.Store == nil:
		return nil, errors.New("rest: Store is required")
	case cfg.Auth == nil:
		return nil, errors.New("rest: Auth is required")
	case cfg.Devices == nil:
		return nil, errors.New("rest: Devices is required")
	case cfg.MaxBody < 0:
		return nil, fmt.Errorf("rest: MaxBody %d: must not be negative", cfg.MaxBody)
	case cfg.Heartbeat < 0:
		return nil, fmt.Errorf("rest: Heartbeat %v: must not be negative", cfg.Heartbeat)
	case cfg.ReadHeaderTimeout < 0, cfg.ReadTimeout < 0, cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("rest: ReadHeaderTimeout %v, ReadTimeout %v, IdleTimeout %v: must not be negative",
			cfg.ReadHeaderTimeout, cfg.ReadTimeout, cfg.IdleTimeout)
	case cfg.MaxHeaderBytes < 0:
		return nil, fmt.Errorf("rest: MaxHeaderBytes %d: must not be negative", cfg.MaxHeaderBytes)
	}
	for name, addr := range map[string]string{"Addr": cfg.Addr, "TLSAddr": cfg.TLSAddr} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			return nil, fmt.Errorf("rest: %s %q: %w", name, addr, err)
		}
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = DefaultStreamWriteTimeout
	}
	if cfg.StreamMaxPending <= 0 {
		cfg.StreamMaxPending = DefaultStreamMaxPending
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	primary := cfg.Addr
	if primary == "" {
		primary = cfg.TLSAddr
	}
	a := &Adapter{cfg: cfg, log: cfg.Logger, anonOK: adapters.AnonymousAllowed(primary, cfg.AllowAnonymous)}
	if a.log == nil {
		a.log = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	a.m = m
	if cfg.Dashboard != nil {
		if a.dash, err = newDashboard(cfg.Dashboard); err != nil {
			return nil, err
		}
	}
	a.engine = a.routes()
	return a, nil
}

// Name implements adapters.Adapter.
func (a *Adapter) Name() string { return "rest" }

// Handler returns the adapter's HTTP handler, for embedding or tests.
func (a *Adapter) Handler() http.Handler { return a.engine }

// listener is one of the adapter's listeners (plain HTTP or HTTPS).
type listener struct {
	name  string // "http" or "https"
	tls   bool
	anon  adapters.AnonymousAccess
	retry *adapters.RetryListener // retries temporary accept errors
	srv   *http.Server
}

type listenerKey struct{}

// Start binds the listeners and serves until Stop.
func (a *Adapter) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lns != nil || a.stopped {
		return errors.New("rest: already started")
	}
	base, cancel := context.WithCancel(context.Background())
	var lns []*listener
	for _, spec := range []struct {
		name, addr string
		tls        bool
	}{{"http", a.cfg.Addr, false}, {"https", a.cfg.TLSAddr, true}} {
		if spec.addr == "" {
			continue
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", spec.addr)
		if err != nil {
			cancel()
			for _, l := range lns {
				_ = l.retry.Close()
			}
			return fmt.Errorf("rest: listen %s: %w", spec.addr, err)
		}
		l := &listener{name: spec.name, tls: spec.tls, anon: adapters.AnonymousAllowed(spec.addr, a.cfg.AllowAnonymous)}
		// net/http would retry temporary accept errors too, but silently;
		// this one counts them and reports the listener failing meanwhile.
		l.retry = adapters.NewRetryListener(ln, a.log.With("listener", spec.name), func(error) { a.m.acceptError() })
		lctx := context.WithValue(base, listenerKey{}, l)
		// No WriteTimeout: it would cut healthy SSE and WebSocket streams.
		l.srv = &http.Server{
			Handler:           a.engine,
			ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
			ReadTimeout:       a.cfg.ReadTimeout,
			IdleTimeout:       a.cfg.IdleTimeout,
			MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
			BaseContext:       func(net.Listener) context.Context { return lctx },
			ConnContext:       connContext,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		}
		if spec.tls {
			l.srv.TLSConfig = a.cfg.TLSConfig.Clone()
		}
		lns = append(lns, l)
	}
	a.lns, a.cancel = lns, cancel
	a.served = make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if l.tls {
				err = l.srv.ServeTLS(a.limitListener(l.retry, true), "", "")
			} else {
				err = l.srv.Serve(a.limitListener(l.retry, false))
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("rest: serve", "addr", l.retry.Addr().String(), "err", err)
			}
		}()
		a.log.Info("rest: listening", "listener", l.name, "addr", l.retry.Addr().String(), "anonymous", l.anon.String())
	}
	go func() { wg.Wait(); close(a.served) }()
	return nil
}

// listenerOf returns the listener a request came in on (nil when the
// handler is used without Start).
func listenerOf(c *gin.Context) *listener {
	l, _ := c.Request.Context().Value(listenerKey{}).(*listener)
	return l
}

// anonFor is what the request's listener lets anonymous clients do.
func (a *Adapter) anonFor(c *gin.Context) adapters.AnonymousAccess {
	if l := listenerOf(c); l != nil {
		return l.anon
	}
	return a.anonOK
}

// clearText reports whether credentials on this request would have
// travelled in clear off loopback: a plain listener that is not
// loopback-only.
func (a *Adapter) clearText(c *gin.Context) bool {
	l := listenerOf(c)
	return l != nil && !l.tls && l.anon != adapters.AnonymousLocal
}

// Stop ends the streams, closes the listeners and connections, and returns
// when every handler has returned or ctx is done.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	a.stopped = true
	lns, cancel, served := a.lns, a.cancel, a.served
	a.mu.Unlock()
	if lns == nil {
		return nil
	}
	cancel() // ends SSE and WebSocket handlers: their contexts derive from it
	var err error
	for _, l := range lns {
		if e := l.srv.Shutdown(ctx); e != nil {
			_ = l.srv.Close()
			err = errors.Join(err, e)
		}
	}
	done := make(chan struct{})
	go func() {
		a.streams.Wait()
		<-served
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("rest: stop: %w", ctx.Err()))
	}
	return err
}

// Healthy implements adapters.HealthChecker: nil while the listeners are
// open and accept.
func (a *Adapter) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.lns == nil:
		return errors.New("rest: not started")
	case a.stopped:
		return errors.New("rest: stopped")
	}
	for _, l := range a.lns {
		if err := l.retry.Healthy(); err != nil {
			return fmt.Errorf("rest: %s: %w", l.name, err)
		}
	}
	return nil
}

// Listeners implements adapters.ListenerReporter: the listeners' states,
// once started.
func (a *Adapter) Listeners() []adapters.ListenerStatus {
	a.mu.Lock()
	lns, stopped := a.lns, a.stopped
	a.mu.Unlock()
	var out []adapters.ListenerStatus
	for _, l := range lns {
		s := adapters.StatusOf(l.retry)
		if stopped {
			s.State = adapters.ListenerClosed
		}
		s.Adapter, s.Name = "rest", l.name
		out = append(out, s)
	}
	return out
}

// Addrs implements adapters.Addresser: {"http": "host:port", "https":
// ...} for the listeners started.
func (a *Adapter) Addrs() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]string, len(a.lns))
	for _, l := range a.lns {
		m[l.name] = l.retry.Addr().String()
	}
	return m
}

// routes builds the router. Every route here must be in openapi.json (a
// test holds them to each other).
func (a *Adapter) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(a.recover, a.observe, a.limitBody)
	r.NoRoute(func(c *gin.Context) {
		if !a.serveDashboard(c) {
			a.fail(c, errNotFound)
		}
	})
	r.NoMethod(func(c *gin.Context) { a.fail(c, errMethod) })

	r.GET("/healthz", a.healthz)
	r.GET("/metrics", a.metricsHandler)
	r.GET("/api/v1/openapi.json", serveOpenAPI)
	r.POST("/api/v1/tokens", a.createToken)

	api := r.Group("/api/v1", a.authenticate)
	api.POST("/topics/*topic", a.publish)
	api.GET("/topics/*topic", a.readTopic)
	api.DELETE("/topics/*topic", a.clearTopic)
	api.GET("/subscribe", a.subscribe)
	api.GET("/history/*topic", a.history)

	api.DELETE("/tokens/:token", a.deleteToken)

	admin := api.Group("", a.requireAdmin)
	admin.GET("/users", a.listUsers)
	admin.POST("/users", a.addUser)
	admin.PATCH("/users/:name", a.patchUser)
	admin.DELETE("/users/:name", a.deleteUser)
	admin.GET("/users/:name/acl", a.getACL)
	admin.PUT("/users/:name/acl", a.putACL)

	admin.GET("/devices", a.listDevices)
	admin.POST("/devices", a.addDevice)
	admin.GET("/devices/:id", a.getDevice)
	admin.PATCH("/devices/:id", a.patchDevice)
	admin.DELETE("/devices/:id", a.deleteDevice)
	api.POST("/devices/:id/commands/:name", a.command)
	api.GET("/devices/:id/commands", a.listCommands)
	admin.PUT("/devices/:id/commands", a.putCommands)

	// Files (rest/files.go). Slot and shared URLs take no credentials:
	// their unguessable tokens are.
	api.POST("/files", a.uploadFile)
	api.GET("/files", a.listFiles)
	api.GET("/files/*name", a.getFile)
	api.HEAD("/files/*name", a.getFile)
	api.DELETE("/files/*name", a.deleteFile)
	api.POST("/devices/:id/files/*name", a.sendFile)
	r.PUT(files.SlotPath+":token/:file", a.putSlot)
	r.OPTIONS(files.SlotPath+":token/:file", a.slotOptions)
	r.GET(files.SharedPath+":token/:file", a.getShared)
	r.HEAD(files.SharedPath+":token/:file", a.getShared)
	r.OPTIONS(files.SharedPath+":token/:file", a.slotOptions)
	admin.GET("/admin/overview", a.overview)
	admin.POST("/admin/reload", a.reload)
	return r
}

// healthz answers GET /healthz with a JSON adapters.HealthReport: 200
// when the status is "ok", 503 when a listener does not accept or a
// check fails.
func (a *Adapter) healthz(c *gin.Context) {
	var r adapters.HealthReport
	if a.cfg.HealthReport != nil {
		r = a.cfg.HealthReport()
	} else {
		check := a.cfg.Health
		if check == nil {
			check = a.Healthy
		}
		r.Status, r.Listeners = adapters.HealthOK, a.Listeners()
		if err := check(); err != nil {
			r.Status, r.Errors = adapters.HealthUnavailable, []string{err.Error()}
		}
	}
	if r.Listeners == nil {
		r.Listeners = []adapters.ListenerStatus{}
	}
	code := http.StatusOK
	if r.Status != adapters.HealthOK && r.Status != adapters.HealthDegraded {
		code = http.StatusServiceUnavailable
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(code, r)
}

func (a *Adapter) metricsHandler(c *gin.Context) {
	if a.cfg.Metrics == nil {
		a.fail(c, fmt.Errorf("%w: metrics are not enabled", errNotFound))
		return
	}
	if a.anonFor(c) != adapters.AnonymousLocal && !a.cfg.PublicMetrics {
		// Counters name clients, users and topics: not for anyone who
		// can reach the port. allow_anonymous does not open them.
		p, err := a.credentials(c)
		if err == nil && p.Anonymous {
			err = fmt.Errorf("%w: /metrics on a listener that is not loopback-only needs a token or basic credentials (or http.public_metrics: true)", adapters.ErrBadCredentials)
		}
		if err != nil {
			a.fail(c, err)
			return
		}
	}
	a.cfg.Metrics.ServeHTTP(c.Writer, c.Request)
}
