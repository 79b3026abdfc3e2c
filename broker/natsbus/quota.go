package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/broker"
)

// Storage quotas on the NATS bus (Config.Quotas), as the in-process bus
// applies them, counted as follows:
//
//   - Retained values: every hub holds every value of the KV bucket
//     (through its watch) in its in-process part, which counts them by
//     principal and in all; a retained publish is checked there before
//     the KV write. The count is the cluster's, as of the watch: two hubs
//     writing at the same moment may each pass a bound by one value.
//   - Queued bytes: a durable subscription's consumer records its
//     principal. Each hub lists the stream's consumers every quotaPoll
//     and estimates a principal's queued bytes as its consumers' pending
//     envelopes (not yet delivered, or not acknowledged) times the
//     stream's mean envelope size; between two lists it adds what its
//     own publishes queue for consumers no hub is pulling. A QoS >= 1
//     publish by a principal past its bound that would be queued for one
//     of its own subscriptions is refused with broker.ErrQuota. Envelopes
//     of others are still queued for its subscriptions (within the
//     stream's max_bytes), unlike on the in-process bus, which drops them
//     for it.

// quotaPoll is how often a hub lists the consumers for the queued-bytes
// quota.
var quotaPoll = 5 * time.Second

// principalSub is a durable subscription of a principal, as the quota
// sees it.
type principalSub struct {
	specs []broker.Filter
	qos   byte
	// bytes is its queued bytes at the last list, plus what this hub's
	// publishes added since.
	bytes int64
	// pulled: a hub pulls it (it was waiting at the last list, or it is
	// attached here), so what is queued for it goes soon.
	pulled bool
}

// queuedQuota is the hub's view of the principals' queued bytes.
type queuedQuota struct {
	mu    sync.Mutex
	subs  map[string]map[string]*principalSub // principal → consumer → sub
	owner map[string]string                   // consumer → principal
}

// setSub records (specs non-nil) or forgets the durable subscription of
// principal p whose consumer is name.
func (q *queuedQuota) setSub(p, name string, specs []broker.Filter, qos byte, pulled bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.subs == nil {
		q.subs, q.owner = map[string]map[string]*principalSub{}, map[string]string{}
	}
	if old, ok := q.owner[name]; ok && (old != p || specs == nil) {
		delete(q.subs[old], name)
		if len(q.subs[old]) == 0 {
			delete(q.subs, old)
		}
		delete(q.owner, name)
	}
	if specs == nil || p == "" {
		return
	}
	m := q.subs[p]
	if m == nil {
		m = map[string]*principalSub{}
		q.subs[p] = m
	}
	s := m[name]
	if s == nil {
		s = &principalSub{}
		m[name] = s
	}
	s.specs, s.qos, s.pulled = specs, qos, pulled
	q.owner[name] = p
}

// setPulled marks consumer name as pulled by this hub or not.
func (q *queuedQuota) setPulled(name string, pulled bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p, ok := q.owner[name]; ok {
		q.subs[p][name].pulled = pulled
	}
}

// usage is principal p's queued bytes.
func (q *queuedQuota) usage(p string) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	for _, s := range q.subs[p] {
		n += s.bytes
	}
	return n
}

// total is every principal's queued bytes.
func (q *queuedQuota) total() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	for _, m := range q.subs {
		for _, s := range m {
			n += s.bytes
		}
	}
	return n
}

// takes reports whether the subscription queues e (a filter at QoS >= 1
// that is no group's matches it).
func (s *principalSub) takes(e *broker.Envelope) bool {
	for _, f := range s.specs {
		if f.Group == "" && min(e.QoS, f.QoS, s.qos) >= 1 && broker.Match(f.Topic, e.Topic) {
			return true
		}
	}
	return false
}

