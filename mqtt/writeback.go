package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hubsmith/hub/store"
)

// writeBehindDelay is how long a write that nobody waits for (a deletion
// after an acknowledgement, a copy no routing syncs) waits before it
// reaches the store: writes queued meanwhile share one transaction.
const writeBehindDelay = 10 * time.Millisecond

// inflightWriter writes the in-flight records of connected clients off
// the delivering goroutine (see sessions.saveInflight), batched into one
// transaction: a record whose message was acknowledged before it was
// written is never written, and its deletion costs nothing either.
//
// A copy for a connected client is still on the hub's side of the promise
// until the client acknowledges it: before the publisher is acknowledged
// (OnPublish, through its client's ackQueue) or the bus is told the
// envelope was taken (its Sync), the routing waits for syncAsync, which
// has whatever is pending written at once. Routings that wait at the same
// time share one commit, and no goroutine that reads packets waits for
// the disk. Why not write on the delivering goroutine: two store writes
// per delivery there kept PUBACKs from being processed under load (they
// delete records too) and filled the client's queue.
type inflightWriter struct {
	s *sessions

	io      sync.Mutex // held by the flusher while it writes
	mu      sync.Mutex
	busy    map[string]bool         // keys being written (by a flush or by now)
	idle    *sync.Cond              // on mu: a key is no longer busy
	delay   time.Duration           // writeBehindDelay (tests lengthen it)
	pending map[string]pendingWrite // in-flight key -> newest operation
	onDisk  map[string]bool         // keys stored, or being stored
	next    []chan error            // waiting for the pending operations
	cur     []chan error            // waiting for the batch being written
	writing bool                    // a batch is being written
	stopped bool                    // run has been told to end
	kick    chan struct{}           // something is pending
	urgent  chan struct{}           // somebody waits: write now
	stop    chan struct{}
	done    chan struct{}
}

type pendingWrite struct {
	value []byte // nil: delete
}

func newInflightWriter(s *sessions) *inflightWriter {
	w := &inflightWriter{
		s:       s,
		delay:   writeBehindDelay,
		busy:    make(map[string]bool),
		pending: make(map[string]pendingWrite),
		onDisk:  make(map[string]bool),
		kick:    make(chan struct{}, 1),
		urgent:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	w.idle = sync.NewCond(&w.mu)
	return w
}

// run flushes pending writes until close: after writeBehindDelay, or at
// once when somebody waits; it writes what is left before it returns.
func (w *inflightWriter) run() {
	defer close(w.done)
	for {
		now := false
		select {
		case <-w.kick:
		case <-w.urgent:
			now = true
		case <-w.stop:
			w.drain()
			return
		}
		if !now {
			w.mu.Lock()
			d := w.delay
			w.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-w.urgent:
			case <-w.stop:
			}
			t.Stop()
		}
		_ = w.flush() // failures are logged, retried with the next flush and reported to the waiters
	}
}

// errWriterStopped is what a sync still waiting when the writer stops
// gets: its records may not be stored.
var errWriterStopped = errors.New("mqtt: session writer stopped")

// drain writes what is pending, waiting out synchronous writes that hold
// keys, for at most storeTimeout (a failing store keeps its records
// pending); waiters left then are told their records may not be stored.
func (w *inflightWriter) drain() {
	deadline := time.Now().Add(storeTimeout)
	for {
		_ = w.flush()
		w.mu.Lock()
		left := len(w.pending) + len(w.next)
		w.mu.Unlock()
		if left == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	w.mu.Lock()
	for _, ch := range w.next {
		ch <- errWriterStopped
	}
	w.next = nil
	w.mu.Unlock()
}

// close stops run after a last flush.
func (w *inflightWriter) close() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.stopped = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
}

// syncAsync returns a channel that receives nil once every write queued
// before the call is in the store (or cancelled by an acknowledgement),
// or the error that kept some of them out.
func (w *inflightWriter) syncAsync() <-chan error {
	ch := make(chan error, 1)
	w.mu.Lock()
	switch {
	case len(w.pending) > 0:
		w.next = append(w.next, ch)
	case w.writing:
		w.cur = append(w.cur, ch)
	default:
		ch <- nil
		w.mu.Unlock()
		return ch
	}
	stopped := w.stopped
	w.mu.Unlock()
	if stopped {
		w.drain() // run has ended or is ending: write here
		return ch
	}
	select {
	case w.urgent <- struct{}{}:
	default:
	}
	return ch
}

// sync is syncAsync, waited for.
func (w *inflightWriter) sync() error { return <-w.syncAsync() }

