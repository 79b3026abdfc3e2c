package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	// ExternalRetained leaves the retained values to SetRetained: a
	// publish with Retain is delivered as such but stores nothing (a
	// clustered bus keeps them in a replicated store, in its order).
	ExternalRetained bool
	// Quotas bound the retained values and queued bytes per principal and
	// in all (zero: no bounds; see Quotas).
	Quotas Quotas
	// ColdRetainedAbove keeps the payloads of retained values larger than
	// this many bytes in the spool only, read back when asked for, when
	// the Spool is a ColdSpool (0: all in memory). See cold.go.
	ColdRetainedAbove int
}

// Memory is the in-process Bus: a trie of subscriptions, a bounded queue and
// a delivery goroutine per subscription, retained values in memory backed
// by the spool.
type Memory struct {
	spool      Spool
	node       string
	log        *slog.Logger
	trimmer    QueueTrimmer
	maxQueued  int
	maxBytes   int64
	dropNewest bool

	mu     sync.RWMutex
	idx    *index
	subs   map[string]*memSub
	closed bool

	rmu         sync.RWMutex
	retained    map[string]*Envelope
	extRetained bool
	// Cold retained values (cold.go): their payloads are in the spool
	// only; coldSize holds their Size by topic.
	coldStore ColdSpool
	coldAbove int
	coldSize  map[string]int

	published atomic.Uint64
	// dropped, denied and redelivered sum those of every subscription,
	// gone ones included.
	dropped, denied, redelivered atomic.Uint64
	wg                           sync.WaitGroup

	dmu        sync.Mutex
	downgrades map[Downgrade]uint64

	flow flows // traffic by protocol and QoS (flow.go)

	quota quotaState // storage quotas and their accounting (quota.go)
}

// Downgrade names a route on which envelopes were delivered below their
// publish QoS: from the publisher's protocol to the subscriber's, at
// which publish and delivery QoS.
type Downgrade struct {
	From, To      string
	Publish, Sent byte
}

// MemoryStats are the bus-wide counters.
type MemoryStats struct {
	Published     uint64
	Subscriptions int
	Retained      int
	// RetainedCold counts the retained values whose payload is in the
	// spool only (MemoryConfig.ColdRetainedAbove).
	RetainedCold int
	// Dropped, Denied and Redelivered add up every subscription's.
	Dropped, Denied, Redelivered uint64
}

// NewMemory returns an in-process bus, loading retained values and durable
// subscriptions from the spool.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	m := &Memory{
		spool:       cfg.Spool,
		node:        cfg.Node,
		log:         cfg.Logger,
		idx:         newIndex(),
		subs:        make(map[string]*memSub),
		retained:    make(map[string]*Envelope),
		coldSize:    make(map[string]int),
		downgrades:  make(map[Downgrade]uint64),
		extRetained: cfg.ExternalRetained,
	}
	if err := cfg.Quotas.validate(); err != nil {
		return nil, err
	}
	q := cfg.Quotas
	m.quota.q.Store(&q)
	m.quota.retained = make(map[string]retainedUse)
	m.quota.queued = make(map[string]*atomic.Int64)
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
	if t, ok := m.spool.(QueueTrimmer); ok {
		m.trimmer, m.maxQueued, m.maxBytes = t, cfg.MaxQueued, cfg.MaxQueuedBytes
	}
	ctx := context.Background()
	if err := m.loadRetained(ctx, cfg.ColdRetainedAbove); err != nil {
		return nil, err
	}
	ds, err := m.spool.LoadSubscriptions(ctx)
	if err != nil {
		return nil, fmt.Errorf("broker: load subscriptions: %w", err)
	}
	for _, d := range ds {
		s := m.newSub(SubscribeOptions{ID: d.ID, Specs: d.Specs, Filters: d.Filters, QoS: d.QoS, Durable: true, Principal: d.Principal})
		s.spilling = true // whatever is queued goes first once it attaches
		s.nextSeq = d.LastSeq + 1
		if m.trimmer != nil {
			n, size, err := m.trimmer.QueueSize(ctx, d.ID)
			if err != nil {
				return nil, fmt.Errorf("broker: queue size of %q: %w", d.ID, err)
			}
			s.stored.Store(int64(n))
			s.storedBytes.Store(size)
			s.charge(size)
		}
		m.subs[d.ID] = s
		m.index(s, specsOf(s.opts))
	}
	return m, nil
}

