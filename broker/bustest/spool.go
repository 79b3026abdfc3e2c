// Package bustest is the conformance suite every broker.Bus implementation
// runs (the in-process bus, the clustered one), and an in-memory Spool for
// tests that need durable queues without a database.
package bustest

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/hubsmith/hub/broker"
)

// MemSpool is a broker.Spool kept in memory. It survives a bus restart
// within one test (hand the same MemSpool to the new bus), which is what
// the suite needs; the store provides the real, on-disk one.
type MemSpool struct {
	mu       sync.Mutex
	retained map[string]*broker.Envelope
	subs     map[string]broker.DurableSubscription
	queues   map[string][]broker.Queued
	// FailEnqueue, when set, makes Enqueue fail (a full disk).
	FailEnqueue error
}

// EnqueueFault returns FailEnqueue: a bus that keeps its durable queues
// elsewhere (the NATS bus's JetStream) asks it, in its own tests, to fail
// its writes the way this spool's Enqueue fails.
func (m *MemSpool) EnqueueFault() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.FailEnqueue
}

// NewMemSpool returns an empty MemSpool.
func NewMemSpool() *MemSpool {
	return &MemSpool{
		retained: map[string]*broker.Envelope{},
		subs:     map[string]broker.DurableSubscription{},
		queues:   map[string][]broker.Queued{},
	}
}

// SaveRetained implements broker.Spool.
func (m *MemSpool) SaveRetained(_ context.Context, e *broker.Envelope) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retained[e.Topic] = e
	return nil
}

// DeleteRetained implements broker.Spool.
func (m *MemSpool) DeleteRetained(_ context.Context, topic string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.retained, topic)
	return nil
}

// LoadRetained implements broker.Spool.
func (m *MemSpool) LoadRetained(context.Context) ([]*broker.Envelope, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*broker.Envelope
	for _, e := range m.retained {
		out = append(out, e)
	}
	return out, nil
}

// SaveSubscription implements broker.Spool.
func (m *MemSpool) SaveSubscription(_ context.Context, d broker.DurableSubscription) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subs[d.ID] = d
	return nil
}

// DeleteSubscription implements broker.Spool.
func (m *MemSpool) DeleteSubscription(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs, id)
	delete(m.queues, id)
	return nil
}

// LoadSubscriptions implements broker.Spool.
func (m *MemSpool) LoadSubscriptions(context.Context) ([]broker.DurableSubscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []broker.DurableSubscription
	for _, d := range m.subs {
		if q := m.queues[d.ID]; len(q) > 0 {
			d.LastSeq = q[len(q)-1].Seq
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b broker.DurableSubscription) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out, nil
}

// Enqueue implements broker.Spool.
func (m *MemSpool) Enqueue(_ context.Context, e *broker.Envelope, refs []broker.QueueRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailEnqueue != nil {
		return m.FailEnqueue
	}
	for _, r := range refs {
		q := m.queues[r.Subscriber]
		i, _ := slices.BinarySearchFunc(q, r.Seq, func(a broker.Queued, s int64) int { return cmp.Compare(a.Seq, s) })
		m.queues[r.Subscriber] = slices.Insert(q, i, broker.Queued{Seq: r.Seq, Envelope: e})
	}
	return nil
}

// Dequeue implements broker.Spool.
func (m *MemSpool) Dequeue(_ context.Context, id string, after int64, max int) ([]broker.Queued, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []broker.Queued
	for _, q := range m.queues[id] {
		if q.Seq > after && len(out) < max {
			out = append(out, q)
		}
	}
	return out, nil
}

// Remove implements broker.Spool.
func (m *MemSpool) Remove(_ context.Context, id string, seqs []int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.queues[id] = slices.DeleteFunc(m.queues[id], func(q broker.Queued) bool { return slices.Contains(seqs, q.Seq) })
	return nil
}

// Len returns the number of envelopes queued for id.
func (m *MemSpool) Len(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queues[id])
}

var _ broker.Spool = (*MemSpool)(nil)

// QueueSize implements broker.QueueTrimmer.
func (m *MemSpool) QueueSize(_ context.Context, id string) (int, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var size int64
	for _, q := range m.queues[id] {
		size += int64(q.Envelope.Size())
	}
	return len(m.queues[id]), size, nil
}

// TrimQueue implements broker.QueueTrimmer.
func (m *MemSpool) TrimQueue(_ context.Context, id string, n int, bytes int64, newest bool) (int, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queues[id]
	dropped, size := 0, int64(0)
	for dropped < len(q) && (dropped < n || size < bytes) {
		e := q[dropped]
		if newest {
			e = q[len(q)-1-dropped]
		}
		dropped++
		size += int64(e.Envelope.Size())
	}
	if newest {
		m.queues[id] = q[:len(q)-dropped]
	} else {
		m.queues[id] = q[dropped:]
	}
	return dropped, size, nil
}

var _ broker.QueueTrimmer = (*MemSpool)(nil)