// kvApplier is a session store that writes a batch in one transaction
// (*store.Store does).
type kvApplier interface {
	KVApply(ctx context.Context, ops []store.KVOp) error
}

// flush writes every pending operation, in one transaction when the store
// can. What fails is put back to be tried again (unless a newer operation
// on the key came meanwhile) and the first error is returned.
func (w *inflightWriter) flush() error {
	w.io.Lock()
	defer w.io.Unlock()
	w.mu.Lock()
	if len(w.pending) == 0 {
		// Waiters whose operations were written synchronously (now).
		for _, ch := range w.next {
			ch <- nil
		}
		w.next = nil
		w.mu.Unlock()
		return nil
	}
	// A key a synchronous write holds waits for the next flush, and so
	// do the waiters (they may be waiting for it).
	batch := make(map[string]pendingWrite, len(w.pending))
	for k, op := range w.pending {
		if !w.busy[k] {
			batch[k] = op
			w.busy[k] = true
			delete(w.pending, k)
		}
	}
	if len(w.pending) == 0 {
		w.cur, w.next = w.next, nil
	}
	w.writing = true
	for k, op := range batch {
		// Marked before the write: a deletion decided meanwhile must
		// reach the store after it.
		if op.value != nil {
			w.onDisk[k] = true
		} else {
			delete(w.onDisk, k)
		}
	}
	w.mu.Unlock()

	var failed map[string]pendingWrite
	var first error
	if ap, ok := w.s.kv.(kvApplier); ok {
		ops := make([]store.KVOp, 0, len(batch))
		for k, op := range batch {
			ops = append(ops, store.KVOp{Bucket: bucketInflight, Key: k, Value: op.value, Delete: op.value == nil})
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := ap.KVApply(ctx, ops)
		cancel()
		if err != nil {
			w.s.fail("apply "+bucketInflight+" (behind)", fmt.Sprintf("%d records", len(ops)), err)
			failed, first = batch, err
		}
	} else {
		for k, op := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			var err error
			name := "put"
			if op.value != nil {
				err = w.s.kv.KVPut(ctx, bucketInflight, k, op.value)
			} else {
				name = "delete"
				err = w.s.kv.KVDelete(ctx, bucketInflight, k)
			}
			cancel()
			if err != nil {
				w.s.fail(name+" "+bucketInflight+" (behind)", k, err)
				if failed == nil {
					failed, first = make(map[string]pendingWrite), err
				}
				failed[k] = op
			}
		}
	}
	var err error
	if len(failed) > 0 {
		err = fmt.Errorf("mqtt: write %d in-flight records: %w", len(failed), first)
	}
	w.mu.Lock()
	for k := range batch {
		delete(w.busy, k)
	}
	w.idle.Broadcast()
	for _, ch := range w.cur {
		ch <- err
	}
	w.cur, w.writing = nil, false
	for k, op := range failed {
		if _, newer := w.pending[k]; !newer {
			w.pending[k] = op
		}
		// Whatever the store holds for k now, a later deletion must
		// reach it.
		w.onDisk[k] = true
	}
	w.mu.Unlock()
	return err
}

// putLater queues a record to be written behind.
func (w *inflightWriter) putLater(key string, value []byte) {
	w.mu.Lock()
	w.pending[key] = pendingWrite{value: value}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// deleteLater queues a deletion, or cancels a put never written.
func (w *inflightWriter) deleteLater(key string) {
	w.mu.Lock()
	if !w.onDisk[key] {
		delete(w.pending, key)
		w.mu.Unlock()
		return
	}
	w.pending[key] = pendingWrite{}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// now runs a synchronous write of key (f), ordered after the operations
// on key already being written and replacing those still pending.
//
// Synchronous writes of different keys run concurrently, so that the
// store commits those of concurrent routings together (group commit).
func (w *inflightWriter) now(key string, stored bool, f func() error) error {
	w.mu.Lock()
	delete(w.pending, key)
	for w.busy[key] {
		w.idle.Wait()
	}
	w.busy[key] = true
	w.mu.Unlock()
	err := f()
	w.mu.Lock()
	delete(w.busy, key)
	w.idle.Broadcast()
	if _, again := w.pending[key]; again {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	if err == nil {
		if stored {
			w.onDisk[key] = true
		} else {
			delete(w.onDisk, key)
		}
	} else if stored {
		// A failed put may have left an older record: keep deleting.
		w.onDisk[key] = true
	}
	w.mu.Unlock()
	return err
}

// loaded records a key found in the store at start.
func (w *inflightWriter) loaded(key string) {
	w.mu.Lock()
	w.onDisk[key] = true
	w.mu.Unlock()
}