// Stats returns the bus-wide counters.
func (m *Memory) Stats() MemoryStats {
	m.mu.RLock()
	n := len(m.subs)
	m.mu.RUnlock()
	m.rmu.RLock()
	r, cold := len(m.retained), len(m.coldSize)
	m.rmu.RUnlock()
	return MemoryStats{Published: m.published.Load(), Subscriptions: n, Retained: r, RetainedCold: cold,
		Dropped: m.dropped.Load(), Denied: m.denied.Load(), Redelivered: m.redelivered.Load()}
}

// Publish implements Bus.
func (m *Memory) Publish(ctx context.Context, e *Envelope) error {
	ms, refs, err := m.publish(ctx, e)
	if err != nil || len(refs) == 0 {
		return err
	}
	return m.store(ctx, e, ms, refs)
}

// PublishAsync implements Bus: the routing is done when it returns, the
// store write (when there is one) goes on without the caller: through the
// spool's EnqueueAsync when it has one (AsyncSpool), else in a goroutine.
func (m *Memory) PublishAsync(ctx context.Context, e *Envelope, done func(error)) error {
	ms, refs, err := m.publish(ctx, e)
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		done(nil)
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	as, ok := m.spool.(AsyncSpool)
	if !ok {
		go func() { done(m.store(ctx, e, ms, refs)) }()
		return nil
	}
	early := earlyMatch(ms, refs)
	if early != nil {
		refs[0].Delivered = true
	}
	withdraw := as.EnqueueAsync(ctx, e, refs, func(err error) {
		err = m.stored(e, ms, refs, err)
		if err != nil || m.trimmer == nil || !m.overBounds(ms) {
			done(err)
			return
		}
		// Trimming writes to the spool: not on the spool's goroutine.
		go func() {
			m.trim(ctx, ms)
			done(nil)
		}()
	})
	if early != nil && withdraw != nil {
		early.s.deliverEarly(early.it, func() bool {
			if !withdraw() {
				return false
			}
			m.withdrawn(e, ms)
			done(nil)
			return true
		})
	}
	return nil
}

// earlyMatch returns the match of ms whose delivery may go out before
// its store write is committed, or nil. That is a QoS 1 delivery to the
// one durable subscriber of a publish, already waiting in its memory
// queue. Should its acknowledgement come before the store's writer begins
// the write, the write is withdrawn: the envelope was delivered and
// acknowledged, so there is nothing left to keep, and the publisher is
// acknowledged then (RabbitMQ does the same with a persistent message
// consumed before it reached the disk). A subscriber that keeps up then
// costs the store no insert and no delete. A crash before the commit can
// only bring the envelope again (the publisher was not acknowledged, and
// resends it): QoS 1 allows that, QoS 2 does not, so a QoS 2 delivery
// waits for the commit, as do the copies of a publish to several durable
// subscribers.
func earlyMatch(ms []match, refs []QueueRef) *match {
	if len(refs) != 1 {
		return nil
	}
	for i := range ms {
		if mt := &ms[i]; mt.durable && mt.it != nil && mt.qos == 1 {
			return mt
		}
	}
	return nil
}

// withdrawn settles a publish whose one store write was withdrawn: its
// durable subscriber had acknowledged it.
func (m *Memory) withdrawn(e *Envelope, ms []match) {
	for i := range ms {
		switch {
		case ms[i].durable:
			ms[i].s.withdrawnAs(&ms[i], e.Size())
		case ms[i].it != nil:
			ms[i].s.release(ms[i].it, true)
		}
	}
}

