package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// LeaseFunc runs held each time this hub acquires the lease named name,
// with a context that ends when the lease is lost, until ctx ends. In a
// cluster (cluster.Leases.Run) it makes a bridge configured on several
// hubs run on one of them at a time.
type LeaseFunc func(ctx context.Context, name string, held func(ctx context.Context))

// leaseState is a leased bridge's: the lease runner and whether the
// bridge holds its lease now.
type leaseState struct {
	run LeaseFunc

	mu      sync.Mutex
	holding bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// activeStopTimeout bounds the stop of a bridge whose lease was lost.
const activeStopTimeout = 10 * time.Second

// startLeased starts the lease runner; the bridge starts (activate) when
// the lease is held and stops (deactivate) when it is lost.
func (b *Bridge) startLeased() error {
	l := &b.leased
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done != nil {
		return fmt.Errorf("bridge %q: already started", b.cfg.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	done := l.done
	go func() {
		defer close(done)
		l.run(ctx, b.Name(), func(hctx context.Context) {
			if err := b.activate(hctx); err != nil {
				b.log.Warn("bridge: start with the lease held", "err", err)
				return
			}
			l.mu.Lock()
			l.holding = true
			l.mu.Unlock()
			b.log.Info("bridge: lease held, running on this hub")
			<-hctx.Done()
			l.mu.Lock()
			l.holding = false
			l.mu.Unlock()
			sctx, scancel := context.WithTimeout(context.Background(), activeStopTimeout)
			defer scancel()
			if err := b.deactivate(sctx); err != nil {
				b.log.Warn("bridge: stop with the lease gone", "err", err)
			}
			if ctx.Err() == nil {
				b.log.Info("bridge: lease lost, another hub runs it")
			}
		})
	}()
	return nil
}

// stopLeased ends the lease runner (which stops the bridge and gives
// the lease up) and waits for it.
func (b *Bridge) stopLeased(ctx context.Context) error {
	l := &b.leased
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.cancel, l.done = nil, nil
	l.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bridge %q: stop: %w", b.cfg.Name, ctx.Err())
	}
}

// errStandby is Healthy's error for a leased bridge another hub runs.
var errStandby = errors.New("standby: another hub of the cluster holds its lease")

// standby is errStandby for a leased bridge that does not hold its lease.
func (b *Bridge) standby() error {
	l := &b.leased
	if l.run == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.holding {
		return fmt.Errorf("bridge %q: %w", b.cfg.Name, errStandby)
	}
	return nil
}

// Holding reports whether the bridge runs on this hub now: always
// without a lease, else while it holds its lease.
func (b *Bridge) Holding() bool { return b.standby() == nil }
