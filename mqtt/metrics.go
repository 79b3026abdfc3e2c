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
	fromBus       atomic.Uint64 // envelopes injected from the bus
	expired       atomic.Uint64 // envelopes from the bus that had expired
	authFailed    atomic.Uint64 // refused CONNECTs
	slowConsumers atomic.Uint64 // connections closed because the client stopped reading
	queueDropped  atomic.Uint64 // oldest queued messages dropped for a full client queue
	notStored     atomic.Uint64 // copies for offline sessions the store refused (publish refused)
	duplicates    atomic.Uint64 // envelopes the bus replayed to sessions holding them already

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
		gauge("retained", "Retained messages.", func() int64 { return atomic.LoadInt64(&srv.Info.Retained) }),
		gauge("inflight", "QoS 1/2 messages in flight or queued for clients.", func() int64 { return atomic.LoadInt64(&srv.Info.Inflight) }),
		counter("messages_received_total", "PUBLISH packets received from clients and the bus.", func() int64 { return atomic.LoadInt64(&srv.Info.MessagesReceived) }),
		counter("messages_sent_total", "PUBLISH packets sent to clients.", func() int64 { return atomic.LoadInt64(&srv.Info.MessagesSent) }),
		counter("messages_dropped_total", "Messages dropped for a slow client or a full in-flight queue.", func() int64 {
			return atomic.LoadInt64(&srv.Info.MessagesDropped) + atomic.LoadInt64(&srv.Info.InflightDropped)
		}),
		counter("bytes_received_total", "Bytes received from clients.", func() int64 { return atomic.LoadInt64(&srv.Info.BytesReceived) }),
		counter("bytes_sent_total", "Bytes sent to clients.", func() int64 { return atomic.LoadInt64(&srv.Info.BytesSent) }),
		counter("malformed_total", "Connections closed on a malformed packet.", own(&m.malformed)),
		counter("bus_publish_errors_total", "Client publishes the bus refused.", own(&m.busErrors)),
		counter("from_bus_total", "Envelopes from the bus injected for MQTT subscribers.", own(&m.fromBus)),
		counter("expired_total", "Envelopes from the bus that expired before delivery.", own(&m.expired)),
		counter("not_stored_total", "Copies for offline persistent sessions the session store failed to keep (the publish was refused).", own(&m.notStored)),
		counter("replayed_duplicates_total", "Envelopes the bus delivered again to offline sessions that already held them (not queued twice).", own(&m.duplicates)),
		counter("slow_consumers_total", "Connections closed because the client stopped reading.", own(&m.slowConsumers)),
		counter("queue_dropped_total", "Oldest QoS 1/2 messages dropped from a full client queue (MaxQueued).", own(&m.queueDropped)),
		counter("connect_refused_total", "CONNECTs refused by authentication or authorization.", own(&m.authFailed)),
		counter("session_store_errors_total", "Failed session store operations.", func() int64 {
			if m.a.sessions == nil {
				return 0
			}
			return int64(m.a.sessions.errs.Load())
		}),
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
