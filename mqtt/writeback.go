package mqtt

import (
	"context"
	"sync"
	"time"
)

// writeBehindDelay is how long a write for a connected client waits
// before it reaches the store: long enough for most acknowledgements of a
// reading client to arrive and cancel the write (no disk I/O at all), short
// enough to bound what a crash can take.
const writeBehindDelay = 10 * time.Millisecond

// inflightWriter writes the in-flight records of connected clients behind
// the deliveries (see sessions.saveInflight): a record whose message is
// acknowledged before it was written is never written, and its deletion
// costs nothing either.
//
// Why connected clients only: a message queued for an offline session is
// in memory only until stored, and the publisher's PUBACK (or the bus's
// acknowledgement) promises it survives a crash, so that write stays
// synchronous. A message in flight to a connected client is on its way on
// the wire; storing it synchronously only protects the interval between
// its sending and the client's PUBACK against a crash, at the cost of two
// store writes per delivery on the delivering goroutine, which under load
// kept PUBACKs from being processed (they delete records too) and filled
// the client's queue. Behind the delivery, a crash can lose a copy sent
// to a connected client within the last writeBehindDelay plus one store
// write, if the client had not received it either.
type inflightWriter struct {
	s *sessions

	io      sync.Mutex // held while writing, by the flusher and by synchronous writes
	mu      sync.Mutex
	pending map[string]pendingWrite // in-flight key -> newest operation
	onDisk  map[string]bool         // keys stored, or being stored
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type pendingWrite struct {
	value []byte // nil: delete
}

func newInflightWriter(s *sessions) *inflightWriter {
	return &inflightWriter{
		s:       s,
		pending: make(map[string]pendingWrite),
		onDisk:  make(map[string]bool),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// run flushes pending writes until close; it writes what is left before
// it returns.
func (w *inflightWriter) run() {
	defer close(w.done)
	for {
		select {
		case <-w.kick:
		case <-w.stop:
			w.flush()
			return
		}
		select {
		case <-time.After(writeBehindDelay):
		case <-w.stop:
		}
		w.flush()
	}
}

// close stops run after a last flush.
func (w *inflightWriter) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// flush writes every pending operation.
func (w *inflightWriter) flush() {
	w.io.Lock()
	defer w.io.Unlock()
	w.mu.Lock()
	batch := w.pending
	w.pending = make(map[string]pendingWrite)
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
	for k, op := range batch {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		var err error
		if op.value != nil {
			err = w.s.kv.KVPut(ctx, bucketInflight, k, op.value)
		} else {
			err = w.s.kv.KVDelete(ctx, bucketInflight, k)
		}
		cancel()
		if err != nil {
			op := "put"
			if batch[k].value == nil {
				op = "delete"
			}
			w.s.fail(op+" "+bucketInflight+" (behind)", k, err)
		}
	}
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
func (w *inflightWriter) now(key string, stored bool, f func() error) error {
	w.io.Lock()
	defer w.io.Unlock()
	w.mu.Lock()
	delete(w.pending, key)
	w.mu.Unlock()
	err := f()
	w.mu.Lock()
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
