package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrInvalidBucket marks an empty bucket name.
var ErrInvalidBucket = errors.New("invalid bucket")

// KVPut sets key in bucket.
func (s *Store) KVPut(ctx context.Context, bucket, key string, value []byte) error {
	if bucket == "" {
		return fmt.Errorf("store: kv put %q: %w: empty name", key, ErrInvalidBucket)
	}
	if value == nil {
		value = []byte{}
	}
	if err := s.exec(ctx,
		`INSERT INTO kv(bucket, key, value) VALUES (?, ?, ?)
		 ON CONFLICT(bucket, key) DO UPDATE SET value = excluded.value`,
		bucket, key, value); err != nil {
		return fmt.Errorf("store: kv put %s/%q: %w", bucket, key, err)
	}
	return nil
}

// kvGetQuery is KVGet's statement (Store.kvGet).
const kvGetQuery = `SELECT value FROM kv WHERE bucket = ? AND key = ?`

// KVGet reads key in bucket (ErrNotFound).
func (s *Store) KVGet(ctx context.Context, bucket, key string) ([]byte, error) {
	var v []byte
	err := s.kvGet.QueryRowContext(ctx, bucket, key).Scan(&v)
	if err != nil {
		return nil, fmt.Errorf("store: kv get %s/%q: %w", bucket, key, notFound(err))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// KVDelete removes key from bucket (no error when absent).
func (s *Store) KVDelete(ctx context.Context, bucket, key string) error {
	if err := s.exec(ctx, `DELETE FROM kv WHERE bucket = ? AND key = ?`, bucket, key); err != nil {
		return fmt.Errorf("store: kv delete %s/%q: %w", bucket, key, err)
	}
	return nil
}

// KVList returns a bucket's entries sorted by key.
func (s *Store) KVList(ctx context.Context, bucket string) ([]KV, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT key, value FROM kv WHERE bucket = ? ORDER BY key`, bucket)
	if err != nil {
		return nil, fmt.Errorf("store: kv list %s: %w", bucket, err)
	}
	defer rows.Close()
	var out []KV
	for rows.Next() {
		var e KV
		if err := rows.Scan(&e.Key, &e.Value); err != nil {
			return nil, fmt.Errorf("store: kv list %s: %w", bucket, err)
		}
		if e.Value == nil {
			e.Value = []byte{}
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: kv list %s: %w", bucket, err)
	}
	return out, nil
}

// KVDeleteBucket removes every entry of bucket.
func (s *Store) KVDeleteBucket(ctx context.Context, bucket string) error {
	if err := s.exec(ctx, `DELETE FROM kv WHERE bucket = ?`, bucket); err != nil {
		return fmt.Errorf("store: kv delete bucket %s: %w", bucket, err)
	}
	return nil
}

// KVOp is one change of a KVApply batch: a put, or a deletion when Delete
// is set.
type KVOp struct {
	Bucket string
	Key    string
	Value  []byte
	Delete bool
}

// KVApply makes every change of ops in one transaction: all of them or,
// on error, none. Writers that queue many small changes (an adapter's
// session records) pay one commit for the lot.
func (s *Store) KVApply(ctx context.Context, ops []KVOp) error {
	if len(ops) == 0 {
		return nil
	}
	for _, op := range ops {
		if op.Bucket == "" {
			return fmt.Errorf("store: kv apply %q: %w: empty name", op.Key, ErrInvalidBucket)
		}
	}
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, op := range ops {
			var err error
			if op.Delete {
				_, err = tx.ExecContext(ctx, `DELETE FROM kv WHERE bucket = ? AND key = ?`, op.Bucket, op.Key)
			} else {
				v := op.Value
				if v == nil {
					v = []byte{}
				}
				_, err = tx.ExecContext(ctx,
					`INSERT INTO kv(bucket, key, value) VALUES (?, ?, ?)
					 ON CONFLICT(bucket, key) DO UPDATE SET value = excluded.value`,
					op.Bucket, op.Key, v)
			}
			if err != nil {
				return fmt.Errorf("%s/%q: %w", op.Bucket, op.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: kv apply %d changes: %w", len(ops), err)
	}
	return nil
}
