package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
)

// setupLimits gives every adapter the configured limits (through Auth)
// and serves their counters on /metrics.
func (h *Hub) setupLimits() {
	l := adapters.NewLimits(h.cfg.Limits.LimitsConfig)
	h.Auth.SetLimits(l)
	h.Registry.MustRegister(limitsCollector{l})
}

// limitsCollector exports adapters.Limits.Stats.
type limitsCollector struct{ l *adapters.Limits }

var (
	limitConnsDesc   = prometheus.NewDesc("hub_limits_connections", "Connections held, all listeners together (limits.max_connections).", nil, nil)
	limitSessDesc    = prometheus.NewDesc("hub_limits_persistent_sessions", "MQTT persistent sessions counted against limits.max_persistent_sessions_per_user.", nil, nil)
	limitResDesc     = prometheus.NewDesc("hub_limits_xmpp_resources", "XMPP resources bound, counted against limits.max_resources_per_user.", nil, nil)
	limitPendDesc    = prometheus.NewDesc("hub_limits_pending_bytes", "Bytes written to connections and not taken by their clients (limits.max_pending_bytes_total).", nil, nil)
	limitRefusedDesc = prometheus.NewDesc("hub_limits_refused_total", "Connections, subscriptions, sessions, resources and topics refused, and slow consumers cut off, by limit.", []string{"limit"}, nil)
)

// Describe sends the descriptors.
func (c limitsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- limitConnsDesc
	ch <- limitSessDesc
	ch <- limitResDesc
	ch <- limitPendDesc
	ch <- limitRefusedDesc
}

// Collect sends the counters now.
func (c limitsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Stats()
	ch <- prometheus.MustNewConstMetric(limitConnsDesc, prometheus.GaugeValue, float64(s.Connections))
	ch <- prometheus.MustNewConstMetric(limitSessDesc, prometheus.GaugeValue, float64(s.PersistentSessions))
	ch <- prometheus.MustNewConstMetric(limitResDesc, prometheus.GaugeValue, float64(s.Resources))
	ch <- prometheus.MustNewConstMetric(limitPendDesc, prometheus.GaugeValue, float64(s.PendingBytes))
	for _, k := range adapters.RefusalKinds() {
		ch <- prometheus.MustNewConstMetric(limitRefusedDesc, prometheus.CounterValue, float64(s.Refused[k]), k)
	}
}
