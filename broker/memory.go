package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryConfig configures the in-process bus.
type MemoryConfig struct {
	// Spool keeps retained values and durable queues; nil keeps everything
	// in memory only (durable subscriptions then behave as non-durable).
	Spool Spool
	// Node is stamped into Origin.Node of envelopes that have none.
	Node string
	// Logger receives warnings (nil: slog.Default()).
	Logger *slog.Logger
	// WriteThrough makes every envelope at delivery QoS >= 1 for a durable
	// subscription go through the spool, so that Publish returns only once
	// it is stored for each of them and a crash loses nothing acknowledged.
	// Without it the spool is used only when a subscriber falls behind or
	// is away.
	WriteThrough bool
	// MaxQueued bounds the envelopes of each durable queue in the spool
	// and MaxQueuedBytes the total of their Size (0: no bound of that
	// kind). When a write takes a queue past either, envelopes are
	// dropped as QueuePolicy says (DropOldest when empty), counted in the
	// subscription's stats, and reported on DroppedTopic(id). Bounds need
	// a Spool that is a QueueTrimmer.
	MaxQueued      int
	MaxQueuedBytes int64
	QueuePolicy    string
}

// Memory is the in-process Bus: a trie of subscriptions, a bounded queue and
// a delivery goroutine per subscription, retained values in memory backed
// by the spool.
type Memory struct {
	spool        Spool
	node         string
	log          *slog.Logger
	writeThrough bool
	trimmer      QueueTrimmer
	maxQueued    int
	maxBytes     int64
	dropNewest   bool

	mu     sync.RWMutex
	idx    *index
	subs   map[string]*memSub
	closed bool

	rmu      sync.RWMutex
	retained map[string]*Envelope

	published atomic.Uint64
	wg        sync.WaitGroup
}

// MemoryStats are the bus-wide counters.
type MemoryStats struct {
	Published     uint64
	Subscriptions int
	Retained      int
}

// NewMemory returns an in-process bus, loading retained values and durable
// subscriptions from the spool.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	m := &Memory{
		spool:        cfg.Spool,
		writeThrough: cfg.WriteThrough && cfg.Spool != nil,
		node:         cfg.Node,
		log:          cfg.Logger,
		idx:          newIndex(),
		subs:         make(map[string]*memSub),
		retained:     make(map[string]*Envelope),
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	switch cfg.QueuePolicy {
	case "", DropOldest:
	case DropNewest:
		m.dropNewest = true
	default:
		return nil, fmt.Errorf("broker: queue policy %q: want %s or %s", cfg.QueuePolicy, DropOldest, DropNewest)
	}
	if cfg.MaxQueued < 0 || cfg.MaxQueuedBytes < 0 {
		return nil, fmt.Errorf("broker: queue bounds %d envelopes, %d bytes: must not be negative", cfg.MaxQueued, cfg.MaxQueuedBytes)
	}
	if m.node == "" {
		m.node = NodeID()
	}
	if m.spool == nil {
		return m, nil
	}
	if t, ok := m.spool.(QueueTrimmer); ok && (cfg.MaxQueued > 0 || cfg.MaxQueuedBytes > 0) {
		m.trimmer, m.maxQueued, m.maxBytes = t, cfg.MaxQueued, cfg.MaxQueuedBytes
	}
	ctx := context.Background()
	rs, err := m.spool.LoadRetained(ctx)
	if err != nil {
		return nil, fmt.Errorf("broker: load retained: %w", err)
	}
	for _, e := range rs {
		m.retained[e.Topic] = e
	}
	ds, err := m.spool.LoadSubscriptions(ctx)
	if err != nil {
		return nil, fmt.Errorf("broker: load subscriptions: %w", err)
	}
	for _, d := range ds {
		s := m.newSub(SubscribeOptions{ID: d.ID, Filters: d.Filters, QoS: d.QoS, Durable: true})
		s.spilling = true // whatever is queued goes first once it attaches
		if m.trimmer != nil {
			n, size, err := m.trimmer.QueueSize(ctx, d.ID)
			if err != nil {
				return nil, fmt.Errorf("broker: queue size of %q: %w", d.ID, err)
			}
			s.stored.Store(int64(n))
			s.storedBytes.Store(size)
		}
		m.subs[d.ID] = s
		for _, f := range d.Filters {
			m.idx.add(f, s)
		}
	}
	return m, nil
}