// publish validates and routes e; it returns the matches and the durable
// queue entries still to write (see store).
func (m *Memory) publish(ctx context.Context, e *Envelope) ([]match, []QueueRef, error) {
	if err := ValidateTopic(e.Topic); err != nil {
		return nil, nil, fmt.Errorf("broker: publish: %w", err)
	}
	if e.QoS > 2 {
		return nil, nil, fmt.Errorf("broker: publish %q: qos %d out of range 0..2", e.Topic, e.QoS)
	}
	if e.ID == "" || e.Time.IsZero() {
		now := time.Now() // one clock read a message, not two
		if e.ID == "" {
			e.ID = NewIDAt(now)
		}
		if e.Time.IsZero() {
			e.Time = now
		}
	}
	if e.Origin.Node == "" {
		e.Origin.Node = m.node
	}
	ms, refs, over, err := m.route(ctx, e)
	for _, s := range over {
		m.reportDrops(s, 1) // without the bus's lock: it publishes
	}
	return ms, refs, err
}

// matchBufs holds the match arrays of fan-outs (see route); one grown
// past maxPooledMatches is left to the collector.
var matchBufs = sync.Pool{New: func() any { return new([]match) }}

const maxPooledMatches = 4096

// route stores the retained value and offers e to every matching
// subscription, in order; it returns the matches, the durable queue
// entries still to write (see store) and the subscriptions e was dropped
// for by their owner's quota (to report).
func (m *Memory) route(ctx context.Context, e *Envelope) ([]match, []QueueRef, []*memSub, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, nil, nil, ErrClosed
	}
	// Most publishes match a few subscriptions: their matches live on
	// the stack unless they must outlive route (a store write, which gets
	// a copy). A fan-out's take an array from matchBufs, given back here.
	var buf [4]match
	ms := buf[:0]
	var pooled *[]match
	defer func() {
		if pooled != nil && cap(ms) <= maxPooledMatches {
			clear(ms[:cap(ms)])
			*pooled = ms[:0]
			matchBufs.Put(pooled)
		}
	}()
	gr := groupRouteOf(ctx) // grouproute.go
	m.idx.match(e.Topic, func(fe *fentry) {
		if !gr.takes(fe.f) {
			return
		}
		s := fe.s
		if fe.f.NoLocal && s.self(e) {
			return
		}
		qos := min(e.QoS, fe.f.QoS, s.opts.QoS)
		// Only a subscription with several filters can match twice; a
		// short scan beats a map per publish.
		for i := range ms {
			if ms[i].s == s {
				ms[i].qos = max(ms[i].qos, qos)
				ms[i].rap = ms[i].rap || fe.f.RetainAsPublished
				if fe.f.ID != 0 {
					ms[i].ids = append(ms[i].ids, fe.f.ID)
				}
				return
			}
		}
		mt := match{s: s, qos: qos, rap: fe.f.RetainAsPublished}
		if fe.f.ID != 0 {
			mt.ids = []int{fe.f.ID}
		}
		if len(ms) == cap(ms) && pooled == nil {
			pooled = matchBufs.Get().(*[]match)
			ms = append((*pooled)[:0], ms...)
		}
		ms = append(ms, mt)
	})
	if len(ms) > 0 {
		ms = slices.DeleteFunc(ms, func(mt match) bool { return mt.s.opts.LiveQoS0Only && mt.qos >= 1 })
	}
	ms, over, err := m.checkQueued(e, ms)
	if err != nil {
		return nil, nil, nil, err
	}
	if e.Retain && !m.extRetained {
		if err := m.retain(ctx, e); err != nil {
			return nil, nil, nil, err
		}
	}
	m.published.Add(1)
	m.flow.get(e.Origin.Protocol, e.QoS).in.Add(1)
	// When the envelope must be stored, every delivery waits for the
	// write: a publish the store refuses is delivered to nobody. The one
	// exception is PublishAsync's early delivery (see earlyMatch): its
	// one durable QoS 1 subscriber may have it before the write fails, a
	// duplicate when the refused publisher sends it again.
	hold := false
	for i := range ms {
		if ms[i].s.opts.Durable && ms[i].qos >= 1 && m.spool != nil {
			hold = true
			break
		}
	}
	var refs []QueueRef
	for i := range ms {
		mt := &ms[i]
		if len(mt.ids) > 1 {
			slices.Sort(mt.ids)
		}
		if mt.qos < e.QoS {
			m.downgraded(e, mt)
		}
		mt.s.offer(e, mt, hold)
		if mt.durable {
			refs = append(refs, QueueRef{Subscriber: mt.s.opts.ID, Seq: mt.seq})
		}
	}
	if len(refs) == 0 {
		return nil, nil, over, nil // nothing waits for a store write
	}
	return slices.Clone(ms), refs, over, nil
}

