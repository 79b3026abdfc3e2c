package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// ErrInvalidSubscription marks a durable subscription with no id, no
// filters, a bad filter or a QoS above 2.
var ErrInvalidSubscription = errors.New("invalid durable subscription")

// SaveRetained implements broker.Spool.
func (s *Store) SaveRetained(ctx context.Context, e *broker.Envelope) error {
	if e == nil {
		return errors.New("store: save retained: nil envelope")
	}
	if err := broker.ValidateTopic(e.Topic); err != nil {
		return fmt.Errorf("store: save retained: %w", err)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return fmt.Errorf("store: save retained %q: %w", e.Topic, err)
	}
	if err := s.exec(ctx,
		`INSERT INTO retained(topic, envelope) VALUES (?, ?)
		 ON CONFLICT(topic) DO UPDATE SET envelope = excluded.envelope`, e.Topic, b); err != nil {
		return fmt.Errorf("store: save retained %q: %w", e.Topic, err)
	}
	return nil
}

// DeleteRetained implements broker.Spool. Clearing a topic with no
// retained value is not an error.
func (s *Store) DeleteRetained(ctx context.Context, topic string) error {
	if err := s.exec(ctx, `DELETE FROM retained WHERE topic = ?`, topic); err != nil {
		return fmt.Errorf("store: delete retained %q: %w", topic, err)
	}
	return nil
}

// LoadRetained implements broker.Spool. Envelopes are sorted by topic; a
// row that does not decode is logged, deleted and left out.
func (s *Store) LoadRetained(ctx context.Context) ([]*broker.Envelope, error) {
	var out []*broker.Envelope
	if err := s.eachRetained(ctx, func(e *broker.Envelope) { out = append(out, e) }); err != nil {
		return nil, err
	}
	return out, nil
}

