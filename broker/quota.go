package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrQuota marks a publish refused because a principal is past one of its
// storage quotas (retained values, queued bytes) or the bus past a global
// one. Errors that carry it carry ErrStorage too, so every adapter that
// maps a storage error (MQTT 0x97, HTTP 507, CoAP 5.03, an XMPP
// resource-constraint) maps this one the same way without knowing it.
var ErrQuota = errors.New("storage quota exceeded")

// Quotas bound what the bus keeps for each principal and in all. A zero
// field is no bound of that kind. Envelopes of the hub itself (Origin
// Protocol ProtoHub, topics starting with $) and of bridges are never
// refused, and count in the totals only.
type Quotas struct {
	// RetainedPerPrincipal and RetainedBytesPerPrincipal bound the
	// retained values owned by one principal (the Origin.Principal of the
	// envelope that set them) by count and by Size total;
	// RetainedTotal and RetainedBytesTotal bound them all. A retained
	// publish past a bound is refused with ErrQuota; clearing or
	// overwriting a value frees its share.
	RetainedPerPrincipal      int
	RetainedBytesPerPrincipal int64
	RetainedTotal             int
	RetainedBytesTotal        int64
	// QueuedBytesPerPrincipal bounds the Size total of the envelopes in
	// the durable queues of all the subscriptions one principal owns
	// (SubscribeOptions.Principal). Past it, a publish by that principal
	// itself is refused with ErrQuota (the greedy one learns of it), and
	// an envelope of anybody else is not queued for that principal's
	// subscriptions: it is dropped for them, counted and reported on
	// their DroppedTopic, and goes on to everyone else.
	QueuedBytesPerPrincipal int64
}

// validate names the negative field, if any.
func (q Quotas) validate() error {
	for name, v := range map[string]int64{
		"RetainedPerPrincipal": int64(q.RetainedPerPrincipal), "RetainedBytesPerPrincipal": q.RetainedBytesPerPrincipal,
		"RetainedTotal": int64(q.RetainedTotal), "RetainedBytesTotal": q.RetainedBytesTotal,
		"QueuedBytesPerPrincipal": q.QueuedBytesPerPrincipal,
	} {
		if v < 0 {
			return fmt.Errorf("broker: quota %s %d: must not be negative (0: no bound)", name, v)
		}
	}
	return nil
}

// Usage is what one principal, or the whole bus, holds in storage.
type Usage struct {
	Retained      int
	RetainedBytes int64
	QueuedBytes   int64
}

// QuotaStats are the quota counters of the bus.
type QuotaStats struct {
	// Total is what the bus holds in all.
	Total Usage
	// Refused counts publishes refused with ErrQuota; Dropped counts
	// envelopes not queued for a subscription whose owner was past its
	// queued-bytes quota.
	Refused, Dropped uint64
}

// retainedUse is a count and a byte total.
type retainedUse struct {
	n     int
	bytes int64
}

// quotaState is the bus's accounting. Retained usage is guarded by
// Memory.rmu; queued usage is one atomic counter per principal.
type quotaState struct {
	q atomic.Pointer[Quotas]

	retained      map[string]retainedUse // by principal
	retainedTotal retainedUse

	qmu    sync.Mutex
	queued map[string]*atomic.Int64

	refused, dropped atomic.Uint64
}

// exempt reports whether e is the hub's own (a $ topic, the hub's or a
// bridge's publish): never refused by a quota, counted in the totals only.
func exempt(e *Envelope) bool {
	return e.Origin.Protocol == ProtoHub || e.Origin.Protocol == ProtoBridge || strings.HasPrefix(e.Topic, "$")
}

// queuedOf returns the queued-bytes counter of principal p (nil for "",
// which is charged nothing).
func (qs *quotaState) queuedOf(p string) *atomic.Int64 {
	if p == "" {
		return nil
	}
	qs.qmu.Lock()
	defer qs.qmu.Unlock()
	c := qs.queued[p]
	if c == nil {
		c = new(atomic.Int64)
		qs.queued[p] = c
	}
	return c
}

// retainedAccount moves the accounting from old (nil: none) to e (nil or
// empty payload: cleared), of Size oldSize and newSize (a cold value's
// stub does not carry its payload); Memory.rmu held for writing. The hub's own
// values count in the total only.
func (qs *quotaState) retainedAccount(old *Envelope, oldSize int, e *Envelope, newSize int) {
	if old != nil {
		if !exempt(old) {
			u := qs.retained[old.Origin.Principal]
			u.n--
			u.bytes -= int64(oldSize)
			if u.n <= 0 {
				delete(qs.retained, old.Origin.Principal)
			} else {
				qs.retained[old.Origin.Principal] = u
			}
		}
		qs.retainedTotal.n--
		qs.retainedTotal.bytes -= int64(oldSize)
	}
	if e != nil && newSize > len(e.Topic) { // a payload (a cold stub has none in memory)
		if !exempt(e) {
			u := qs.retained[e.Origin.Principal]
			u.n++
			u.bytes += int64(newSize)
			qs.retained[e.Origin.Principal] = u
		}
		qs.retainedTotal.n++
		qs.retainedTotal.bytes += int64(newSize)
	}
}

