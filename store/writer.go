package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store closed")

// maxBatch bounds how many writes share one transaction.
const maxBatch = 256

// writer is the only goroutine that writes. It runs the writes queued
// while the previous transaction committed as one transaction, each inside
// its own savepoint, so that concurrent writers (publishers at QoS >= 1,
// MQTT session updates) share one commit (and, with SyncAlways, one
// fsync) instead of queueing for one each: group commit. Every write
// still returns only after the commit that made it durable (see
// Options.SyncInterval for against what).
type writer struct {
	db   *sql.DB
	ops  chan *writeOp
	quit chan struct{}
	done chan struct{}

	mu     sync.RWMutex // held for reading while submitting
	closed bool

	batches atomic.Uint64 // transactions committed
	writes  atomic.Uint64 // writes committed
	failed  atomic.Uint64 // writes that failed
	// withdrawn counts queue writes taken back before they began
	// (broker.AsyncSpool).
	withdrawn atomic.Uint64
	obsMu     sync.Mutex
	observe   func(time.Duration) // observes batch latency; may be nil
	health    writeHealth         // the last store fault (health.go)
	rows      rowInserts          // prepared multi-row queue inserts

	// committed gets a token after a commit (dropped when one waits): the
	// WAL syncer's wake-up, so an idle store wakes nobody.
	committed chan struct{}
}

func (w *writer) setObserver(f func(time.Duration)) {
	w.obsMu.Lock()
	w.observe = f
	w.obsMu.Unlock()
}

func (w *writer) observer() func(time.Duration) {
	w.obsMu.Lock()
	defer w.obsMu.Unlock()
	return w.observe
}

// op states: a caller whose context ends before the writer took the op
// abandons it, and the writer then skips it; a withdrawn op (see
// broker.AsyncSpool) is skipped too, with no answer.
const (
	opPending int32 = iota
	opTaken
	opAbandoned
	opWithdrawn
)

type writeOp struct {
	ctx   context.Context
	fn    func(ctx context.Context, tx *sql.Tx) error
	state atomic.Int32
	res   chan error // buffered: the writer never blocks on it
	// cb, when set, takes the result instead of res (doAsync).
	cb func(error)
	// row, when set, is the one queue row fn inserts: consecutive row
	// ops of a batch share one INSERT (queuebatch.go).
	row *queueRow
	// linger: the op is likely withdrawn soon (its entry was delivered
	// before it was stored), so the writer lets it wait until writeLinger
	// after at before it begins a transaction with it.
	linger bool
	at     time.Time
}

// writeLinger is how long the writer holds back a write likely to be
// withdrawn (writeOp.linger): a subscriber that keeps up acknowledges
// within it, so its envelope is never written nor deleted. It delays the
// others of the transaction by as much at most.
const writeLinger = 2 * time.Millisecond

// answer hands op its result.
func (op *writeOp) answer(err error) {
	if op.cb != nil {
		op.cb(err)
		return
	}
	op.res <- err
}

// withdraw takes back an op the writer has not taken yet; it reports
// whether it did, in which case the op is never run nor answered.
func (op *writeOp) withdraw() bool {
	return op.state.CompareAndSwap(opPending, opWithdrawn)
}

// newWriter starts the writer of db; rows are its multi-row queue
// inserts (prepareRowInserts).
func newWriter(db *sql.DB, rows rowInserts) *writer {
	w := &writer{
		db:   db,
		ops:  make(chan *writeOp, maxBatch),
		quit: make(chan struct{}),
		done: make(chan struct{}),
		rows: rows,
		// committed starts with a token: what Open wrote before the
		// writer ran (migrations, the sweep) is synced too.
		committed: make(chan struct{}, 1),
	}
	w.committed <- struct{}{}
	go w.run()
	return w
}

// do runs fn in a write transaction and returns once it is committed (or
// has failed, leaving nothing behind).
//
// row, when not nil, is the one queue row fn inserts (see queueRow).
func (w *writer) do(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error, row *queueRow) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &writeOp{ctx: ctx, fn: fn, row: row, res: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return ErrClosed
	}
	select {
	case w.ops <- op:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-op.res:
		return err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opPending, opAbandoned) {
			return ctx.Err()
		}
		// Already running: its outcome is what happened.
		return <-op.res
	}
}

// doAsync is do without the wait: op.cb is called with the result once
// the write is committed or has failed, from the writer's goroutine (so it
// must not block, nor write to the store itself). Submitting blocks while
// the writer's queue is full.
func (w *writer) doAsync(op *writeOp) {
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		op.cb(ErrClosed)
		return
	}
	if op.linger {
		op.at = time.Now()
	}
	w.ops <- op
	w.mu.RUnlock()
}

