package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// spoolBatch is how many queued envelopes a subscription takes from the
// spool at a time.
const spoolBatch = 64

// memSub is a subscription of the in-process bus. Envelopes wait in a
// bounded channel; when it is full, QoS >= 1 envelopes of a durable
// subscription go to the spool and, to keep order, so do all later ones
// until the spool has drained ("spilling").
type memSub struct {
	m    *Memory
	opts SubscribeOptions
	ch   chan *Envelope
	kick chan struct{}

	mu       sync.Mutex
	attached bool
	spilling bool
	pending  int    // spool writes decided but not finished
	gen      uint64 // bumped by every finished spool write
	h        Handler
	cancel   context.CancelFunc
	done     chan struct{}
	carry    *Envelope // taken from ch but not delivered when the goroutine stopped
	// detaching is set while detach waits for the goroutine; envelopes
	// owed meanwhile are held in order and spooled after the ones in ch.
	detaching bool
	held      []*Envelope

	delivered, dropped, spooled atomic.Uint64
	// stored and storedBytes approximate the length and Size total of the
	// durable queue in the spool, for MaxQueued and MaxQueuedBytes.
	stored, storedBytes atomic.Int64
}

func (m *Memory) newSub(opts SubscribeOptions) *memSub {
	n := opts.QueueLen
	if n <= 0 {
		n = DefaultQueueLen
	}
	return &memSub{m: m, opts: opts, ch: make(chan *Envelope, n), kick: make(chan struct{}, 1)}
}

func (s *memSub) ID() string { return s.opts.ID }

func (s *memSub) Stats() SubscriptionStats {
	return SubscriptionStats{
		Delivered: s.delivered.Load(),
		Dropped:   s.dropped.Load(),
		Spooled:   s.spooled.Load(),
		Queued:    len(s.ch),
	}
}

func (s *memSub) Unsubscribe() error { return s.m.unsubscribe(s, false) }
func (s *memSub) Detach() error      { return s.m.unsubscribe(s, true) }

func (s *memSub) isAttached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attached
}

func (s *memSub) noLocal(e *Envelope) bool {
	return s.opts.NoLocalProtocol != "" && e.Origin.Protocol == s.opts.NoLocalProtocol &&
		(s.opts.NoLocalNode == "" || e.Origin.Node == s.opts.NoLocalNode)
}

func (s *memSub) qos(e *Envelope) byte { return min(e.QoS, s.opts.QoS) }

// offer queues e in memory, or reports true when the caller must write it
// to the spool and then call spoolDone.
func (s *memSub) offer(e *Envelope) bool {
	durable := s.opts.Durable && s.qos(e) >= 1
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.detaching {
		if durable {
			s.held = append(s.held, e)
		} else {
			s.dropped.Add(1)
		}
		return false
	}
	if durable && (s.spilling || !s.attached || s.m.writeThrough) {
		s.spilling = true
		s.pending++
		return true
	}
	if !s.attached {
		return false
	}
	select {
	case s.ch <- e:
		return false
	default:
	}
	if durable {
		s.spilling = true
		s.pending++
		return true
	}
	s.dropped.Add(1)
	return false
}

