package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// queueRow is one envelope queued for one subscriber, kept in its queue
// row (msg 0): the durable QoS >= 1 hot path. The writer inserts the row
// ops that follow one another in a batch with one statement instead of a
// statement and a savepoint each.
type queueRow struct {
	subscriber string
	seq        int64
	size       int
	envelope   []byte
}

// rowInserts are the prepared multi-row queue inserts: rowInserts[k]
// inserts 2<<k rows.
type rowInserts [8]*sql.Stmt

// maxRowInsert is the most rows one prepared insert takes.
const maxRowInsert = 2 << (len(rowInserts{}) - 1)

// prepareRowInserts prepares the multi-row queue inserts on db (the write
// connection).
func prepareRowInserts(ctx context.Context, db *sql.DB) (rowInserts, error) {
	var r rowInserts
	for k := range r {
		n := 2 << k
		st, err := db.PrepareContext(ctx, `INSERT INTO queue(subscriber, seq, msg, size, envelope) VALUES (?, ?, 0, ?, ?)`+
			strings.Repeat(", (?, ?, 0, ?, ?)", n-1))
		if err != nil {
			r.close()
			return rowInserts{}, fmt.Errorf("prepare the %d-row queue insert: %w", n, err)
		}
		r[k] = st
	}
	return r, nil
}

// close closes the prepared statements.
func (r *rowInserts) close() {
	for _, st := range r {
		if st != nil {
			_ = st.Close()
		}
	}
}

// insertRows inserts the rows of ops, all row ops, in one savepoint with
// as few statements as the prepared sizes allow. It returns false when
// the insert failed and was undone (one row clashed, say): the caller
// then runs the ops one by one. An error fails the whole batch.
func (w *writer) insertRows(tx *sql.Tx, save, undo, release *sql.Stmt, ops []*writeOp) (bool, error) {
	if _, err := save.Exec(); err != nil {
		return false, err
	}
	ok := true
	args := make([]any, 0, 4*min(len(ops), maxRowInsert))
	for rest := ops; len(rest) > 1 && ok; {
		k := len(rowInserts{}) - 1
		for 2<<k > len(rest) {
			k--
		}
		chunk := rest[:2<<k]
		rest = rest[len(chunk):]
		args = args[:0]
		for _, op := range chunk {
			r := op.row
			args = append(args, r.subscriber, r.seq, r.size, r.envelope)
		}
		if _, err := tx.Stmt(w.rows[k]).Exec(args...); err != nil {
			ok = false
			break
		}
		if len(rest) == 1 {
			// The odd one: its own op's statement.
			if err := safeRun(rest[0], tx); err != nil {
				ok = false
			}
			rest = nil
		}
	}
	if !ok {
		if _, err := undo.Exec(); err != nil {
			return false, err
		}
	}
	if _, err := release.Exec(); err != nil {
		return false, err
	}
	return ok, nil
}

var _ broker.AsyncSpool = (*Store)(nil)