// eachRetained calls f with every retained envelope, sorted by topic, one
// row at a time; a row that does not decode is logged, deleted and left
// out.
func (s *Store) eachRetained(ctx context.Context, f func(*broker.Envelope)) error {
	rows, err := s.r.QueryContext(ctx, `SELECT topic, envelope FROM retained ORDER BY topic`)
	if err != nil {
		return fmt.Errorf("store: load retained: %w", err)
	}
	var corrupt []string
	for rows.Next() {
		var (
			topic string
			b     []byte
		)
		if err := rows.Scan(&topic, &b); err != nil {
			rows.Close()
			return fmt.Errorf("store: load retained: %w", err)
		}
		e, err := broker.UnmarshalEnvelope(b)
		if err != nil {
			s.log().Warn("store: dropping corrupt retained envelope", "topic", topic, "err", err)
			corrupt = append(corrupt, topic)
			continue
		}
		f(e)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("store: load retained: %w", err)
	}
	for _, t := range corrupt {
		if err := s.DeleteRetained(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

func validateSubscription(d broker.DurableSubscription) error {
	if d.ID == "" {
		return fmt.Errorf("%w: empty id", ErrInvalidSubscription)
	}
	for _, f := range d.Filters {
		if err := broker.ValidateFilter(f); err != nil {
			return fmt.Errorf("%w %q: %w", ErrInvalidSubscription, d.ID, err)
		}
	}
	for _, f := range d.Specs {
		if err := broker.ValidateFilter(f.Topic); err != nil {
			return fmt.Errorf("%w %q: %w", ErrInvalidSubscription, d.ID, err)
		}
	}
	if d.QoS > 2 {
		return fmt.Errorf("%w %q: qos %d", ErrInvalidSubscription, d.ID, d.QoS)
	}
	return nil
}

// SaveSubscription implements broker.Spool. Saving an id again replaces
// its filters and QoS and keeps its queue.
func (s *Store) SaveSubscription(ctx context.Context, d broker.DurableSubscription) error {
	if err := validateSubscription(d); err != nil {
		return fmt.Errorf("store: save subscription: %w", err)
	}
	if d.Filters == nil {
		d.Filters = []string{}
	}
	filters, err := json.Marshal(d.Filters)
	if err != nil {
		return fmt.Errorf("store: save subscription %q: %w", d.ID, err)
	}
	specs := []byte{}
	if len(d.Specs) > 0 {
		if specs, err = json.Marshal(d.Specs); err != nil {
			return fmt.Errorf("store: save subscription %q: %w", d.ID, err)
		}
	}
	if err := s.exec(ctx,
		`INSERT INTO subscriptions(id, filters, qos, specs, principal) VALUES (?, ?, ?, ?, ?)
		 ON CONFLICT(id) DO UPDATE SET filters = excluded.filters, qos = excluded.qos, specs = excluded.specs,
		 principal = excluded.principal`,
		d.ID, string(filters), d.QoS, string(specs), d.Principal); err != nil {
		return fmt.Errorf("store: save subscription %q: %w", d.ID, err)
	}
	return nil
}

// gcMessages deletes the envelopes among ids no queue refers to any more.
func gcMessages(ctx context.Context, tx *sql.Tx, ids []int64) error {
	st, err := tx.PrepareContext(ctx, `DELETE FROM messages WHERE id = ? AND NOT EXISTS (SELECT 1 FROM queue WHERE msg = ? AND msg <> 0)`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, id := range ids {
		if _, err := st.ExecContext(ctx, id, id); err != nil {
			return err
		}
	}
	return nil
}

// queuedMessages returns the envelope ids a subscriber's queue refers to,
// with seq in [from, to].
func queuedMessages(ctx context.Context, tx *sql.Tx, id string, from, to int64) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT msg FROM queue WHERE subscriber = ? AND seq BETWEEN ? AND ?`, id, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var m int64
		if err := rows.Scan(&m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteSubscription implements broker.Spool. Deleting an unknown id is
// not an error (its queue, if any, is still dropped).
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE id = ?`, id); err != nil {
			return err
		}
		msgs, err := queuedMessages(ctx, tx, id, 0, math.MaxInt64)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM queue WHERE subscriber = ?`, id); err != nil {
			return err
		}
		return gcMessages(ctx, tx, msgs)
	})
	if err != nil {
		return fmt.Errorf("store: delete subscription %q: %w", id, err)
	}
	return nil
}

// LoadSubscriptions implements broker.Spool, sorted by id.
func (s *Store) LoadSubscriptions(ctx context.Context) ([]broker.DurableSubscription, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT s.id, s.filters, s.qos, s.specs, s.principal,
		(SELECT COALESCE(MAX(seq), 0) FROM queue q WHERE q.subscriber = s.id)
		FROM subscriptions s ORDER BY s.id`)
	if err != nil {
		return nil, fmt.Errorf("store: load subscriptions: %w", err)
	}
	defer rows.Close()
	var out []broker.DurableSubscription
	for rows.Next() {
		var (
			d              broker.DurableSubscription
			filters, specs string
		)
		if err := rows.Scan(&d.ID, &filters, &d.QoS, &specs, &d.Principal, &d.LastSeq); err != nil {
			return nil, fmt.Errorf("store: load subscriptions: %w", err)
		}
		if err := json.Unmarshal([]byte(filters), &d.Filters); err != nil {
			return nil, fmt.Errorf("store: load subscriptions: filters of %q: %w", d.ID, err)
		}
		if specs != "" {
			if err := json.Unmarshal([]byte(specs), &d.Specs); err != nil {
				return nil, fmt.Errorf("store: load subscriptions: filter options of %q: %w", d.ID, err)
			}
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: load subscriptions: %w", err)
	}
	return out, nil
}

// Enqueue implements broker.Spool: the envelope once, a row per
// subscriber referring to it, all in one transaction, committed before it
// returns (and fsynced as Options.SyncInterval says).
func (s *Store) Enqueue(ctx context.Context, e *broker.Envelope, refs []broker.QueueRef) error {
	if len(refs) == 0 && e != nil {
		return nil
	}
	op, err := s.enqueueOp(e, refs)
	if err == nil {
		if s.wr == nil {
			err = directTx(ctx, s.w, op.fn)
		} else {
			err = s.wr.do(ctx, op.fn, op.row)
		}
	}
	return enqueueErr(e, refs, err)
}

// EnqueueAsync implements broker.AsyncSpool: Enqueue without a goroutine
// waiting for the commit. done runs on the store's writer goroutine. The
// write can be withdrawn until the writer takes it into a transaction.
func (s *Store) EnqueueAsync(ctx context.Context, e *broker.Envelope, refs []broker.QueueRef, done func(error)) func() bool {
	if len(refs) == 0 && e != nil {
		done(nil)
		return nil
	}
	op, err := s.enqueueOp(e, refs)
	if err != nil || s.wr == nil {
		done(s.Enqueue(ctx, e, refs))
		return nil
	}
	op.ctx = ctx
	op.cb = func(err error) { done(enqueueErr(e, refs, err)) }
	s.wr.doAsync(op)
	return func() bool {
		if !op.withdraw() {
			return false
		}
		s.wr.withdrawn.Add(1)
		return true
	}
}

// enqueueErr wraps an error of Enqueue.
func enqueueErr(e *broker.Envelope, refs []broker.QueueRef, err error) error {
	if err == nil {
		return nil
	}
	if e == nil {
		return err
	}
	return fmt.Errorf("store: enqueue %q for %d subscribers: %w", e.Topic, len(refs), err)
}

// enqueueOp is the write of Enqueue.
func (s *Store) enqueueOp(e *broker.Envelope, refs []broker.QueueRef) (*writeOp, error) {
	if e == nil {
		return nil, errors.New("store: enqueue: nil envelope")
	}
	for _, r := range refs {
		if r.Subscriber == "" {
			return nil, fmt.Errorf("%w: empty subscriber id", ErrInvalidSubscription)
		}
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if len(refs) == 1 {
		// Stored once either way; one subscriber's copy lives in its row.
		r := &queueRow{subscriber: refs[0].Subscriber, seq: refs[0].Seq, size: e.Size(), envelope: b}
		return &writeOp{row: r, linger: refs[0].Delivered, fn: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.StmtContext(ctx, s.insQueued).ExecContext(ctx, r.subscriber, r.seq, r.size, r.envelope)
			return err
		}}, nil
	}
	return &writeOp{fn: func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO messages(envelope) VALUES (?)`, b)
		if err != nil {
			return err
		}
		msg, err := res.LastInsertId()
		if err != nil {
			return err
		}
		// A few statements for all the references.
		for rest := refs; len(rest) > 0; {
			chunk := rest[:min(len(rest), removeChunk)]
			rest = rest[len(chunk):]
			args := make([]any, 0, 4*len(chunk))
			for _, r := range chunk {
				args = append(args, r.Subscriber, r.Seq, msg, e.Size())
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO queue(subscriber, seq, msg, size) VALUES (?, ?, ?, ?)`+
				strings.Repeat(", (?, ?, ?, ?)", len(chunk)-1), args...); err != nil {
				return err
			}
		}
		return nil
	}}, nil
}