// store writes e once, with its place in each durable queue, then lets
// the held deliveries go (or drops them all when the write failed) and
// applies the queue bounds. It runs without the bus's lock, so that a
// subscribe never waits for a publisher's fsync.
func (m *Memory) store(ctx context.Context, e *Envelope, ms []match, refs []QueueRef) error {
	err := m.stored(e, ms, refs, m.spool.Enqueue(ctx, e, refs))
	if err == nil && m.trimmer != nil {
		m.trim(ctx, ms)
	}
	return err
}

// stored lets the deliveries of e go once its spool write ended with err
// (all dropped when it failed), and returns the publish's error.
func (m *Memory) stored(e *Envelope, ms []match, refs []QueueRef, err error) error {
	for i := range ms {
		switch {
		case ms[i].durable:
			ms[i].s.storedAs(&ms[i], err == nil, e.Size())
		case ms[i].it != nil:
			ms[i].s.release(ms[i].it, err == nil)
		}
	}
	if err != nil {
		return fmt.Errorf("broker: publish %q: queue for %d subscribers: %w: %w", e.Topic, len(refs), ErrStorage, err)
	}
	return nil
}

// trim applies the queue bounds to the durable queues e was written to.
func (m *Memory) trim(ctx context.Context, ms []match) {
	for i := range ms {
		if ms[i].durable {
			m.bound(ctx, ms[i].s)
		}
	}
}

// overBounds reports whether a durable queue among ms is past a bound.
func (m *Memory) overBounds(ms []match) bool {
	for i := range ms {
		if ms[i].durable && ms[i].s.overBound() {
			return true
		}
	}
	return false
}

// downgraded counts a delivery below the publish QoS.
func (m *Memory) downgraded(e *Envelope, mt *match) {
	mt.s.downgraded.Add(1)
	k := Downgrade{From: e.Origin.Protocol, To: mt.s.opts.Protocol, Publish: e.QoS, Sent: mt.qos}
	m.dmu.Lock()
	m.downgrades[k]++
	m.dmu.Unlock()
}

// Downgrades returns how many envelopes each route delivered below their
// publish QoS (a NON CoAP observer, an SSE stream, a QoS 0 subscription):
// no downgrade is silent.
func (m *Memory) Downgrades() map[Downgrade]uint64 {
	m.dmu.Lock()
	defer m.dmu.Unlock()
	return maps.Clone(m.downgrades)
}

// bound trims s's durable queue back to its bounds when a write took it
// past either, as QueuePolicy says, and reports the drop.
func (m *Memory) bound(ctx context.Context, s *memSub) {
	// One trim at a time, each seeing what the previous one left:
	// concurrent ones would each drop the whole excess.
	s.tmu.Lock()
	defer s.tmu.Unlock()
	dropN, dropBytes := s.excess()
	if dropN == 0 && dropBytes == 0 {
		return
	}
	id := s.options().ID
	n, size, err := m.trimmer.TrimQueue(context.WithoutCancel(ctx), id, dropN, dropBytes, s.dropNewest())
	if err != nil {
		m.log.Warn("broker: trim durable queue", "subscriber", id, "err", err)
		return
	}
	if n == 0 {
		return
	}
	s.stored.Add(-int64(n))
	s.storedBytes.Add(-size)
	s.charge(-size)
	s.drop(uint64(n), 1) // a durable queue holds QoS >= 1
	m.reportDrops(s, n)
}

