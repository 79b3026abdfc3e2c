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
	var out []broker.RetainedHead
	err := s.eachRetained(ctx, func(e *broker.Envelope) {
		h := broker.RetainedHead{Envelope: e, Size: e.Size()}
		if len(e.Payload) > above {
			e.Payload, h.Cold = nil, true
		}
		out = append(out, h)
	})
	if err != nil {
		return nil, err
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
