package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// HistoryLimits are one topic's retention limits; 0 means no bound of
// that kind.
type HistoryLimits struct {
	// MaxPoints bounds the points of each of the topic's series.
	MaxPoints int
	// MaxAge drops points and archived messages older than that.
	MaxAge time.Duration
	// MaxArchive bounds the topic's archived messages.
	MaxArchive int
}

// ApplyRetention applies each topic's limits (as limits says) to the
// history of topics (nil: every topic), a few hundred topics a
// transaction, and returns how many points and archived messages went.
func (s *Store) ApplyRetention(ctx context.Context, topics []string, limits func(topic string) HistoryLimits, now time.Time) (int64, error) {
	if topics == nil {
		var err error
		if topics, err = s.HistoryTopics(ctx); err != nil {
			return 0, err
		}
	}
	var total int64
	for chunk := range slices.Chunk(topics, retentionChunk) {
		var n int64
		err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			n = 0
			for _, topic := range chunk {
				l := limits(topic)
				if l.MaxPoints <= 0 && l.MaxAge <= 0 && l.MaxArchive <= 0 {
					continue
				}
				d, err := retainTopic(ctx, tx, topic, l, now)
				if err != nil {
					return fmt.Errorf("%q: %w", topic, err)
				}
				n += d
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("store: apply history retention: %w", err)
		}
		total += n
	}
	return total, nil
}

// retentionChunk is how many topics share one retention transaction.
const retentionChunk = 256

// retainTopic applies l to one topic.
func retainTopic(ctx context.Context, tx *sql.Tx, topic string, l HistoryLimits, now time.Time) (int64, error) {
	var n, tid int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM history_topics WHERE topic = ?`, topic).Scan(&tid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, points FROM series WHERE topic = ?`, tid)
	if err != nil {
		return 0, err
	}
	type sp struct{ id, points int64 }
	var ss []sp
	for rows.Next() {
		var x sp
		if err := rows.Scan(&x.id, &x.points); err != nil {
			rows.Close()
			return 0, err
		}
		ss = append(ss, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for _, x := range ss {
		if l.MaxAge > 0 {
			d, err := trimPoints(ctx, tx, x.id, now.Add(-l.MaxAge).UnixNano())
			if err != nil {
				return 0, err
			}
			n += d
			x.points -= d
		}
		if l.MaxPoints > 0 && x.points > int64(l.MaxPoints) {
			var cut int64
			err := tx.QueryRowContext(ctx, `SELECT time FROM points WHERE series = ? ORDER BY time DESC LIMIT 1 OFFSET ?`,
				x.id, l.MaxPoints-1).Scan(&cut)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return 0, err
			}
			if err == nil {
				d, err := trimPoints(ctx, tx, x.id, cut)
				if err != nil {
					return 0, err
				}
				n += d
			}
		}
	}
	if l.MaxAge > 0 {
		d, err := trimArchive(ctx, tx, tid, `time < ?`, now.Add(-l.MaxAge).UnixNano())
		if err != nil {
			return 0, err
		}
		n += d
	}
	if l.MaxArchive > 0 {
		var (
			cut int64
			id  string
		)
		err := tx.QueryRowContext(ctx, `SELECT time, id FROM archive WHERE topic = ? ORDER BY time DESC, id DESC LIMIT 1 OFFSET ?`,
			tid, l.MaxArchive-1).Scan(&cut, &id)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
		if err == nil {
			d, err := trimArchive(ctx, tx, tid, `(time, id) < (?, ?)`, cut, id)
			if err != nil {
				return 0, err
			}
			n += d
		}
	}
	return n, nil
}

// trimPoints deletes the points of series sid before the time before and
// keeps the series' count.
func trimPoints(ctx context.Context, tx *sql.Tx, sid, before int64) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM points WHERE series = ? AND time < ?`, sid, before)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE series SET points = max(points - ?, 0) WHERE id = ?`, n, sid)
	return n, err
}

// trimArchive deletes the archived messages of topic tid that cond (on
// time and id) selects and keeps the topic's counts.
func trimArchive(ctx context.Context, tx *sql.Tx, tid int64, cond string, args ...any) (int64, error) {
	a := append([]any{tid}, args...)
	var n, bytes int64
	if err := tx.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*), COALESCE(sum(%d + length(CAST(id AS BLOB)) + length(CAST(content_type AS BLOB)) + length(payload)), 0)
		FROM archive WHERE topic = ? AND %s`, ArchiveEntryBytes, cond), a...).Scan(&n, &bytes); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM archive WHERE topic = ? AND `+cond, a...); err != nil {
		return 0, err
	}
	_, err := tx.ExecContext(ctx, `UPDATE history_topics SET archived = max(archived - ?, 0), archive_bytes = max(archive_bytes - ?, 0) WHERE id = ?`,
		n, bytes, tid)
	return n, err
}

// maxTrimSteps bounds the search for the cut-off time of TrimHistory.
const maxTrimSteps = 48

