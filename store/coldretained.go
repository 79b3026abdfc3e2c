package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/hubsmith/hub/broker"
)

// LoadRetainedHeads implements broker.ColdSpool: every retained envelope,
// sorted by topic, without the payloads larger than above bytes (each
// row is decoded and let go, so the start reads them once without keeping
// them). A row that does not decode is logged, deleted and left out.
func (s *Store) LoadRetainedHeads(ctx context.Context, above int) ([]broker.RetainedHead, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT topic, envelope FROM retained ORDER BY topic`)
	if err != nil {
		return nil, fmt.Errorf("store: load retained: %w", err)
	}
	var (
		out     []broker.RetainedHead
		corrupt []string
	)
	for rows.Next() {
		var (
			topic string
			b     []byte
		)
		if err := rows.Scan(&topic, &b); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: load retained: %w", err)
		}
		e, err := broker.UnmarshalEnvelope(b)
		if err != nil {
			s.log().Warn("store: dropping corrupt retained envelope", "topic", topic, "err", err)
			corrupt = append(corrupt, topic)
			continue
		}
		h := broker.RetainedHead{Envelope: e, Size: e.Size()}
		if len(e.Payload) > above {
			e.Payload, h.Cold = nil, true
		}
		out = append(out, h)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("store: load retained: %w", err)
	}
	for _, t := range corrupt {
		if err := s.DeleteRetained(ctx, t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ReadRetained implements broker.ColdSpool: topic's retained envelope, nil
// when there is none.
func (s *Store) ReadRetained(ctx context.Context, topic string) (*broker.Envelope, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT envelope FROM retained WHERE topic = ?`, topic).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: read retained %q: %w", topic, err)
	}
	e, err := broker.UnmarshalEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("store: read retained %q: %w", topic, err)
	}
	return e, nil
}

var _ broker.ColdSpool = (*Store)(nil)
