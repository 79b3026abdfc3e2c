package bridge

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a bridge's counters, labelled with its name.
type metrics struct {
	connected                       prometheus.Gauge
	in, inErrors, inDropped, echoes prometheus.Counter
	out, outErrors                  prometheus.Counter
	all                             []prometheus.Collector
}

func newMetrics(b *Bridge) *metrics {
	labels := prometheus.Labels{"bridge": b.cfg.Name}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hub", Subsystem: "bridge", Name: name, Help: help, ConstLabels: labels})
	}
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hub", Subsystem: "bridge", Name: "connected",
			Help: "1 while the bridge is connected and subscribed upstream.", ConstLabels: labels}),
		in:        counter("in_total", "Upstream messages published on the bus."),
		inErrors:  counter("in_errors_total", "Upstream messages the bus could not take (left unacknowledged)."),
		inDropped: counter("in_dropped_total", "Upstream messages dropped: no rule maps them, or the bus refused their topic."),
		echoes:    counter("echoes_total", "Upstream copies of the bridge's own publishes, dropped."),
		out:       counter("out_total", "Bus envelopes published upstream."),
		outErrors: counter("out_errors_total", "Attempts to publish upstream that failed (retried for durable QoS >= 1)."),
	}
	m.all = []prometheus.Collector{m.connected, m.in, m.inErrors, m.inDropped, m.echoes, m.out, m.outErrors}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	for i, c := range m.all {
		if err := r.Register(c); err != nil {
			for _, done := range m.all[:i] {
				r.Unregister(done)
			}
			return fmt.Errorf("bridge: register metrics: %w", err)
		}
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.all {
		r.Unregister(c)
	}
}