// checkRetained says whether e may become its topic's retained value in
// place of old (Memory.rmu held for reading).
func (qs *quotaState) checkRetained(old *Envelope, oldSize int, e *Envelope) error {
	if len(e.Payload) == 0 || exempt(e) {
		return nil
	}
	p := e.Origin.Principal
	pu, tu := qs.retained[p], qs.retainedTotal
	if old != nil {
		tu.n--
		tu.bytes -= int64(oldSize)
		if old.Origin.Principal == p && !exempt(old) {
			pu.n--
			pu.bytes -= int64(oldSize)
		}
	}
	pu.n++
	pu.bytes += int64(e.Size())
	tu.n++
	tu.bytes += int64(e.Size())
	q := qs.get()
	switch {
	case q.RetainedPerPrincipal > 0 && pu.n > q.RetainedPerPrincipal:
		return fmt.Errorf("principal %q would hold %d retained values, limit %d: %w: %w", p, pu.n, q.RetainedPerPrincipal, ErrQuota, ErrStorage)
	case q.RetainedBytesPerPrincipal > 0 && pu.bytes > q.RetainedBytesPerPrincipal:
		return fmt.Errorf("principal %q would hold %d bytes of retained values, limit %d: %w: %w", p, pu.bytes, q.RetainedBytesPerPrincipal, ErrQuota, ErrStorage)
	case q.RetainedTotal > 0 && tu.n > q.RetainedTotal:
		return fmt.Errorf("the hub would hold %d retained values, limit %d: %w: %w", tu.n, q.RetainedTotal, ErrQuota, ErrStorage)
	case q.RetainedBytesTotal > 0 && tu.bytes > q.RetainedBytesTotal:
		return fmt.Errorf("the hub would hold %d bytes of retained values, limit %d: %w: %w", tu.bytes, q.RetainedBytesTotal, ErrQuota, ErrStorage)
	}
	return nil
}

// Usage returns what principal p holds: its retained values and the bytes
// queued for its subscriptions.
func (m *Memory) Usage(p string) Usage {
	m.rmu.RLock()
	u := m.quota.retained[p]
	m.rmu.RUnlock()
	out := Usage{Retained: u.n, RetainedBytes: u.bytes}
	if p != "" {
		m.quota.qmu.Lock()
		if c := m.quota.queued[p]; c != nil {
			out.QueuedBytes = c.Load()
		}
		m.quota.qmu.Unlock()
	}
	return out
}

// QuotaStats returns the quota counters and what the bus holds in all.
func (m *Memory) QuotaStats() QuotaStats {
	m.rmu.RLock()
	t := m.quota.retainedTotal
	m.rmu.RUnlock()
	var queued int64
	m.quota.qmu.Lock()
	for _, c := range m.quota.queued {
		queued += c.Load()
	}
	m.quota.qmu.Unlock()
	return QuotaStats{Total: Usage{Retained: t.n, RetainedBytes: t.bytes, QueuedBytes: queued},
		Refused: m.quota.refused.Load(), Dropped: m.quota.dropped.Load()}
}

// Quotas returns the bus's quotas.
func (m *Memory) Quotas() Quotas { return m.quota.get() }

// get returns the quotas in force.
func (qs *quotaState) get() Quotas {
	if q := qs.q.Load(); q != nil {
		return *q
	}
	return Quotas{}
}

// SetQuotas replaces the quotas (a configuration reload); what is held
// already stays, and only later publishes are checked against the new
// bounds.
func (m *Memory) SetQuotas(q Quotas) error {
	if err := q.validate(); err != nil {
		return err
	}
	m.quota.q.Store(&q)
	return nil
}

// charge adds delta bytes to the queued usage of s's owner.
func (s *memSub) charge(delta int64) {
	if c := s.owner.Load(); c != nil && delta != 0 {
		c.Add(delta)
	}
}

// checkQueued applies the queued-bytes quota to the durable deliveries
// among ms (Memory.mu held for reading): a publisher past its own quota is
// refused with ErrQuota; the subscriptions of another principal past
// theirs are taken out of ms, their drop counted, and returned so that
// the caller reports them once the lock is released.
func (m *Memory) checkQueued(e *Envelope, ms []match) ([]match, []*memSub, error) {
	lim := m.quota.get().QueuedBytesPerPrincipal
	if m.spool == nil || lim <= 0 {
		return ms, nil, nil
	}
	size := int64(e.Size())
	var over []*memSub
	// What this publish adds for each owner so far: one principal's
	// sessions take a copy each.
	type adding struct {
		c *atomic.Int64
		n int64
	}
	var add []adding
	for i := range ms {
		s := ms[i].s
		c := s.owner.Load()
		if !s.opts.Durable || ms[i].qos == 0 || c == nil {
			continue
		}
		j := slices.IndexFunc(add, func(a adding) bool { return a.c == c })
		if j < 0 {
			add = append(add, adding{c: c})
			j = len(add) - 1
		}
		if c.Load()+add[j].n+size <= lim {
			add[j].n += size
			continue
		}
		if !exempt(e) && e.Origin.Principal != "" && s.opts.Principal == e.Origin.Principal {
			m.quota.refused.Add(1)
			return nil, nil, fmt.Errorf("broker: publish %q: principal %q would queue more than %d bytes for its subscriptions: %w: %w",
				e.Topic, e.Origin.Principal, lim, ErrQuota, ErrStorage)
		}
		over = append(over, s)
	}
	if len(over) == 0 {
		return ms, nil, nil
	}
	ms = slices.DeleteFunc(ms, func(mt match) bool {
		if !slices.Contains(over, mt.s) {
			return false
		}
		mt.s.drop(1, mt.qos)
		m.quota.dropped.Add(1)
		return true
	})
	return ms, over, nil
}
