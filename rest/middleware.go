package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// principalKey is the gin context key of the authenticated principal.
const principalKey = "hub.principal"

// metrics are the adapter's Prometheus collectors (nil when not registered).
type metrics struct {
	requests  *prometheus.CounterVec
	streams   *prometheus.GaugeVec
	published prometheus.Counter
	accept    prometheus.Counter
	denied    prometheus.Counter
	slow      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hub", Subsystem: "rest", Name: "requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "code"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "hub", Subsystem: "rest", Name: "streams",
			Help: "Open subscription streams by kind (sse, websocket).",
		}, []string{"kind"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "hub", Subsystem: "rest", Name: "published_total",
			Help: "Envelopes published through POST /api/v1/topics.",
		}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "hub", Subsystem: "rest", Name: "denied_total",
			Help: "Envelopes left out of a filter read or a stream because the reader may not read their topic.",
		}),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hub", Subsystem: "rest", Name: "streams_slow_closed_total",
			Help: "SSE and WebSocket streams closed because more than the pending bound waited for them.",
		}, []string{"kind"}),
		accept: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "hub", Subsystem: "rest", Name: "accept_errors_total",
			Help: "Temporary accept errors (out of descriptors and the like) retried on the HTTP listener.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.streams, m.published, m.denied, m.accept, m.slow} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("rest: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) stream(kind string, delta float64) {
	if m != nil {
		m.streams.WithLabelValues(kind).Add(delta)
	}
}

func (m *metrics) acceptError() {
	if m != nil {
		m.accept.Inc()
	}
}

func (m *metrics) deny() {
	if m != nil {
		m.denied.Inc()
	}
}

func (m *metrics) publish() {
	if m != nil {
		m.published.Inc()
	}
}

// recover turns a handler panic into a 500 instead of a dropped connection.
func (a *Adapter) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.fail(c, fmt.Errorf("panic: %v", v))
		}
	}()
	c.Next()
}

// observe counts requests and logs them at debug level.
func (a *Adapter) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	status := c.Writer.Status()
	if a.m != nil {
		a.m.requests.WithLabelValues(route, c.Request.Method, strconv.Itoa(status)).Inc()
	}
	a.log.Debug("rest: request", "method", c.Request.Method, "path", logPath(c),
		"status", status, "duration", time.Since(start), "remote", c.Request.RemoteAddr)
}

// logPath is the request's path as logs may show it: a path that carries
// a secret (DELETE /api/v1/tokens/{token}, and the file slots' tokens) is
// shown as its route. The query (?access_token=) is never logged.
func logPath(c *gin.Context) string {
	if route := c.FullPath(); strings.Contains(route, ":token") || strings.Contains(route, "*token") {
		return route
	}
	return c.Request.URL.Path
}

// limitBody refuses bodies above MaxBody: at once when Content-Length says
// so, and while reading otherwise.
func (a *Adapter) limitBody(c *gin.Context) {
	if fileRoutes[c.FullPath()] && c.Request.Method != http.MethodOptions {
		// The file store bounds uploads by its own limits.
		c.Next()
		return
	}
	if c.Request.ContentLength > a.cfg.MaxBody {
		a.fail(c, errTooLarge)
		return
	}
	if c.Request.Body != nil {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, a.cfg.MaxBody)
	}
	c.Next()
}

// credentials reads the bearer token (Authorization header, or the
// access_token query parameter for EventSource and WebSocket clients that
// cannot set headers) or basic-auth credentials and returns the principal.
// No credentials at all is anonymous, when the listener allows it.
func (a *Adapter) credentials(c *gin.Context) (adapters.Principal, error) {
	ctx := c.Request.Context()
	token := bearerToken(c)
	h := c.GetHeader("Authorization")
	if h != "" || token != "" {
		if err := a.checkTLS(c); err != nil {
			return adapters.Principal{}, err
		}
	}
	if token != "" {
		// Tokens are guessed too: a bad one counts against the address.
		g := a.cfg.Auth.Guard()
		if err := g.Allow(broker.ProtoREST, c.Request.RemoteAddr, ""); err != nil {
			return adapters.Principal{}, err
		}
		u, err := a.cfg.Store.VerifyToken(ctx, token)
		if err != nil {
			if errors.Is(err, adapters.ErrBadCredentials) {
				g.Fail(broker.ProtoREST, c.Request.RemoteAddr, "")
				return adapters.Principal{}, fmt.Errorf("%w: unknown or expired token", adapters.ErrBadCredentials)
			}
			return adapters.Principal{}, fmt.Errorf("rest: verify token: %w", err)
		}
		return adapters.Principal{Name: u.Name, Role: u.Role}, nil
	}
	if name, pw, ok := c.Request.BasicAuth(); ok {
		if name == "" {
			return adapters.Principal{}, fmt.Errorf("%w: empty user name", adapters.ErrBadCredentials)
		}
		return a.cfg.Auth.Authenticate(a.loginCtx(c), name, pw, a.anonFor(c))
	}
	if h != "" {
		return adapters.Principal{}, fmt.Errorf("%w: unsupported Authorization scheme (use Bearer or Basic)", adapters.ErrBadCredentials)
	}
	p, err := a.cfg.Auth.Authenticate(ctx, "", "", a.anonFor(c))
	if err != nil {
		return adapters.Principal{}, fmt.Errorf("%w: this listener is not loopback-only: give a bearer token or basic credentials", err)
	}
	return p, nil
}

// checkTLS refuses credentials that came in clear off loopback when
// RequireTLS is set.
func (a *Adapter) checkTLS(c *gin.Context) error {
	if a.cfg.RequireTLS && a.clearText(c) {
		return fmt.Errorf("rest: %w (https)", adapters.ErrTLSRequired)
	}
	return nil
}

// loginCtx is the request's context naming where a login comes from, for
// the login guard.
func (a *Adapter) loginCtx(c *gin.Context) context.Context {
	return adapters.WithLoginSource(c.Request.Context(), adapters.LoginSource{Protocol: broker.ProtoREST, Remote: c.Request.RemoteAddr})
}

// bearerToken returns the request's bearer token (Authorization: Bearer,
// or ?access_token= for clients that cannot set headers), "" when none.
func bearerToken(c *gin.Context) string {
	if scheme, rest, ok := strings.Cut(c.GetHeader("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(rest)
	}
	return c.Query("access_token")
}

// authenticate is the middleware of every /api/v1 route but token creation.
func (a *Adapter) authenticate(c *gin.Context) {
	p, err := a.credentials(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Set(principalKey, p)
	c.Next()
}

// isAdmin reports whether p may manage users, ACLs and devices: admins, and
// anonymous clients of a loopback-only listener with no anonymous rules
// configured (adapters.Principal.Local). Other anonymous clients never
// administer.
func isAdmin(p adapters.Principal) bool {
	return p.Role == adapters.RoleAdmin || p.Anonymous && p.Local
}

// requireAdmin refuses non-admins with 403.
func (a *Adapter) requireAdmin(c *gin.Context) {
	p := principal(c)
	if !isAdmin(p) {
		a.fail(c, fmt.Errorf("%w: %q is not an admin", adapters.ErrForbidden, p.Name))
		return
	}
	c.Next()
}

func principal(c *gin.Context) adapters.Principal {
	v, _ := c.Get(principalKey)
	p, _ := v.(adapters.Principal)
	return p
}