// dropReportEvery paces the drop reports of one subscription: the first
// overflow is reported at once, later ones at most this often, each with
// the drops since the last report and the exact total.
const dropReportEvery = time.Second

// reportDrops counts n envelopes dropped from s's queue and publishes a
// DroppedEvent now or, paced, a little later.
func (m *Memory) reportDrops(s *memSub, n int) {
	s.dmu.Lock()
	s.overflowed += uint64(n)
	s.unreported += n
	now := time.Now()
	if s.reportTimer != nil {
		s.dmu.Unlock()
		return // a report is due and will carry these
	}
	if wait := s.lastReport.Add(dropReportEvery).Sub(now); wait > 0 {
		s.reportTimer = time.AfterFunc(wait, func() { m.flushDrops(s) })
		s.dmu.Unlock()
		return
	}
	s.dmu.Unlock()
	m.flushDrops(s)
}

// flushDrops publishes what reportDrops counted since the last report.
func (m *Memory) flushDrops(s *memSub) {
	s.dmu.Lock()
	n, total := s.unreported, s.overflowed
	s.unreported, s.reportTimer, s.lastReport = 0, nil, time.Now()
	s.dmu.Unlock()
	if n == 0 {
		return
	}
	maxN, maxB := s.bounds()
	opts := s.options()
	policy := DropOldest
	if s.dropNewest() {
		policy = DropNewest
	}
	var quota int64
	if s.owner.Load() != nil {
		quota = m.quota.get().QueuedBytesPerPrincipal
	}
	m.log.Warn("broker: durable queue full, dropped envelopes", "subscriber", opts.ID, "dropped", n, "total", total,
		"policy", policy, "limit", maxN, "limit_bytes", maxB, "principal", opts.Principal, "quota_bytes", quota)
	b, _ := json.Marshal(DroppedEvent{Subscriber: opts.ID, Dropped: n, Total: total, Limit: maxN,
		LimitBytes: maxB, Policy: policy, QuotaBytes: quota})
	topic := opts.DroppedTopic
	if topic == "" {
		topic = DroppedTopic(opts.ID)
	}
	ev := &Envelope{Topic: topic, Payload: b, ContentType: "application/json",
		Origin: Origin{Protocol: ProtoHub, Node: m.node}}
	if err := m.Publish(context.Background(), ev); err != nil && !errors.Is(err, ErrClosed) {
		m.log.Warn("broker: report dropped envelopes", "subscriber", opts.ID, "err", err)
	}
}

func (m *Memory) retain(ctx context.Context, e *Envelope) error {
	clear := len(e.Payload) == 0
	m.rmu.RLock()
	err := m.quota.checkRetained(m.retained[e.Topic], m.sizeLocked(e.Topic), e)
	m.rmu.RUnlock()
	if err != nil {
		m.quota.refused.Add(1)
		return fmt.Errorf("broker: retain %q: %w", e.Topic, err)
	}
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
	m.quota.retainedAccount(m.retained[e.Topic], m.sizeLocked(e.Topic), e, e.Size())
	delete(m.coldSize, e.Topic)
	switch {
	case clear:
		delete(m.retained, e.Topic)
	case m.coldStore != nil && len(e.Payload) > m.coldAbove:
		m.retained[e.Topic] = m.stub(e)
	default:
		m.retained[e.Topic] = e
	}
	m.rmu.Unlock()
	return nil
}

// SetRetained makes e its topic's retained value, or clears it when e has
// no payload, without delivering it (see MemoryConfig.ExternalRetained).
func (m *Memory) SetRetained(e *Envelope) {
	m.rmu.Lock()
	defer m.rmu.Unlock()
	m.quota.retainedAccount(m.retained[e.Topic], m.sizeLocked(e.Topic), e, e.Size())
	delete(m.coldSize, e.Topic)
	switch {
	case len(e.Payload) == 0:
		delete(m.retained, e.Topic)
	case m.coldStore != nil && len(e.Payload) > m.coldAbove:
		m.retained[e.Topic] = m.stub(e) // SetColdReader
	default:
		m.retained[e.Topic] = e
	}
}

