package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hubsmith/hub/broker"
)

// AppendHistory records e in the telemetry history of its topic (for
// charts and "last N values"); its Time orders it, now when zero.
// Nothing is recorded unless a caller asks: the hub decides which topics
// have history.
func (s *Store) AppendHistory(ctx context.Context, e *broker.Envelope) error {
	if e == nil {
		return errors.New("store: append history: nil envelope")
	}
	if err := broker.ValidateTopic(e.Topic); err != nil {
		return fmt.Errorf("store: append history: %w", err)
	}
	at := e.Time
	if at.IsZero() {
		at = time.Now()
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return fmt.Errorf("store: append history %q: %w", e.Topic, err)
	}
	if err := s.exec(ctx, `INSERT INTO history(topic, time, envelope) VALUES (?, ?, ?)`,
		e.Topic, at.UnixNano(), b); err != nil {
		return fmt.Errorf("store: append history %q: %w", e.Topic, err)
	}
	return nil
}

// History returns up to limit envelopes of topic recorded at or after
// since and before until (zero: no bound), newest first. Rows that do not
// decode are logged and left out.
func (s *Store) History(ctx context.Context, topic string, since, until time.Time, limit int) ([]*broker.Envelope, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store: history of %q: limit %d: must be positive", topic, limit)
	}
	hi := int64(1<<63 - 1)
	if !until.IsZero() {
		hi = until.UnixNano()
	}
	var lo int64 = -1 << 63
	if !since.IsZero() {
		lo = since.UnixNano()
	}
	rows, err := s.r.QueryContext(ctx,
		`SELECT id, envelope FROM history WHERE topic = ? AND time >= ? AND time < ?
		 ORDER BY time DESC, id DESC LIMIT ?`, topic, lo, hi, limit)
	if err != nil {
		return nil, fmt.Errorf("store: history of %q: %w", topic, err)
	}
	defer rows.Close()
	var out []*broker.Envelope
	for rows.Next() {
		var (
			id int64
			b  []byte
		)
		if err := rows.Scan(&id, &b); err != nil {
			return nil, fmt.Errorf("store: history of %q: %w", topic, err)
		}
		e, err := broker.UnmarshalEnvelope(b)
		if err != nil {
			s.log().Warn("store: skipping corrupt history row", "topic", topic, "id", id, "err", err)
			continue
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: history of %q: %w", topic, err)
	}
	return out, nil
}

// PruneHistory deletes history recorded before before, and returns how
// many rows went.
func (s *Store) PruneHistory(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM history WHERE time < ?`, before.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune history: %w", err)
	}
	return int(n), nil
}
