package broker

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Flow is the traffic of one protocol at one QoS: envelopes its clients
// published onto the bus (In, by publish QoS), deliveries the bus handed
// to its subscribers (Out, by delivery QoS), and envelopes its
// subscribers lost (Dropped: full queues, expiry, a refusing handler, a
// trimmed durable queue; by delivery QoS). The dashboard's rates in, out
// and dropped per protocol and QoS are the differences of two readings.
type Flow struct {
	Protocol string `json:"protocol"`
	QoS      byte   `json:"qos"`
	In       uint64 `json:"in"`
	Out      uint64 `json:"out"`
	Dropped  uint64 `json:"dropped"`
}

type flowKey struct {
	proto string
	qos   byte
}

type flowCounts struct{ in, out, dropped atomic.Uint64 }

// flows counts Flow by protocol and QoS. Lookups take a read lock; a new
// key (a protocol's first envelope at a QoS) the write lock once.
type flows struct {
	mu sync.RWMutex
	m  map[flowKey]*flowCounts
}

func (f *flows) get(proto string, qos byte) *flowCounts {
	if proto == "" {
		proto = "internal"
	}
	k := flowKey{proto, min(qos, 2)}
	f.mu.RLock()
	c := f.m[k]
	f.mu.RUnlock()
	if c != nil {
		return c
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[flowKey]*flowCounts)
	}
	if c = f.m[k]; c == nil {
		c = new(flowCounts)
		f.m[k] = c
	}
	return c
}

// Flows returns the traffic counters by protocol and QoS, sorted, since
// the bus started.
func (m *Memory) Flows() []Flow {
	m.flow.mu.RLock()
	out := make([]Flow, 0, len(m.flow.m))
	for k, c := range m.flow.m {
		out = append(out, Flow{Protocol: k.proto, QoS: k.qos, In: c.in.Load(), Out: c.out.Load(), Dropped: c.dropped.Load()})
	}
	m.flow.mu.RUnlock()
	slices.SortFunc(out, func(a, b Flow) int {
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		return int(a.QoS) - int(b.QoS)
	})
	return out
}