// ClearRetained clears topic's retained value without a publish.
func (m *Memory) ClearRetained(topic string) {
	m.rmu.Lock()
	defer m.rmu.Unlock()
	m.quota.retainedAccount(m.retained[topic], m.sizeLocked(topic), nil, 0)
	delete(m.coldSize, topic)
	delete(m.retained, topic)
}

// Retained implements Bus.
func (m *Memory) Retained(ctx context.Context, filter string) ([]*Envelope, error) {
	if err := ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("broker: retained: %w", err)
	}
	now := time.Now()
	var out []*Envelope
	var cold []string
	m.rmu.RLock()
	for t, e := range m.retained {
		if Match(filter, t) && !e.Expired(now) {
			if _, ok := m.coldSize[t]; ok {
				cold = append(cold, t)
				continue
			}
			out = append(out, e)
		}
	}
	m.rmu.RUnlock()
	out = append(out, m.readCold(ctx, cold)...)
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

// specsOf returns the filters of opts with their options: Specs, then
// Filters at opts.QoS.
func specsOf(opts SubscribeOptions) []Filter {
	out := slices.Clone(opts.Specs)
	for _, f := range opts.Filters {
		out = append(out, Filter{Topic: f, QoS: opts.QoS})
	}
	return out
}

// index puts s's filters in the trie (m.mu held).
func (m *Memory) index(s *memSub, fs []Filter) {
	for _, f := range fs {
		e := &fentry{s: s, f: f}
		s.entries = append(s.entries, e)
		m.idx.add(e)
	}
}

// unindex takes s's filters out of the trie (m.mu held).
func (m *Memory) unindex(s *memSub) {
	for _, e := range s.entries {
		m.idx.remove(e)
	}
	s.entries = nil
}

