package adapters

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// pendingBudget is the hub-wide account of bytes written to connections
// and not yet taken by their clients.
type pendingBudget struct {
	total atomic.Int64
	mu    sync.Mutex
	conns map[*PendingConn]struct{}
}

// PendingConn is one connection's account in the pending write budget: a
// writer adds the bytes it queues (Add) and takes off those the socket
// took (Done). A connection over max_pending_bytes is refused its write;
// when all connections together pass max_pending_bytes_total, the ones
// with the most pending are cut off first (their kill is called) until the
// total fits again, as NATS does with slow consumers: the publisher is
// never blocked.
type PendingConn struct {
	l    *Limits
	kill func(error)

	mu     sync.Mutex
	n      int64
	killed bool  // cut off: its bytes no longer count
	cause  error // why it was cut off
	closed bool
}

// NewPendingConn opens an account for a connection; kill closes that
// connection as a slow consumer (it may be called from another
// connection's writer, never with a lock of this package held). Close
// the account when the connection ends.
func (l *Limits) NewPendingConn(kill func(error)) *PendingConn {
	p := &PendingConn{l: l, kill: kill}
	l.pend.mu.Lock()
	l.pend.conns[p] = struct{}{}
	l.pend.mu.Unlock()
	return p
}

// Pending is the connection's bytes not taken yet.
func (p *PendingConn) Pending() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// cutOff marks the account killed for cause and takes its bytes off the
// total; false when it was already.
func (p *PendingConn) cutOff(cause error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.killed || p.closed {
		return false
	}
	p.killed, p.cause = true, cause
	p.l.pend.total.Add(-p.n)
	p.n = 0
	return true
}

// Add counts n more bytes queued for the connection. It returns an error
// wrapping ErrSlowConsumer (and counts nothing) when the connection would
// pass max_pending_bytes, and one wrapping ErrServerBusy when it is
// itself among the largest cut off for the global budget; the caller then
// closes it. Other connections cut off have their kill called before Add
// returns.
func (p *PendingConn) Add(n int) error {
	c := p.l.cfg.Load()
	p.mu.Lock()
	if p.killed || p.closed {
		// The cause, so that a writer racing the kill from another
		// connection's Add reports the same reason (server busy).
		cause := p.cause
		p.mu.Unlock()
		if cause == nil {
			cause = ErrSlowConsumer
		}
		return fmt.Errorf("%w (already cut off)", cause)
	}
	if c.MaxPendingBytes >= 0 && p.n+int64(n) > c.MaxPendingBytes {
		p.mu.Unlock()
		err := fmt.Errorf("%w (%d bytes per connection)", ErrSlowConsumer, c.MaxPendingBytes)
		p.cutOff(err)
		p.l.refused[kindSlow].Add(1)
		return err
	}
	p.n += int64(n)
	total := p.l.pend.total.Add(int64(n))
	p.mu.Unlock()
	if c.MaxPendingBytesTotal < 0 || total <= c.MaxPendingBytesTotal {
		return nil
	}
	busy := fmt.Errorf("%w: %w: among the largest when all connections pass %d bytes", ErrSlowConsumer, ErrServerBusy, c.MaxPendingBytesTotal)
	self := false
	for _, v := range p.l.pend.evict(total-c.MaxPendingBytesTotal, busy) {
		p.l.refused[kindSlow].Add(1)
		if v == p {
			self = true
			continue
		}
		v.kill(busy)
	}
	if self {
		return busy
	}
	return nil
}

// Done takes n bytes the socket took off the connection's account.
func (p *PendingConn) Done(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.killed || p.closed {
		return
	}
	p.n -= int64(n)
	p.l.pend.total.Add(-int64(n))
}

// Close ends the account: what was pending no longer counts.
func (p *PendingConn) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if !p.killed {
		p.l.pend.total.Add(-p.n)
	}
	p.n = 0
	p.mu.Unlock()
	p.l.pend.mu.Lock()
	delete(p.l.pend.conns, p)
	p.l.pend.mu.Unlock()
}

// evict cuts off the connections with the most pending until they free
// excess bytes, and returns them.
func (b *pendingBudget) evict(excess int64, cause error) []*PendingConn {
	b.mu.Lock()
	all := make([]*PendingConn, 0, len(b.conns))
	size := make(map[*PendingConn]int64, len(b.conns))
	for c := range b.conns {
		if n := c.Pending(); n > 0 {
			all = append(all, c)
			size[c] = n
		}
	}
	b.mu.Unlock()
	slices.SortFunc(all, func(x, y *PendingConn) int { return cmp.Compare(size[y], size[x]) })
	var out []*PendingConn
	for _, c := range all {
		if excess <= 0 {
			break
		}
		if c.cutOff(cause) {
			excess -= size[c]
			out = append(out, c)
		}
	}
	return out
}
