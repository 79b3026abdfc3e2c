package gateway

import (
	"context"
	"encoding/json"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// setupLoginGuard gives Auth the configured login guard, publishes its
// back-offs on adapters.SecurityTopic and exports its counters.
func (h *Hub) setupLoginGuard() {
	g := adapters.NewLoginGuard(h.cfg.Security.LoginBackoff)
	h.Auth.SetGuard(g)
	bus, log := h.Bus, h.log
	g.OnEvent(func(ev adapters.LoginEvent) {
		log.Warn("security: failed logins, backing off", "protocol", ev.Protocol, "scope", ev.Scope,
			"remote", ev.Remote, "user", ev.Name, "failures", ev.Failures, "retry_in", time.Duration(ev.RetryInMS)*time.Millisecond)
		b, err := json.Marshal(ev)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// QoS 0: a flood of failures must not fill anyone's durable queue.
		if err := bus.Publish(ctx, &broker.Envelope{Topic: adapters.SecurityTopic, Payload: b, ContentType: "application/json",
			Origin: broker.Origin{Protocol: broker.ProtoHub, Node: h.cfg.Node}}); err != nil {
			log.Debug("security: publish back-off", "err", err)
		}
	})
	h.Registry.MustRegister(guardCollector{g})
}

var (
	loginFailures  = prometheus.NewDesc("hub_login_failures_total", "Failed logins (bad password, token, PSK identity), by protocol.", []string{"protocol"}, nil)
	loginThrottled = prometheus.NewDesc("hub_login_throttled_total", "Logins refused unchecked while their address or account backs off, by protocol.", []string{"protocol"}, nil)
)

// guardCollector exports a LoginGuard's counters.
type guardCollector struct{ g *adapters.LoginGuard }

func (guardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- loginFailures
	ch <- loginThrottled
}

func (c guardCollector) Collect(ch chan<- prometheus.Metric) {
	failures, throttled := c.g.Stats()
	for p, n := range failures {
		ch <- prometheus.MustNewConstMetric(loginFailures, prometheus.CounterValue, float64(n), p)
	}
	for p, n := range throttled {
		ch <- prometheus.MustNewConstMetric(loginThrottled, prometheus.CounterValue, float64(n), p)
	}
}

// clearTextListeners returns the enabled listeners that are not
// loopback-only and where credentials travel without TLS, by config key.
// XMPP is not among them: it always requires STARTTLS off loopback.
func (c *Config) clearTextListeners() map[string]string {
	out := map[string]string{}
	for key, addr := range map[string]string{"mqtt.addr": c.MQTT.Addr, "mqtt.ws_addr": c.MQTT.WSAddr, "http.addr": c.HTTP.Addr, "coap.addr": c.CoAP.Addr} {
		if Enabled(addr) && !adapters.IsLoopback(addr) {
			out[key] = addr
		}
	}
	return out
}

// warnClearText says at start where credentials could travel in clear.
func (h *Hub) warnClearText() {
	for key, addr := range h.cfg.clearTextListeners() {
		if h.cfg.RequireTLS {
			h.log.Info("security: credentials in clear are refused on this listener (require_tls)", "listener", key, "addr", addr)
			continue
		}
		h.log.Warn("security: credentials can travel in clear on a listener that is not loopback-only; use its TLS listener, or set require_tls: true to refuse them",
			"listener", key, "addr", addr)
	}
}