// close stops accepting writes, lets the queued ones finish and waits for
// the goroutine to end.
func (w *writer) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.closed = true
	w.mu.Unlock()
	// No submitter holds the read lock now, so the queue is final.
	close(w.quit)
	<-w.done
}

func (w *writer) run() {
	defer close(w.done)
	batch := make([]*writeOp, 0, maxBatch)
	var linger *time.Timer
	for {
		select {
		case op := <-w.ops:
			batch = w.drain(append(batch[:0], op))
			if d := lingerLeft(batch); d > 0 {
				if linger == nil {
					linger = time.NewTimer(d)
				} else {
					linger.Reset(d)
				}
				select {
				case <-linger.C:
				case <-w.quit: // the ops still run, below and then at quit
					linger.Stop()
				}
				batch = w.drain(batch)
			}
			w.commit(batch)
		case <-w.quit:
			for {
				select {
				case op := <-w.ops:
					w.commit([]*writeOp{op})
				default:
					return
				}
			}
		}
	}
}

// drain adds the ops already queued to batch, up to maxBatch.
func (w *writer) drain(batch []*writeOp) []*writeOp {
	for len(batch) < maxBatch {
		select {
		case op := <-w.ops:
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// lingerLeft is how long the oldest op of batch that lingers (and is not
// withdrawn yet) has still to wait; 0 when none does or the batch is full.
func lingerLeft(batch []*writeOp) time.Duration {
	if len(batch) >= maxBatch {
		return 0
	}
	for _, op := range batch {
		if op.linger && op.state.Load() == opPending {
			return writeLinger - time.Since(op.at)
		}
	}
	return 0
}

// commit runs a batch in one transaction and answers every op.
func (w *writer) commit(batch []*writeOp) {
	// Take the ops whose callers still wait; answer the others.
	live := batch[:0]
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			if op.state.CompareAndSwap(opPending, opAbandoned) {
				op.answer(err)
				continue
			}
		}
		if op.state.CompareAndSwap(opPending, opTaken) {
			live = append(live, op)
		}
	}
	if len(live) == 0 {
		return
	}
	results := make([]error, len(live))
	start := time.Now()
	err := w.runBatch(live, results)
	w.health.note(err, results)
	if obs := w.observer(); obs != nil {
		obs(time.Since(start))
	}
	for i, op := range live {
		if err != nil && results[i] == nil {
			results[i] = err
		}
		if results[i] != nil {
			w.failed.Add(1)
		} else {
			w.writes.Add(1)
		}
		op.answer(results[i])
	}
}

// runBatch runs ops in one transaction, each in a savepoint so that a
// failing op is undone alone. It returns an error that fails the whole
// batch (begin, savepoint handling, commit).
func (w *writer) runBatch(ops []*writeOp, results []error) error {
	tx, err := w.db.Begin()
	if err != nil {
		return err
	}
	single := len(ops) == 1
	var save, undo, release *sql.Stmt
	if !single {
		// Parsed once a batch, not once an op.
		if save, err = tx.Prepare(`SAVEPOINT op`); err == nil {
			if undo, err = tx.Prepare(`ROLLBACK TO op`); err == nil {
				release, err = tx.Prepare(`RELEASE op`)
			}
		}
		if err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	plain := 0 // ops below it run one by one
	for i := 0; i < len(ops); i++ {
		op := ops[i]
		if single {
			results[i] = safeRun(op, tx)
			if results[i] != nil {
				_ = tx.Rollback()
				return nil
			}
			break
		}
		if op.row != nil && i >= plain {
			j := i + 1
			for j < len(ops) && ops[j].row != nil {
				j++
			}
			if j-i > 1 {
				ok, err := w.insertRows(tx, save, undo, release, ops[i:j])
				if err != nil {
					_ = tx.Rollback()
					return err
				}
				if ok {
					i = j - 1
					continue
				}
				// One of them failed: each alone, to fail only that one.
				plain = j
			}
		}
		if _, err := save.Exec(); err != nil {
			_ = tx.Rollback()
			return err
		}
		if results[i] = safeRun(op, tx); results[i] != nil {
			if _, err := undo.Exec(); err != nil {
				_ = tx.Rollback()
				return err
			}
		}
		if _, err := release.Exec(); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.batches.Add(1)
	select {
	case w.committed <- struct{}{}:
	default:
	}
	return nil
}

// safeRun runs op.fn, turning a panic into an error so the writer lives on.
func safeRun(op *writeOp, tx *sql.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("write panicked: %v", r)
		}
	}()
	// Once taken, an op runs to the end even if its caller gives up:
	// interrupting a statement would roll back the whole shared
	// transaction, failing the other writes of the batch.
	return op.fn(context.WithoutCancel(op.ctx), tx)
}
