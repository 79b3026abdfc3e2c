package mqtt

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the adapter's counters; mochi's own (connections, messages,
// bytes) are read from its $SYS info when scraped.
type metrics struct {
	a             *Adapter
	malformed     atomic.Uint64 // connections closed on a malformed packet
	busErrors     atomic.Uint64 // client publishes the bus refused
	delivered     atomic.Uint64 // deliveries from the bus written to clients
	expired       atomic.Uint64 // deliveries that expired before they were written
	authFailed    atomic.Uint64 // refused CONNECTs
	denied        atomic.Uint64 // publishes the ACL refused
	slowConsumers atomic.Uint64 // connections closed because the client stopped reading

	collectors []prometheus.Collector
}

func newMetrics(a *Adapter) *metrics { return &metrics{a: a} }

func (m *metrics) info(f func() int64) func() float64 {
	return func() float64 {
		if m.a.srv == nil {
			return 0
		}
		return float64(f())
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	srv := m.a.srv
	gauge := func(name, help string, f func() int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "hub", Subsystem: "mqtt", Name: name, Help: help}, m.info(f))
	}
	counter := func(name, help string, f func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "hub", Subsystem: "mqtt", Name: name, Help: help}, m.info(f))
	}
	own := func(c *atomic.Uint64) func() int64 { return func() int64 { return int64(c.Load()) } }
	m.collectors = []prometheus.Collector{
		gauge("clients_connected", "MQTT clients connected now.", func() int64 { return atomic.LoadInt64(&srv.Info.ClientsConnected) }),
		gauge("subscriptions", "MQTT subscriptions.", func() int64 { return atomic.LoadInt64(&srv.Info.Subscriptions) }),
		gauge("inflight", "QoS 1/2 deliveries written to clients and not acknowledged yet.", func() int64 { return int64(m.a.inflight()) }),
		gauge("sessions", "MQTT sessions (connected, and persistent ones away) known to this hub.", func() int64 {
			m.a.smu.Lock()
			defer m.a.smu.Unlock()
			return int64(len(m.a.sessions))
		}),
		counter("messages_received_total", "PUBLISH packets received from clients.", func() int64 { return atomic.LoadInt64(&srv.Info.MessagesReceived) }),
		counter("messages_sent_total", "PUBLISH packets sent to clients.", func() int64 { return atomic.LoadInt64(&srv.Info.MessagesSent) }),
		counter("bytes_received_total", "Bytes received from clients.", func() int64 { return atomic.LoadInt64(&srv.Info.BytesReceived) }),
		counter("bytes_sent_total", "Bytes sent to clients.", func() int64 { return atomic.LoadInt64(&srv.Info.BytesSent) }),
		counter("malformed_total", "Connections closed on a malformed packet.", own(&m.malformed)),
		counter("bus_publish_errors_total", "Client publishes the bus refused.", own(&m.busErrors)),
		counter("delivered_total", "Deliveries from the bus written to MQTT clients.", own(&m.delivered)),
		counter("expired_total", "Deliveries that expired before they could be written.", own(&m.expired)),
		counter("slow_consumers_total", "Connections closed because the client stopped reading.", own(&m.slowConsumers)),
		counter("publish_denied_total", "Client publishes the ACL refused.", own(&m.denied)),
		counter("accept_errors_total", "Temporary accept errors (out of descriptors and the like) retried, all listeners.", func() int64 {
			var n uint64
			if p := m.a.served.Load(); p != nil {
				for _, l := range *p {
					n += l.acceptErrors()
				}
			}
			return int64(n)
		}),
		counter("connect_refused_total", "CONNECTs refused by authentication or authorization.", own(&m.authFailed)),
	}
	for i, c := range m.collectors {
		if err := r.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				r.Unregister(done)
			}
			m.collectors = nil
			return fmt.Errorf("mqtt: register metrics: %w", err)
		}
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.collectors {
		r.Unregister(c)
	}
	m.collectors = nil
}

// isMalformed reports whether err says a client sent bytes that are not
// MQTT: a malformed packet (0x81), a protocol error (0x82), an oversized
// packet (0x95), or an unknown packet type.
func isMalformed(err error) bool {
	var code packets.Code
	if errors.As(err, &code) {
		return code.Code == packets.ErrMalformedPacket.Code ||
			code.Code == packets.ErrProtocolViolation.Code ||
			code.Code == packets.ErrPacketTooLarge.Code
	}
	return false
}