// Dequeue implements broker.Spool. Entries stay queued until Remove. A
// row whose envelope does not decode (a torn write) is logged, deleted
// and skipped, so it is never served.
func (s *Store) Dequeue(ctx context.Context, id string, after int64, max int) ([]broker.Queued, error) {
	if max <= 0 {
		return nil, fmt.Errorf("store: dequeue %q: max %d: must be positive", id, max)
	}
	var out []broker.Queued
	for len(out) < max {
		got, corrupt, last, err := s.dequeueBatch(ctx, id, after, max-len(out))
		if err != nil {
			return nil, fmt.Errorf("store: dequeue %q: %w", id, err)
		}
		out = append(out, got...)
		if len(corrupt) == 0 {
			break
		}
		if err := s.dropQueued(ctx, id, corrupt); err != nil {
			return nil, fmt.Errorf("store: dequeue %q: %w", id, err)
		}
		after = last
	}
	return out, nil
}

// dequeueBatch reads up to n rows after seq after, returning the decoded
// ones, the seqs of corrupt ones and the last seq read.
func (s *Store) dequeueBatch(ctx context.Context, id string, after int64, n int) (got []broker.Queued, corrupt []int64, last int64, err error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT q.seq, COALESCE(q.envelope, m.envelope) FROM queue q LEFT JOIN messages m ON m.id = q.msg
		 WHERE q.subscriber = ? AND q.seq > ? ORDER BY q.seq LIMIT ?`, id, after, n)
	if err != nil {
		return nil, nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&last, &b); err != nil {
			return nil, nil, 0, err
		}
		e, err := broker.UnmarshalEnvelope(b)
		if err != nil {
			s.log().Warn("store: dropping corrupt queued envelope", "subscriber", id, "seq", last, "err", err)
			corrupt = append(corrupt, last)
			continue
		}
		got = append(got, broker.Queued{Seq: last, Envelope: e})
	}
	return got, corrupt, last, rows.Err()
}

func (s *Store) dropQueued(ctx context.Context, id string, seqs []int64) error {
	return s.Remove(ctx, id, seqs)
}

// Remove implements broker.Spool: the named entries of a subscriber's
// queue go, and so do envelopes no queue refers to any more. A batch is a
// few statements whatever its size (acknowledgements come in batches): a
// run of consecutive sequence numbers, what in-order acknowledgements
// make, is one range delete.
func (s *Store) Remove(ctx context.Context, id string, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(seqs)))
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var single []int64
		for rest := sorted; len(rest) > 0; {
			n := 1
			for n < len(rest) && rest[n] == rest[n-1]+1 {
				n++
			}
			if n < minRangeRemove {
				single = append(single, rest[:n]...)
			} else if err := s.removeRange(ctx, tx, id, rest[0], rest[n-1]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		for len(single) > 0 {
			n := min(len(single), removeChunk)
			if err := removeSeqs(ctx, tx, id, single[:n]); err != nil {
				return err
			}
			single = single[n:]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: remove %d entries of %q: %w", len(seqs), id, err)
	}
	return nil
}

// removeChunk bounds the parameters of one statement (SQLite allows
// 32766).
const removeChunk = 500

// minRangeRemove is the shortest run of consecutive sequence numbers
// Remove deletes as a range.
const minRangeRemove = 4

// rangeDelete is the statement of removeRange.
const rangeDelete = `DELETE FROM queue WHERE subscriber = ? AND seq BETWEEN ? AND ? RETURNING msg`

// removeRange deletes a subscriber's queue entries from seq first to last
// and the envelopes left without one, through the statement prepared at
// Open (parsing it was 3 % of the hub's CPU in the persistent QoS 1 case).
func (s *Store) removeRange(ctx context.Context, tx *sql.Tx, id string, first, last int64) error {
	rows, err := tx.StmtContext(ctx, s.rmRange).QueryContext(ctx, id, first, last)
	if err != nil {
		return err
	}
	return deleteReturned(ctx, tx, rows)
}

// removeSeqs deletes queue entries and the envelopes left without one.
func removeSeqs(ctx context.Context, tx *sql.Tx, id string, seqs []int64) error {
	args := make([]any, 0, len(seqs)+1)
	args = append(args, id)
	for _, q := range seqs {
		args = append(args, q)
	}
	return deleteEntries(ctx, tx, `DELETE FROM queue WHERE subscriber = ? AND seq IN (?`+
		strings.Repeat(",?", len(seqs)-1)+`) RETURNING msg`, args)
}

// deleteEntries runs query, a DELETE of queue entries RETURNING msg, and
// deletes the shared envelopes left without an entry.
func deleteEntries(ctx context.Context, tx *sql.Tx, query string, args []any) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	return deleteReturned(ctx, tx, rows)
}

// deleteReturned reads the msg column of the rows a queue DELETE
// returned and deletes the shared envelopes left without an entry.
func deleteReturned(ctx context.Context, tx *sql.Tx, rows *sql.Rows) error {
	var msgs []any
	for rows.Next() {
		var m int64
		if err := rows.Scan(&m); err != nil {
			rows.Close()
			return err
		}
		if m != 0 { // 0: the envelope was in the row itself
			msgs = append(msgs, m)
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for len(msgs) > 0 {
		chunk := msgs[:min(len(msgs), removeChunk)]
		msgs = msgs[len(chunk):]
		if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id IN (?`+strings.Repeat(",?", len(chunk)-1)+
			`) AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.msg = messages.id AND queue.msg <> 0)`, chunk...); err != nil {
			return err
		}
	}
	return nil
}

