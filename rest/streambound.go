package rest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hubsmith/hub/broker"
)

// DefaultStreamMaxPending bounds the bytes waiting for one SSE or
// WebSocket stream when Config.StreamMaxPending is 0, as mqtt's pending
// bound does for an MQTT connection: a stream that falls this far behind
// is closed, with a final event saying why, and counted.
const DefaultStreamMaxPending = 16 << 20

// envelopeOverhead is what a waiting envelope costs besides its topic and
// payload, so that a flood of tiny ones is bounded too.
const envelopeOverhead = 256

// errSlowConsumer ends a stream that passed its pending bound.
var errSlowConsumer = errors.New("slow consumer")

// pending holds the envelopes between the bus and one stream, bounded by
// bytes. The bus's handler pushes without ever blocking (so the bus's own
// queue for the stream stays empty); the stream pops.
type pending struct {
	mu     sync.Mutex
	q      []*broker.Envelope
	bytes  int64
	max    int64
	over   bool
	ready  chan struct{} // a push since the last pop found it empty
	passed chan struct{} // closed once the bound was passed
	// onPass, when set, is called once the bound is passed (it makes a
	// blocked write return).
	onPass func()
}

func newPending(max int64) *pending {
	return &pending{max: max, ready: make(chan struct{}, 1), passed: make(chan struct{})}
}

func cost(e *broker.Envelope) int64 { return int64(e.Size()) + envelopeOverhead }

// push queues e, or passes the bound: then everything waiting is dropped
// and the stream is told to close.
func (p *pending) push(e *broker.Envelope) {
	p.mu.Lock()
	if p.over {
		p.mu.Unlock()
		return
	}
	if p.bytes+cost(e) > p.max {
		p.over, p.q, p.bytes = true, nil, 0
		f := p.onPass
		p.mu.Unlock()
		close(p.passed)
		if f != nil {
			f()
		}
		return
	}
	p.q = append(p.q, e)
	p.bytes += cost(e)
	p.mu.Unlock()
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// pop takes the oldest waiting envelope (nil when none).
func (p *pending) pop() *broker.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.q) == 0 {
		return nil
	}
	e := p.q[0]
	p.q[0] = nil
	p.q = p.q[1:]
	p.bytes -= cost(e)
	return e
}

// setOnPass sets the hook called when the bound is passed.
func (p *pending) setOnPass(f func()) {
	p.mu.Lock()
	p.onPass = f
	p.mu.Unlock()
}

// slowReason is what the final event of a cut stream says.
func (a *Adapter) slowReason() string {
	return fmt.Sprintf("%s: more than %d bytes pending; the stream is closed, subscribe again", errSlowConsumer, a.cfg.StreamMaxPending)
}

// isPassed reports whether p's bound was passed.
func isPassed(p *pending) bool {
	select {
	case <-p.passed:
		return true
	default:
		return false
	}
}

// cutSlow counts a stream closed for its pending bound.
func (a *Adapter) cutSlow(kind string) {
	a.slowCut.Add(1)
	if a.m != nil {
		a.m.slow.WithLabelValues(kind).Inc()
	}
	a.log.Warn("rest: stream closed: slow consumer", "kind", kind, "max_pending", a.cfg.StreamMaxPending)
}

// truncReason fits a WebSocket close reason in its 123 bytes.
func truncReason(s string) string {
	if len(s) > 123 {
		return s[:123]
	}
	return s
}

// eachRetained calls f for the retained values of each filter in turn,
// read a page at a time from a bus that can (so a stream on "#" holds one
// page of large values at once, not all of them), all at once otherwise.
func (a *Adapter) eachRetained(ctx context.Context, filters []string, f func(*broker.Envelope) error) error {
	pager, _ := a.cfg.Bus.(broker.RetainedPager)
	for _, filter := range filters {
		if pager == nil {
			rs, err := a.cfg.Bus.Retained(ctx, filter)
			if err != nil {
				return fmt.Errorf("rest: subscribe: retained: %w", err)
			}
			for _, e := range rs {
				if err := f(e); err != nil {
					return err
				}
			}
			continue
		}
		for after := ""; ; {
			rs, more, err := pager.RetainedPage(ctx, filter, after, DefaultPageLimit, MaxPageBytes)
			if err != nil {
				return fmt.Errorf("rest: subscribe: retained: %w", err)
			}
			for _, e := range rs {
				if err := f(e); err != nil {
					return err
				}
			}
			if !more || len(rs) == 0 {
				break
			}
			after = rs[len(rs)-1].Topic
		}
	}
	return nil
}
