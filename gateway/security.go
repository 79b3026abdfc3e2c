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