func (s *memSub) spoolDone(ok bool, size int) {
	s.mu.Lock()
	s.pending--
	s.gen++
	s.mu.Unlock()
	if ok {
		s.spooled.Add(1)
		s.stored.Add(1)
		s.storedBytes.Add(int64(size))
	} else {
		s.dropped.Add(1)
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *memSub) attach(h Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.h, s.attached, s.cancel, s.done = h, true, cancel, make(chan struct{})
	done := s.done
	s.mu.Unlock()
	s.m.wg.Add(1)
	go s.run(ctx, h, done)
}

// detach stops the delivery goroutine. Envelopes still in memory that a
// durable subscription is owed go to the spool, and so do those published
// while it stops (held in order meanwhile), so the spool keeps their order.
func (s *memSub) detach() {
	s.mu.Lock()
	if !s.attached {
		s.mu.Unlock()
		return
	}
	s.attached, s.detaching = false, true
	s.cancel()
	done := s.done
	s.mu.Unlock()
	<-done

	s.mu.Lock()
	defer s.mu.Unlock()
	var owed []*Envelope
	if s.carry != nil {
		owed = append(owed, s.carry)
		s.carry = nil
	}
	for len(s.ch) > 0 {
		owed = append(owed, <-s.ch)
	}
	owed = append(owed, s.held...)
	s.held, s.detaching = nil, false
	for _, e := range owed {
		if !s.opts.Durable || s.qos(e) == 0 {
			s.dropped.Add(1)
			continue
		}
		s.spilling = true
		if err := s.m.spool.Enqueue(context.Background(), e, []string{s.opts.ID}); err != nil {
			s.m.log.Warn("broker: detach: spool lost an envelope", "subscriber", s.opts.ID, "topic", e.Topic, "err", err)
			s.dropped.Add(1)
			continue
		}
		s.spooled.Add(1)
		s.stored.Add(1)
		s.storedBytes.Add(int64(e.Size()))
	}
}

func (s *memSub) run(ctx context.Context, h Handler, done chan struct{}) {
	defer s.m.wg.Done()
	defer close(done)
	for {
		select {
		case e := <-s.ch:
			if !s.deliver(ctx, h, e) {
				return
			}
			continue
		default:
		}
		s.mu.Lock()
		spilling, gen := s.spilling, s.gen
		s.mu.Unlock()
		if spilling {
			n, err := s.drainSpool(ctx, h)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.m.log.Warn("broker: read spool", "subscriber", s.opts.ID, "err", err)
				if !sleep(ctx, time.Second) {
					return
				}
				continue
			}
			if n > 0 {
				continue
			}
			s.mu.Lock()
			if s.pending == 0 && s.gen == gen {
				s.spilling = false
			}
			spilling = s.spilling
			s.mu.Unlock()
			if !spilling {
				continue
			}
		}
		select {
		case e := <-s.ch:
			if !s.deliver(ctx, h, e) {
				return
			}
		case <-s.kick:
		case <-ctx.Done():
			return
		}
	}
}

// deliver hands e to the handler; it returns false when the subscription
// is stopping, after leaving e in s.carry.
func (s *memSub) deliver(ctx context.Context, h Handler, e *Envelope) bool {
	if e.Expired(time.Now()) {
		s.dropped.Add(1)
		return true
	}
	if err := s.handle(ctx, h, e); err != nil {
		s.mu.Lock()
		s.carry = e
		s.mu.Unlock()
		return false
	}
	return true
}

// handle calls h, retrying with back-off while a durable QoS >= 1 delivery
// fails; other failures are logged and counted as dropped.
func (s *memSub) handle(ctx context.Context, h Handler, e *Envelope) error {
	wait := 50 * time.Millisecond
	for {
		err := h(ctx, e)
		if err == nil {
			s.delivered.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !s.opts.Durable || s.qos(e) == 0 {
			s.dropped.Add(1)
			s.m.log.Debug("broker: handler refused an envelope", "subscriber", s.opts.ID, "topic", e.Topic, "err", err)
			return nil
		}
		s.m.log.Warn("broker: handler failed, retrying", "subscriber", s.opts.ID, "topic", e.Topic, "err", err)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// drainSpool delivers one batch from the spool and acknowledges what the
// handler took.
func (s *memSub) drainSpool(ctx context.Context, h Handler) (int, error) {
	items, err := s.m.spool.Dequeue(ctx, s.opts.ID, spoolBatch)
	if err != nil {
		return 0, err
	}
	var last int64 = -1
	n := 0
	now := time.Now()
	for _, q := range items {
		if !q.Envelope.Expired(now) {
			if err := s.handle(ctx, h, q.Envelope); err != nil {
				break
			}
			n++
		}
		last = q.Seq
	}
	if last >= 0 && n > 0 && s.opts.Sync != nil {
		if err := s.opts.Sync(ctx); err != nil {
			return 0, fmt.Errorf("sync %d delivered envelopes: %w", n, err)
		}
	}
	if last >= 0 {
		if err := s.m.spool.Ack(context.WithoutCancel(ctx), s.opts.ID, last); err != nil {
			return n, err
		}
		acked, size := 0, 0
		for _, q := range items {
			if q.Seq <= last {
				acked++
				size += q.Envelope.Size()
			}
		}
		s.stored.Add(-int64(acked))
		s.storedBytes.Add(-int64(size))
	}
	if n == 0 && len(items) > 0 && ctx.Err() == nil {
		n = len(items) // all expired: progress was made
	}
	return n, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var (
	_ Subscription = (*memSub)(nil)
	_ Bus          = (*Memory)(nil)
)
