package broker

import "time"

// Inline delivery (SubscribeOptions.Inline): a publisher that finds a
// subscription idle (no delivery goroutine, nothing queued or to redo,
// room in the window) and not flooded (inlineGap) delivers to it on its
// own goroutine. A steady flow
// to one subscriber then costs no goroutine wake-up and hand-off per
// envelope between the publisher's reader and the subscriber's writer.
//
// The publisher claims the subscription's delivery under s.mu while it
// offers (claimInline), exactly as starting its delivery goroutine would:
// until it is done, later envelopes queue behind it and wake nobody, and a
// detach waits for it. Once it has delivered, it hands whatever came
// meanwhile to a delivery goroutine (endInline).

// inlineGap is how far apart (by Envelope.Time) envelopes to one
// subscription must come for the publisher to deliver them itself: up to
// 10,000 msg/s. Faster, the publisher leaves them to the subscription's
// goroutine, which runs beside it on another core and writes bursts
// together, as throughput wants.
const inlineGap = 100 * time.Microsecond

// maxInline bounds the deliveries one publish makes itself (a client and
// the history, say); a publish matching more subscriptions makes none: a
// fan-out goes on in parallel, in the subscriptions' goroutines.
const maxInline = 2

// inlined are the deliveries route left to the publisher, in order.
type inlined struct {
	n  int
	s  [maxInline]*memSub
	it [maxInline]*item
}

// add records one; full reports whether another may be added.
func (in *inlined) add(s *memSub, it *item) { in.s[in.n], in.it[in.n] = s, it; in.n++ }
func (in *inlined) full() bool              { return in.n == maxInline }

// deliver makes them, after route (never under the bus's lock, as a
// delivery goroutine).
func (in *inlined) deliver() {
	for i := range in.n {
		in.s[i].deliverInline(in.it[i])
	}
}

// claimInline makes the caller the subscription's deliverer, for one
// delivery taken at once, when it is idle (s.mu held).
func (s *memSub) claimInline() bool {
	if !s.attached || s.running || s.spilling || len(s.mem) > 0 || len(s.redo) > 0 || s.pending >= s.window {
		return false
	}
	s.running, s.inlining, s.inlineGen = true, true, s.gen
	s.pending++
	return true
}

// deliverInline makes the delivery claimInline claimed, unless the
// subscription was detached (and perhaps attached again) meanwhile: it is
// then dropped, as what waits in memory is on a detach. It ends the claim.
func (s *memSub) deliverInline(it *item) {
	s.mu.Lock()
	ctx, h, gen := s.runCtx, s.h, s.gen
	live := s.attached && gen == s.inlineGen
	s.mu.Unlock()
	if live {
		s.deliver(ctx, h, it, gen, false)
	} else {
		s.drop(1, it.qos)
	}
	s.endInline()
}

// endInline ends an inline delivery: what was offered, acked or nacked
// meanwhile (each kicked) goes to a delivery goroutine, and a detach
// waiting for the publisher goes on.
func (s *memSub) endInline() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inlining = false
	s.idle.Broadcast()
	if s.attached {
		select {
		case <-s.kick:
			s.done = make(chan struct{})
			s.m.wg.Add(1)
			go s.run(s.runCtx, s.h, s.gen, s.done)
			return
		default:
		}
	}
	s.running = false
}