// TrimHistory enforces the history's total size bound: when its estimated
// size (HistoryUsage.Bytes) is past maxBytes, the oldest points and
// archived messages of all topics go first, until it is back under 95% of
// maxBytes. It returns how many went.
func (s *Store) TrimHistory(ctx context.Context, maxBytes int64, now time.Time) (int64, error) {
	if maxBytes <= 0 {
		return 0, nil
	}
	u, err := s.HistoryUsage(ctx)
	if err != nil {
		return 0, err
	}
	if u.Bytes <= maxBytes {
		return 0, nil
	}
	need := u.Bytes - maxBytes*95/100
	var oldest sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT min(m) FROM (
		SELECT (SELECT time FROM points p WHERE p.series = s.id ORDER BY time LIMIT 1) AS m FROM series s WHERE s.points > 0
		UNION ALL
		SELECT (SELECT time FROM archive a WHERE a.topic = t.id ORDER BY time LIMIT 1) FROM history_topics t WHERE t.archived > 0)`).Scan(&oldest); err != nil {
		return 0, fmt.Errorf("store: trim history: %w", err)
	}
	if !oldest.Valid {
		return 0, nil
	}
	// The cut-off grows from the oldest entry, doubling, until what lies
	// before it is as much as must go: its cost is about what is deleted.
	// Then it is narrowed down by bisection, so that not much more than
	// what must go goes.
	lo, top := oldest.Int64, max(now.UnixNano(), oldest.Int64)+1
	step := max((top-lo)/4096, int64(time.Millisecond))
	below, cut := lo, top // bytesBefore(below) < need <= bytesBefore(cut)
	for range maxTrimSteps {
		c := lo + step
		if c >= top {
			break
		}
		b, err := s.bytesBefore(ctx, c)
		if err != nil {
			return 0, err
		}
		if b >= need {
			cut = c
			break
		}
		below = c
		step *= 2
	}
	for range maxTrimSteps {
		if cut-below <= int64(time.Millisecond) {
			break
		}
		mid := below + (cut-below)/2
		b, err := s.bytesBefore(ctx, mid)
		if err != nil {
			return 0, err
		}
		if b >= need {
			cut = mid
		} else {
			below = mid
		}
	}
	// A large trim (a bound lowered, say) is cut into time slices of about
	// trimChunk entries each, one transaction each, so that other writes
	// (QoS 1 publishes) are not held up behind one long transaction.
	parts := min(max(need/PointBytes/trimChunk, 1), maxTrimSlices)
	var total int64
	for i := int64(1); i <= parts; i++ {
		c := oldest.Int64 + (cut-oldest.Int64)*i/parts
		if i == parts {
			c = cut
		}
		n, err := s.deleteBefore(ctx, c)
		total += n
		if err != nil {
			return total, fmt.Errorf("store: trim history: %w", err)
		}
	}
	return total, nil
}

// trimChunk is about how many entries one transaction of TrimHistory
// deletes, and maxTrimSlices how many transactions one call makes at most.
const (
	trimChunk     = 20000
	maxTrimSlices = 1000
)

// deleteBefore deletes every point and archived message before cut, in
// one transaction.
func (s *Store) deleteBefore(ctx context.Context, cut int64) (int64, error) {
	var n int64
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT id FROM series WHERE points > 0`)
		if err != nil {
			return err
		}
		sids, err := scanIDs(rows)
		if err != nil {
			return err
		}
		for _, sid := range sids {
			d, err := trimPoints(ctx, tx, sid, cut)
			if err != nil {
				return err
			}
			n += d
		}
		rows, err = tx.QueryContext(ctx, `SELECT id FROM history_topics WHERE archived > 0`)
		if err != nil {
			return err
		}
		tids, err := scanIDs(rows)
		if err != nil {
			return err
		}
		for _, tid := range tids {
			d, err := trimArchive(ctx, tx, tid, `time < ?`, cut)
			if err != nil {
				return err
			}
			n += d
		}
		return nil
	})
	return n, err
}

// bytesBefore estimates the size of the history's entries before t.
func (s *Store) bytesBefore(ctx context.Context, t int64) (int64, error) {
	var pts, arch int64
	err := s.r.QueryRowContext(ctx, fmt.Sprintf(`SELECT
		(SELECT COALESCE(sum((SELECT count(*) FROM points p WHERE p.series = s.id AND p.time < ?1)), 0) FROM series s WHERE s.points > 0),
		(SELECT COALESCE(sum((SELECT COALESCE(sum(%d + length(CAST(id AS BLOB)) + length(CAST(content_type AS BLOB)) + length(payload)), 0)
			FROM archive a WHERE a.topic = t.id AND a.time < ?1)), 0) FROM history_topics t WHERE t.archived > 0)`, ArchiveEntryBytes), t).Scan(&pts, &arch)
	if err != nil {
		return 0, fmt.Errorf("store: trim history: %w", err)
	}
	return pts*PointBytes + arch, nil
}

func scanIDs(rows *sql.Rows) ([]int64, error) {
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