// QueueLen returns the number of envelopes in a subscriber's durable queue.
func (s *Store) QueueLen(ctx context.Context, id string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM queue WHERE subscriber = ?`, id).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: queue length of %q: %w", id, err)
	}
	return n, nil
}

// QueueSize implements broker.QueueTrimmer: the number of envelopes in a
// subscriber's durable queue and the total of their Size.
func (s *Store) QueueSize(ctx context.Context, id string) (int, int64, error) {
	var n int
	var size int64
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue WHERE subscriber = ?`, id).Scan(&n, &size); err != nil {
		return 0, 0, fmt.Errorf("store: queue size of %q: %w", id, err)
	}
	return n, size, nil
}

// TrimQueue implements broker.QueueTrimmer: it deletes envelopes from the
// oldest (or, with newest, the newest) end of a subscriber's durable queue
// until at least n of them and bytes of Size are gone, reading only the
// rows it deletes.
func (s *Store) TrimQueue(ctx context.Context, id string, n int, bytes int64, newest bool) (int, int64, error) {
	if n < 0 || bytes < 0 {
		return 0, 0, fmt.Errorf("store: trim queue %q: %d envelopes, %d bytes: must not be negative", id, n, bytes)
	}
	if n == 0 && bytes == 0 {
		return 0, 0, nil
	}
	order, cmp := "ASC", "<="
	if newest {
		order, cmp = "DESC", ">="
	}
	var dropped int
	var size int64
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		dropped, size = 0, 0
		rows, err := tx.QueryContext(ctx, `SELECT seq, size FROM queue WHERE subscriber = ? ORDER BY seq `+order, id)
		if err != nil {
			return err
		}
		var last int64
		for (dropped < n || size < bytes) && rows.Next() {
			var sz int64
			if err := rows.Scan(&last, &sz); err != nil {
				rows.Close()
				return err
			}
			dropped++
			size += sz
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if dropped == 0 {
			return nil
		}
		from, to := int64(0), last
		if newest {
			from, to = last, math.MaxInt64
		}
		msgs, err := queuedMessages(ctx, tx, id, from, to)
		if err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, `DELETE FROM queue WHERE subscriber = ? AND seq `+cmp+` ?`, id, last); err != nil {
			return err
		}
		return gcMessages(ctx, tx, msgs)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: trim queue %q: %w", id, err)
	}
	if dropped > 0 {
		s.log().Warn("store: durable queue trimmed", "subscriber", id, "dropped", dropped, "bytes", size, "newest", newest)
	}
	return dropped, size, nil
}
