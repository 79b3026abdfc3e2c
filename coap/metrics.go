package coap

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the adapter's Prometheus collectors; they always exist and
// are registered only when a Registerer is configured.
type metrics struct {
	requests      *prometheus.CounterVec
	latency       prometheus.Histogram
	published     prometheus.Counter
	notifications *prometheus.CounterVec
	observers     prometheus.Gauge
	conns         prometheus.Gauge
	denied        prometheus.Counter
	// verified counts endpoints that proved their address, by how (ack,
	// echo, ping); echoChallenges the 4.01 Echo answers sent instead of a
	// response too large for an unverified endpoint.
	verified       *prometheus.CounterVec
	echoChallenges prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_coap_requests_total", Help: "CoAP requests by method and response code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hub_coap_request_seconds", Help: "Time to serve a CoAP request.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hub_coap_published_total", Help: "Envelopes published from CoAP requests.",
		}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_coap_notifications_total", Help: "Observe notifications sent, by message type.",
		}, []string{"type"}),
		observers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hub_coap_observations", Help: "Active CoAP observations.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hub_coap_endpoints", Help: "CoAP endpoints (UDP peers and DTLS sessions) with state.",
		}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hub_coap_denied_total", Help: "Values and notifications not sent because the client may not read their topic.",
		}),
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_coap_endpoints_verified_total", Help: "CoAP endpoints whose return routability was checked, by how (ack, echo, ping).",
		}, []string{"by"}),
		echoChallenges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hub_coap_echo_challenges_total", Help: "4.01 Echo answers sent instead of a response too large for an unverified endpoint.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.published, m.notifications, m.observers, m.conns, m.denied, m.verified, m.echoChallenges} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