// Subscribe implements Bus: h is called for one envelope at a time, and
// its return acknowledges it. A durable QoS >= 1 delivery h fails is
// retried after a back-off, before anything newer.
func (m *Memory) Subscribe(ctx context.Context, opts SubscribeOptions, h Handler) (Subscription, error) {
	if h == nil {
		return nil, errors.New("broker: subscribe: nil handler")
	}
	opts.MaxAckPending = 1
	var fails int
	var sub *memSub
	dh := func(d *Delivery) {
		err := h(d.ctx, d.Envelope)
		if err == nil {
			fails = 0
			d.Ack()
			return
		}
		if !sub.opts.Durable || d.QoS == 0 || d.it.seq == 0 {
			sub.drop(1, d.QoS)
			m.log.Debug("broker: handler refused an envelope", "subscriber", sub.opts.ID, "topic", d.Envelope.Topic, "err", err)
			d.Ack()
			return
		}
		fails++
		wait := min(50*time.Millisecond<<min(fails-1, 7), 5*time.Second)
		m.log.Warn("broker: handler failed, retrying", "subscriber", sub.opts.ID, "topic", d.Envelope.Topic, "err", err, "in", wait)
		d.NackAfter(wait)
	}
	s, err := m.consume(ctx, opts, dh, func(s *memSub) { sub = s })
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Consume implements Bus.
func (m *Memory) Consume(ctx context.Context, opts SubscribeOptions, h DeliveryHandler) (Subscription, error) {
	if h == nil {
		return nil, errors.New("broker: consume: nil handler")
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = DefaultMaxAckPending
	}
	return m.consume(ctx, opts, h, nil)
}

func (m *Memory) consume(ctx context.Context, opts SubscribeOptions, h DeliveryHandler, made func(*memSub)) (*handle, error) {
	switch opts.QueuePolicy {
	case "", DropOldest, DropNewest:
	default:
		return nil, fmt.Errorf("broker: subscribe: queue policy %q: want %s or %s", opts.QueuePolicy, DropOldest, DropNewest)
	}
	fs := specsOf(opts)
	for _, f := range fs {
		if err := validateFilter(f); err != nil {
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
	opts.Specs, opts.Filters = fs, nil
	// A detach of this id still stopping its delivery goroutine ends
	// first, so that two goroutines never deliver for one subscription.
	m.mu.RLock()
	prev := m.subs[opts.ID]
	m.mu.RUnlock()
	if prev != nil {
		if ch := prev.stopping(); ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, fmt.Errorf("broker: subscribe %q: %w", opts.ID, ctx.Err())
			}
		}
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
	unchanged := false
	if opts.KeepFilters && s != nil && s.opts.Durable && opts.Durable {
		fs = nil
		for _, e := range s.entries {
			fs = append(fs, e.f)
		}
		opts.Specs = fs
		unchanged = s.opts.QoS == opts.QoS && s.opts.Principal == opts.Principal
	}
	if opts.Durable && !unchanged {
		d := DurableSubscription{ID: opts.ID, QoS: opts.QoS, Specs: fs, Principal: opts.Principal}
		if err := m.spool.SaveSubscription(ctx, d); err != nil {
			return nil, fmt.Errorf("broker: subscribe %q: %w: %w", opts.ID, ErrStorage, err)
		}
	}
	if s != nil {
		// A detached durable subscription comes back: keep its queue
		// and its state.
		m.unindex(s)
		if !opts.Durable && s.opts.Durable {
			if err := m.spool.DeleteSubscription(ctx, s.opts.ID); err != nil {
				return nil, fmt.Errorf("broker: subscribe %q: %w: %w", opts.ID, ErrStorage, err)
			}
		}
		s.flushAcks(ctx)
		s.mu.Lock()
		if opts.QueueLen <= 0 {
			opts.QueueLen = DefaultQueueLen
		}
		s.opts = opts
		if !opts.Durable {
			s.charge(-s.storedBytes.Load())
			s.stored.Store(0)
			s.storedBytes.Store(0)
		}
		s.setOwner(opts)
		s.mu.Unlock()
	} else {
		s = m.newSub(opts)
	}
	m.subs[opts.ID] = s
	m.index(s, fs)
	if made != nil {
		made(s)
	}
	s.attach(h)
	s.mu.Lock()
	hd := &handle{s: s, n: s.attaches}
	s.mu.Unlock()
	if opts.SendRetained {
		for _, f := range fs {
			if f.Group == "" {
				s.queueRetained(m.retainedFor(f.Topic), f)
			}
		}
	}
	return hd, nil
}

// validateFilter checks a filter and its options.
func validateFilter(f Filter) error {
	if err := ValidateFilter(f.Topic); err != nil {
		return err
	}
	if f.QoS > 2 {
		return fmt.Errorf("filter %q: qos %d out of range 0..2", f.Topic, f.QoS)
	}
	if f.RetainHandling > 2 {
		return fmt.Errorf("filter %q: retain handling %d out of range 0..2", f.Topic, f.RetainHandling)
	}
	return nil
}

// retainedFor is Retained without validation or error.
func (m *Memory) retainedFor(filter string) []*Envelope {
	es, _ := m.Retained(context.Background(), filter)
	return es
}

func (m *Memory) addFilter(ctx context.Context, s *memSub, f Filter) (bool, error) {
	if err := validateFilter(f); err != nil {
		return false, fmt.Errorf("broker: add filter: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false, ErrClosed
	}
	if m.subs[s.opts.ID] != s {
		m.mu.Unlock()
		return false, fmt.Errorf("broker: add filter to %q: not subscribed", s.opts.ID)
	}
	existed := false
	s.mu.Lock()
	for i, e := range s.entries {
		if e.f.Topic == f.Topic && e.f.Group == f.Group {
			m.idx.remove(e)
			s.entries = slices.Delete(s.entries, i, i+1)
			existed = true
			break
		}
	}
	e := &fentry{s: s, f: f}
	s.entries = append(s.entries, e)
	s.mu.Unlock()
	m.idx.add(e)
	err := m.saveFilters(ctx, s)
	m.mu.Unlock()
	if err != nil {
		return existed, err
	}
	if f.Group == "" && (f.RetainHandling == 0 || f.RetainHandling == 1 && !existed) {
		s.queueRetained(m.retainedFor(f.Topic), f)
	}
	return existed, nil
}

func (m *Memory) removeFilter(ctx context.Context, s *memSub, topic, grp string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs[s.opts.ID] != s {
		return false, nil
	}
	s.mu.Lock()
	existed := false
	for i, e := range s.entries {
		if e.f.Topic == topic && e.f.Group == grp {
			m.idx.remove(e)
			s.entries = slices.Delete(s.entries, i, i+1)
			existed = true
			break
		}
	}
	s.mu.Unlock()
	if !existed {
		return false, nil
	}
	return true, m.saveFilters(ctx, s)
}

// saveFilters stores a durable subscription's filters (m.mu held).
func (m *Memory) saveFilters(ctx context.Context, s *memSub) error {
	if !s.opts.Durable {
		return nil
	}
	s.mu.Lock()
	d := DurableSubscription{ID: s.opts.ID, QoS: s.opts.QoS}
	for _, e := range s.entries {
		d.Specs = append(d.Specs, e.f)
	}
	s.mu.Unlock()
	if err := m.spool.SaveSubscription(ctx, d); err != nil {
		return fmt.Errorf("broker: save filters of %q: %w: %w", s.opts.ID, ErrStorage, err)
	}
	return nil
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
		s.dmu.Lock()
		if s.reportTimer != nil {
			s.reportTimer.Stop()
			s.reportTimer = nil
		}
		s.dmu.Unlock()
	}
	m.wg.Wait()
	return nil
}

func (m *Memory) unsubscribe(h *handle, keep bool) error {
	if !h.current() {
		return nil // attached again since: that attachment is not ours
	}
	s := h.s
	s.detach()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs[s.opts.ID] != s || keep && s.opts.Durable {
		return nil
	}
	delete(m.subs, s.opts.ID)
	m.unindex(s)
	s.charge(-s.storedBytes.Load())
	s.owner.Store(nil)
	if s.opts.Durable && !m.closed {
		if err := m.spool.DeleteSubscription(context.Background(), s.opts.ID); err != nil {
			return fmt.Errorf("broker: unsubscribe %q: %w", s.opts.ID, err)
		}
	}
	return nil
}

// Import implements Importer.
func (m *Memory) Import(ctx context.Context, id string, e *Envelope) error {
	m.mu.RLock()
	s := m.subs[id]
	m.mu.RUnlock()
	if s == nil || !s.opts.Durable {
		return fmt.Errorf("broker: import into %q: no durable subscription", id)
	}
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	mt := &match{s: s, qos: max(e.QoS, 1)}
	s.mu.Lock()
	mt.seq, mt.durable = s.nextSeq, true
	s.nextSeq++
	s.writing = append(s.writing, mt.seq)
	s.spilling = true
	s.mu.Unlock()
	s.charge(int64(e.Size()))
	err := m.spool.Enqueue(ctx, e, []QueueRef{{Subscriber: id, Seq: mt.seq}})
	s.storedAs(mt, err == nil, e.Size())
	if err != nil {
		return fmt.Errorf("broker: import into %q: %w", id, err)
	}
	return nil
}

// Queued implements Importer.
func (m *Memory) Queued(ctx context.Context, id string) ([]*Envelope, error) {
	m.mu.RLock()
	s := m.subs[id]
	m.mu.RUnlock()
	if s == nil || !s.opts.Durable {
		return nil, nil
	}
	var out []*Envelope
	var after int64
	for {
		qs, err := m.spool.Dequeue(ctx, id, after, spoolBatch)
		if err != nil {
			return nil, fmt.Errorf("broker: queue of %q: %w", id, err)
		}
		if len(qs) == 0 {
			return out, nil
		}
		for _, q := range qs {
			out = append(out, q.Envelope)
			after = q.Seq
		}
	}
}

var _ Importer = (*Memory)(nil)