// Stats returns the bus-wide counters.
func (m *Memory) Stats() MemoryStats {
	m.mu.RLock()
	n := len(m.subs)
	m.mu.RUnlock()
	m.rmu.RLock()
	r := len(m.retained)
	m.rmu.RUnlock()
	return MemoryStats{Published: m.published.Load(), Subscriptions: n, Retained: r}
}

// Publish implements Bus.
func (m *Memory) Publish(ctx context.Context, e *Envelope) error {
	if err := ValidateTopic(e.Topic); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	if e.QoS > 2 {
		return fmt.Errorf("broker: publish %q: qos %d out of range 0..2", e.Topic, e.QoS)
	}
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Origin.Node == "" {
		e.Origin.Node = m.node
	}
	spooled, err := m.route(ctx, e)
	if err != nil {
		return err
	}
	if m.trimmer != nil {
		for _, s := range spooled {
			m.bound(ctx, s)
		}
	}
	return nil
}

// route stores the retained value and hands e to every matching
// subscription; it returns the subscriptions whose durable queues got it.
func (m *Memory) route(ctx context.Context, e *Envelope) ([]*memSub, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	if e.Retain {
		if err := m.retain(ctx, e); err != nil {
			return nil, err
		}
	}
	m.published.Add(1)

	var spoolIDs []string
	var spooled []*memSub
	// Only a subscription with several filters can match twice; those are
	// few, so a short list beats a map per publish.
	var multi []*memSub
	m.idx.match(e.Topic, func(s *memSub) {
		if len(s.opts.Filters) > 1 {
			if slices.Contains(multi, s) {
				return
			}
			multi = append(multi, s)
		}
		if s.noLocal(e) {
			return
		}
		if s.offer(e) {
			spoolIDs = append(spoolIDs, s.opts.ID)
			spooled = append(spooled, s)
		}
	})
	if len(spooled) == 0 {
		return nil, nil
	}
	err := m.spool.Enqueue(ctx, e, spoolIDs)
	for _, s := range spooled {
		s.spoolDone(err == nil, e.Size())
	}
	if err != nil {
		return nil, fmt.Errorf("broker: publish %q: queue for %d subscribers: %w: %w", e.Topic, len(spoolIDs), ErrStorage, err)
	}
	return spooled, nil
}

// bound trims s's durable queue back to MaxQueued and MaxQueuedBytes when
// a write took it past either, as QueuePolicy says, and reports the drop.
func (m *Memory) bound(ctx context.Context, s *memSub) {
	var dropN int
	var dropBytes int64
	if m.maxQueued > 0 {
		dropN = int(max(0, s.stored.Load()-int64(m.maxQueued)))
	}
	if m.maxBytes > 0 {
		dropBytes = max(0, s.storedBytes.Load()-m.maxBytes)
	}
	if dropN == 0 && dropBytes == 0 {
		return
	}
	n, size, err := m.trimmer.TrimQueue(context.WithoutCancel(ctx), s.opts.ID, dropN, dropBytes, m.dropNewest)
	if err != nil {
		m.log.Warn("broker: trim durable queue", "subscriber", s.opts.ID, "err", err)
		return
	}
	if n == 0 {
		return
	}
	s.stored.Add(-int64(n))
	s.storedBytes.Add(-size)
	total := s.dropped.Add(uint64(n))
	policy := DropOldest
	if m.dropNewest {
		policy = DropNewest
	}
	m.log.Warn("broker: durable queue full, dropped envelopes", "subscriber", s.opts.ID, "dropped", n, "policy", policy,
		"limit", m.maxQueued, "limit_bytes", m.maxBytes)
	b, _ := json.Marshal(DroppedEvent{Subscriber: s.opts.ID, Dropped: n, Total: total, Limit: m.maxQueued,
		LimitBytes: m.maxBytes, Policy: policy})
	ev := &Envelope{Topic: DroppedTopic(s.opts.ID), Payload: b, ContentType: "application/json",
		Origin: Origin{Protocol: ProtoHub, Node: m.node}}
	if err := m.Publish(ctx, ev); err != nil {
		m.log.Warn("broker: report dropped envelopes", "subscriber", s.opts.ID, "err", err)
	}
}