// checkQueued applies the queued-bytes quota to a QoS >= 1 publish: nil,
// or an error with ErrQuota when its publisher is past its bound and it
// would be queued for one of the publisher's own subscriptions. A publish
// let through counts against the subscriptions no hub pulls.
func (b *Bus) checkQueued(e *broker.Envelope) error {
	lim := b.mem.Quotas().QueuedBytesPerPrincipal
	p := e.Origin.Principal
	if lim <= 0 || p == "" || broker.QuotaExempt(e) {
		return nil
	}
	q := &b.queued
	q.mu.Lock()
	defer q.mu.Unlock()
	var have, add int64
	var idle []*principalSub
	for _, s := range q.subs[p] {
		have += s.bytes
		if !s.takes(e) {
			continue
		}
		add += int64(e.Size())
		if !s.pulled {
			idle = append(idle, s)
		}
	}
	if add == 0 {
		return nil
	}
	if have+add > lim {
		b.mem.CountRefused()
		return fmt.Errorf("natsbus: publish %q: principal %q would queue more than %d bytes for its subscriptions (%d queued): %w: %w",
			e.Topic, p, lim, have, broker.ErrQuota, broker.ErrStorage)
	}
	for _, s := range idle {
		s.bytes += int64(e.Size())
	}
	return nil
}

// pollQueued lists the stream's consumers every quotaPoll while the
// queued-bytes quota is set, until Close.
func (b *Bus) pollQueued() {
	defer b.wg.Done()
	t := time.NewTicker(quotaPoll)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		if b.mem.Quotas().QueuedBytesPerPrincipal <= 0 {
			continue
		}
		if err := b.listQueued(b.ctx); err != nil && b.ctx.Err() == nil {
			b.log.Debug("natsbus: list consumers for the queued-bytes quota", "err", err)
		}
	}
}

// listQueued replaces the hub's view of the queued bytes with the
// consumers' state.
func (b *Bus) listQueued(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	si, err := b.stream.Info(ctx)
	if err != nil {
		return err
	}
	mean := int64(0)
	if si.State.Msgs > 0 {
		mean = int64(si.State.Bytes / si.State.Msgs)
	}
	b.mu.Lock()
	attached := map[string]bool{}
	for _, d := range b.durables {
		attached[d.name] = true
	}
	b.mu.Unlock()
	subs, owner := map[string]map[string]*principalSub{}, map[string]string{}
	l := b.stream.ListConsumers(ctx)
	for ci := range l.Info() {
		var st storedSpecs
		if json.Unmarshal([]byte(ci.Config.Description), &st) != nil || st.Principal == "" {
			continue
		}
		m := subs[st.Principal]
		if m == nil {
			m = map[string]*principalSub{}
			subs[st.Principal] = m
		}
		pending := int64(ci.NumPending) + int64(ci.NumAckPending)
		m[ci.Name] = &principalSub{specs: st.Specs, qos: st.QoS, bytes: pending * mean,
			pulled: ci.NumWaiting > 0 || attached[ci.Name]}
		owner[ci.Name] = st.Principal
	}
	if err := l.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return err
	}
	q := &b.queued
	q.mu.Lock()
	q.subs, q.owner = subs, owner
	q.mu.Unlock()
	return nil
}

// QuotaStats returns the quota counters: the retained values the hub
// holds (the cluster's, through the KV watch), the queued bytes as this
// hub estimates them, and the publishes it refused.
func (b *Bus) QuotaStats() broker.QuotaStats {
	s := b.mem.QuotaStats()
	s.Total.QueuedBytes = b.queued.total()
	return s
}

// SetQuotas replaces the quotas (a configuration reload).
func (b *Bus) SetQuotas(q broker.Quotas) error { return b.mem.SetQuotas(q) }

// Usage returns what principal p holds: its retained values (the
// cluster's) and its queued bytes (this hub's estimate).
func (b *Bus) Usage(p string) broker.Usage {
	u := b.mem.Usage(p)
	u.QueuedBytes = b.queued.usage(p)
	return u
}
