// Package rest is the hub's HTTP adapter: publish, read and clear topics
// (POST/GET/DELETE /api/v1/topics/{topic}), subscribe with Server-Sent
// Events or a WebSocket (/api/v1/subscribe?filter=), the device registry
// and device commands, users, ACLs and bearer tokens, the OpenAPI document,
// /healthz and /metrics, all on one listener.
package rest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
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
	// Addr is the listen address (host:port, port 0 picks one); required.
	Addr string
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
	// Metrics serves GET /metrics (nil: 404).
	Metrics http.Handler
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
	ln      net.Listener
	retry   *adapters.RetryListener // ln: retries temporary accept errors
	srv     *http.Server
	served  chan struct{}
	cancel  context.CancelFunc
	stopped bool

	// streams counts running SSE and WebSocket handlers; Stop waits for them.
	streams sync.WaitGroup
	// live are the running streams by principal, for Revoke.
	smu  sync.Mutex
	live map[string]map[*liveStream]struct{}
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
	case cfg.Addr == "":
		return nil, errors.New("rest: Addr is required")
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
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("rest: Addr %q: %w", cfg.Addr, err)
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
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
	a := &Adapter{cfg: cfg, log: cfg.Logger, anonOK: adapters.AnonymousAllowed(cfg.Addr, cfg.AllowAnonymous)}
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

// Start binds the listener and serves until Stop.
func (a *Adapter) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln != nil || a.stopped {
		return errors.New("rest: already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rest: listen %s: %w", a.cfg.Addr, err)
	}
	base, cancel := context.WithCancel(context.Background())
	// net/http would retry temporary accept errors too, but silently;
	// this one counts them and reports the listener failing meanwhile.
	a.retry = adapters.NewRetryListener(ln, a.log.With("listener", "http"), func(error) { a.m.acceptError() })
	ln = a.retry
	a.ln, a.cancel = ln, cancel
	// No WriteTimeout: it would cut healthy SSE and WebSocket streams.
	a.srv = &http.Server{
		Handler:           a.engine,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		ReadTimeout:       a.cfg.ReadTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.served = make(chan struct{})
	go func() {
		defer close(a.served)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("rest: serve", "addr", ln.Addr().String(), "err", err)
		}
	}()
	a.log.Info("rest: listening", "addr", ln.Addr().String(), "anonymous", a.anonOK.String())
	return nil
}

// Stop ends the streams, closes the listener and connections, and returns
// when every handler has returned or ctx is done.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	a.stopped = true
	srv, cancel, served := a.srv, a.cancel, a.served
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	cancel() // ends SSE and WebSocket handlers: their contexts derive from it
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
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
		return fmt.Errorf("rest: stop: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("rest: stop: %w", err)
	}
	return nil
}

// Healthy implements adapters.HealthChecker: nil while the listener is
// open and accepts.
func (a *Adapter) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.ln == nil:
		return errors.New("rest: not started")
	case a.stopped:
		return errors.New("rest: stopped")
	}
	if err := a.retry.Healthy(); err != nil {
		return fmt.Errorf("rest: %w", err)
	}
	return nil
}

// Listeners implements adapters.ListenerReporter: the HTTP listener's
// state, once started.
func (a *Adapter) Listeners() []adapters.ListenerStatus {
	a.mu.Lock()
	r, stopped := a.retry, a.stopped
	a.mu.Unlock()
	if r == nil {
		return nil
	}
	s := adapters.StatusOf(r)
	if stopped {
		s.State = adapters.ListenerClosed
	}
	s.Adapter, s.Name = "rest", "http"
	return []adapters.ListenerStatus{s}
}

// Addrs implements adapters.Addresser: {"http": "host:port"} once started.
func (a *Adapter) Addrs() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return map[string]string{}
	}
	return map[string]string{"http": a.ln.Addr().String()}
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

	api.DELETE("/tokens/:token", a.deleteToken)

	admin := api.Group("", a.requireAdmin)
	admin.GET("/users", a.listUsers)
	admin.POST("/users", a.addUser)
	admin.DELETE("/users/:name", a.deleteUser)
	admin.GET("/users/:name/acl", a.getACL)
	admin.PUT("/users/:name/acl", a.putACL)

	admin.GET("/devices", a.listDevices)
	admin.POST("/devices", a.addDevice)
	admin.GET("/devices/:id", a.getDevice)
	admin.PATCH("/devices/:id", a.patchDevice)
	admin.DELETE("/devices/:id", a.deleteDevice)
	api.POST("/devices/:id/commands/:name", a.command)
	admin.GET("/admin/overview", a.overview)
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
	if r.Status != adapters.HealthOK {
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
	a.cfg.Metrics.ServeHTTP(c.Writer, c.Request)
}