func (m *Memory) retain(ctx context.Context, e *Envelope) error {
	clear := len(e.Payload) == 0
	if m.spool != nil {
		var err error
		if clear {
			err = m.spool.DeleteRetained(ctx, e.Topic)
		} else {
			err = m.spool.SaveRetained(ctx, e)
		}
		if err != nil {
			return fmt.Errorf("broker: retain %q: %w: %w", e.Topic, ErrStorage, err)
		}
	}
	m.rmu.Lock()
	if clear {
		delete(m.retained, e.Topic)
	} else {
		m.retained[e.Topic] = e
	}
	m.rmu.Unlock()
	return nil
}

// Retained implements Bus.
func (m *Memory) Retained(_ context.Context, filter string) ([]*Envelope, error) {
	if err := ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("broker: retained: %w", err)
	}
	now := time.Now()
	var out []*Envelope
	m.rmu.RLock()
	for t, e := range m.retained {
		if Match(filter, t) && !e.Expired(now) {
			out = append(out, e)
		}
	}
	m.rmu.RUnlock()
	slices.SortFunc(out, func(a, b *Envelope) int {
		switch {
		case a.Topic < b.Topic:
			return -1
		case a.Topic > b.Topic:
			return 1
		}
		return 0
	})
	return out, nil
}

// Subscribe implements Bus.
func (m *Memory) Subscribe(ctx context.Context, opts SubscribeOptions, h Handler) (Subscription, error) {
	if h == nil {
		return nil, errors.New("broker: subscribe: nil handler")
	}
	if len(opts.Filters) == 0 {
		return nil, errors.New("broker: subscribe: no filters")
	}
	for _, f := range opts.Filters {
		if err := ValidateFilter(f); err != nil {
			return nil, fmt.Errorf("broker: subscribe: %w", err)
		}
	}
	if opts.QoS > 2 {
		return nil, fmt.Errorf("broker: subscribe: qos %d out of range 0..2", opts.QoS)
	}
	if opts.ID == "" {
		if opts.Durable {
			return nil, errors.New("broker: subscribe: a durable subscription needs an ID")
		}
		opts.ID = "anon-" + NewID()
	}
	if m.spool == nil {
		opts.Durable = false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	s := m.subs[opts.ID]
	if s != nil && s.isAttached() {
		return nil, fmt.Errorf("broker: subscribe %q: %w", opts.ID, ErrDuplicateSubscriber)
	}
	if opts.Durable {
		d := DurableSubscription{ID: opts.ID, Filters: opts.Filters, QoS: opts.QoS}
		if err := m.spool.SaveSubscription(ctx, d); err != nil {
			return nil, fmt.Errorf("broker: subscribe %q: %w: %w", opts.ID, ErrStorage, err)
		}
	}
	if s != nil {
		// A detached durable subscription comes back: keep its queue.
		for _, f := range s.opts.Filters {
			m.idx.remove(f, s)
		}
		if !opts.Durable && s.opts.Durable {
			if err := m.spool.DeleteSubscription(ctx, s.opts.ID); err != nil {
				return nil, fmt.Errorf("broker: subscribe %q: %w: %w", opts.ID, ErrStorage, err)
			}
		}
		old := s
		s = m.newSub(opts)
		s.spilling = old.spilling && opts.Durable
		if opts.Durable {
			s.stored.Store(old.stored.Load())
		}
	} else {
		s = m.newSub(opts)
	}
	m.subs[opts.ID] = s
	for _, f := range opts.Filters {
		m.idx.add(f, s)
	}
	s.attach(h)
	return s, nil
}

// Close implements Bus: it stops every delivery goroutine and waits for
// them. Durable subscriptions keep their stored queues.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	subs := make([]*memSub, 0, len(m.subs))
	for _, s := range m.subs {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	for _, s := range subs {
		s.detach()
	}
	m.wg.Wait()
	return nil
}

func (m *Memory) unsubscribe(s *memSub, keep bool) error {
	s.detach()
	if keep && s.opts.Durable {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs[s.opts.ID] != s {
		return nil
	}
	delete(m.subs, s.opts.ID)
	for _, f := range s.opts.Filters {
		m.idx.remove(f, s)
	}
	if s.opts.Durable && !m.closed {
		if err := m.spool.DeleteSubscription(context.Background(), s.opts.ID); err != nil {
			return fmt.Errorf("broker: unsubscribe %q: %w", s.opts.ID, err)
		}
	}
	return nil
}
