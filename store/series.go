package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"time"
)

// Estimated bytes on disk of one point and of one archived message beside
// its payload, id and content type (B-tree cell, key and page slack; see
// history's size benchmark). The history's size bound counts these.
const (
	PointBytes        = 32
	ArchiveEntryBytes = 48
)

// maxHistoryLimit bounds what one read of the history returns per series.
const maxHistoryLimit = 100000

// HistoryPoint is one numeric value of a topic's field.
type HistoryPoint struct {
	// Field names the value within the topic's payloads ("value" for a
	// bare number).
	Field string
	// Unit is the value's unit when the payload says (SenML).
	Unit string
	// Time is when it was measured.
	Time time.Time
	// Value is the number.
	Value float64
}

// ArchivedMessage is a reading's payload kept for XEP-0313 (Message
// Archive Management).
type ArchivedMessage struct {
	// ArchiveID is the message's id in the archive (unique, ordered by
	// time); set by the store.
	ArchiveID string
	// ID is the envelope's id.
	ID string
	// Topic is the topic it was published to.
	Topic string
	// Time is when it entered the hub.
	Time time.Time
	// ContentType and Payload are the envelope's.
	ContentType string
	Payload     []byte
}

// HistoryRecord is what one envelope adds to the history: its points and,
// when Archive is set, its payload in the archive.
type HistoryRecord struct {
	Topic   string
	Points  []HistoryPoint
	Archive *ArchivedMessage
}

// histIDs caches the ids of the history's topics and series, which are
// never deleted: a batch then writes its points without looking them up.
// Ids enter it only once the transaction that found or made them has
// committed.
type histIDs struct {
	mu     sync.Mutex
	topics map[string]int64
	series map[seriesKey]seriesEntry
}

type seriesKey struct {
	topic int64
	field string
}

type seriesEntry struct {
	id   int64
	unit string
}

// maxCachedIDs bounds the cache; past it, it starts afresh.
const maxCachedIDs = 1 << 17

func (c *histIDs) topic(t string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.topics[t]
	return id, ok
}

func (c *histIDs) seriesOf(k seriesKey) (seriesEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.series[k]
	return e, ok
}

func (c *histIDs) merge(topics map[string]int64, series map[seriesKey]seriesEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.topics == nil || len(c.topics)+len(topics) > maxCachedIDs || len(c.series)+len(series) > maxCachedIDs {
		c.topics, c.series = map[string]int64{}, map[seriesKey]seriesEntry{}
	}
	maps.Copy(c.topics, topics)
	maps.Copy(c.series, series)
}

// WriteHistory records a batch in one transaction. A point at the same
// time as one its series has already is left out (the first stays).
func (s *Store) WriteHistory(ctx context.Context, recs []HistoryRecord) error {
	if len(recs) == 0 {
		return nil
	}
	var (
		topics map[string]int64
		series map[seriesKey]seriesEntry
	)
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		topics, series = map[string]int64{}, map[seriesKey]seriesEntry{}
		st, err := prepareHistory(ctx, tx)
		if err != nil {
			return err
		}
		defer st.close()
		added := map[int64]int64{}
		type arch struct{ n, bytes int64 }
		archived := map[int64]arch{}
		for _, r := range recs {
			tid, ok := topics[r.Topic]
			if !ok {
				if tid, ok = s.hist.topic(r.Topic); !ok {
					if tid, err = st.topicID(ctx, r.Topic); err != nil {
						return err
					}
				}
				topics[r.Topic] = tid
			}
			for _, p := range r.Points {
				k := seriesKey{tid, p.Field}
				se, ok := series[k]
				if !ok {
					se, ok = s.hist.seriesOf(k)
				}
				if !ok || (p.Unit != "" && p.Unit != se.unit) {
					if se, err = st.seriesID(ctx, k, p.Unit); err != nil {
						return err
					}
				}
				series[k] = se
				res, err := st.insPoint.ExecContext(ctx, se.id, p.Time.UnixNano(), p.Value)
				if err != nil {
					return err
				}
				n, err := res.RowsAffected()
				if err != nil {
					return err
				}
				added[se.id] += n
			}
			if a := r.Archive; a != nil {
				res, err := st.insArchive.ExecContext(ctx, tid, a.Time.UnixNano(), a.ID, a.ContentType, a.Payload)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n > 0 {
					x := archived[tid]
					archived[tid] = arch{x.n + 1, x.bytes + archiveSize(a.ID, a.ContentType, len(a.Payload))}
				}
			}
		}
		for sid, n := range added {
			if n == 0 {
				continue
			}
			if _, err := st.addPoints.ExecContext(ctx, n, sid); err != nil {
				return err
			}
		}
		for tid, a := range archived {
			if _, err := st.addArchived.ExecContext(ctx, a.n, a.bytes, tid); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: write history (%d records): %w", len(recs), err)
	}
	s.hist.merge(topics, series)
	return nil
}

// archiveSize is what an archived message counts against the size bound.
func archiveSize(id, contentType string, payload int) int64 {
	return int64(ArchiveEntryBytes + len(id) + len(contentType) + payload)
}

// historyStmts are WriteHistory's statements, prepared once a batch.
type historyStmts struct {
	selTopic, insTopic, selSeries, insSeries, setUnit *sql.Stmt
	insPoint, insArchive, addPoints, addArchived      *sql.Stmt
}

func prepareHistory(ctx context.Context, tx *sql.Tx) (*historyStmts, error) {
	st := &historyStmts{}
	for _, p := range []struct {
		to *(*sql.Stmt)
		q  string
	}{
		{&st.selTopic, `SELECT id FROM history_topics WHERE topic = ?`},
		{&st.insTopic, `INSERT INTO history_topics(topic) VALUES (?)`},
		{&st.selSeries, `SELECT id, unit FROM series WHERE topic = ? AND field = ?`},
		{&st.insSeries, `INSERT INTO series(topic, field, unit) VALUES (?, ?, ?)`},
		{&st.setUnit, `UPDATE series SET unit = ? WHERE id = ?`},
		{&st.insPoint, `INSERT OR IGNORE INTO points(series, time, value) VALUES (?, ?, ?)`},
		{&st.insArchive, `INSERT OR IGNORE INTO archive(topic, time, id, content_type, payload) VALUES (?, ?, ?, ?, ?)`},
		{&st.addPoints, `UPDATE series SET points = points + ? WHERE id = ?`},
		{&st.addArchived, `UPDATE history_topics SET archived = archived + ?, archive_bytes = archive_bytes + ? WHERE id = ?`},
	} {
		s, err := tx.PrepareContext(ctx, p.q)
		if err != nil {
			st.close()
			return nil, err
		}
		*p.to = s
	}
	return st, nil
}

func (st *historyStmts) close() {
	for _, s := range []*sql.Stmt{st.selTopic, st.insTopic, st.selSeries, st.insSeries, st.setUnit,
		st.insPoint, st.insArchive, st.addPoints, st.addArchived} {
		if s != nil {
			s.Close()
		}
	}
}

func (st *historyStmts) topicID(ctx context.Context, topic string) (int64, error) {
	var id int64
	err := st.selTopic.QueryRowContext(ctx, topic).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	res, err := st.insTopic.ExecContext(ctx, topic)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// seriesID finds or makes the series k, recording unit when it is new.
func (st *historyStmts) seriesID(ctx context.Context, k seriesKey, unit string) (seriesEntry, error) {
	var e seriesEntry
	err := st.selSeries.QueryRowContext(ctx, k.topic, k.field).Scan(&e.id, &e.unit)
	if err == nil {
		if unit != "" && unit != e.unit {
			if _, err := st.setUnit.ExecContext(ctx, unit, e.id); err != nil {
				return e, err
			}
			e.unit = unit
		}
		return e, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return e, err
	}
	res, err := st.insSeries.ExecContext(ctx, k.topic, k.field, unit)
	if err != nil {
		return e, err
	}
	e.id, err = res.LastInsertId()
	e.unit = unit
	return e, err
}

// HistoryQuery selects points of one topic.
type HistoryQuery struct {
	// Topic is the topic; required.
	Topic string
	// Field selects one series ("": every series of the topic).
	Field string
	// Since and Until bound the time, Since included, Until excluded
	// (zero: no bound).
	Since, Until time.Time
	// Limit is the most points (or buckets) per series: the newest ones
	// of the range; required, at most 100 000.
	Limit int
	// Step, when positive, groups points into buckets of that length,
	// aligned to the Unix epoch, each with the average, minimum, maximum
	// and count of its points.
	Step time.Duration
}

// HistorySeries is one series of a read, its points oldest first.
type HistorySeries struct {
	Field  string
	Unit   string
	Points []HistoryValue
}

// HistoryValue is a point, or with a step a bucket: its start, the average
// (Value), minimum, maximum and count of its points (Count 1 and Min = Max
// = Value for a plain point).
type HistoryValue struct {
	Time     time.Time
	Value    float64
	Min, Max float64
	Count    int
}

// ReadHistory returns the series of q.Topic (or only q.Field) with their
// points in range. ErrNotFound: the topic (or the field) has no history.
func (s *Store) ReadHistory(ctx context.Context, q HistoryQuery) ([]HistorySeries, error) {
	if q.Limit <= 0 || q.Limit > maxHistoryLimit {
		return nil, fmt.Errorf("store: history of %q: limit %d: want 1..%d", q.Topic, q.Limit, maxHistoryLimit)
	}
	if q.Step < 0 {
		return nil, fmt.Errorf("store: history of %q: step %v: must not be negative", q.Topic, q.Step)
	}
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.Since.IsZero() {
		lo = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		hi = q.Until.UnixNano()
	}
	query := `SELECT s.id, s.field, s.unit FROM series s JOIN history_topics t ON t.id = s.topic WHERE t.topic = ?`
	args := []any{q.Topic}
	if q.Field != "" {
		query += ` AND s.field = ?`
		args = append(args, q.Field)
	}
	rows, err := s.r.QueryContext(ctx, query+` ORDER BY s.field`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: history of %q: %w", q.Topic, err)
	}
	var (
		out []HistorySeries
		ids []int64
	)
	for rows.Next() {
		var (
			id int64
			hs HistorySeries
		)
		if err := rows.Scan(&id, &hs.Field, &hs.Unit); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: history of %q: %w", q.Topic, err)
		}
		hs.Points = []HistoryValue{}
		out = append(out, hs)
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: history of %q: %w", q.Topic, err)
	}
	if len(out) == 0 {
		what := "topic " + fmt.Sprintf("%q", q.Topic)
		if q.Field != "" {
			what = fmt.Sprintf("field %q of topic %q", q.Field, q.Topic)
		}
		return nil, fmt.Errorf("store: history: %s: %w", what, ErrNotFound)
	}
	for i, id := range ids {
		if out[i].Points, err = s.readSeries(ctx, id, lo, hi, q.Limit, q.Step); err != nil {
			return nil, fmt.Errorf("store: history of %q field %q: %w", q.Topic, out[i].Field, err)
		}
	}
	return out, nil
}

func (s *Store) readSeries(ctx context.Context, id, lo, hi int64, limit int, step time.Duration) ([]HistoryValue, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if step > 0 {
		// Integer division truncates toward zero; times before 1970 are
		// shifted so that buckets stay aligned.
		rows, err = s.r.QueryContext(ctx, `SELECT b, avg(value), min(value), max(value), count(*) FROM
			(SELECT CASE WHEN time >= 0 THEN time / ?1 ELSE (time + 1) / ?1 - 1 END AS b, value FROM points
			 WHERE series = ?2 AND time >= ?3 AND time < ?4)
			GROUP BY b ORDER BY b DESC LIMIT ?5`, int64(step), id, lo, hi, limit)
	} else {
		rows, err = s.r.QueryContext(ctx, `SELECT time, value, value, value, 1 FROM points
			WHERE series = ? AND time >= ? AND time < ? ORDER BY time DESC LIMIT ?`, id, lo, hi, limit)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	pts := []HistoryValue{}
	for rows.Next() {
		var (
			t int64
			v HistoryValue
		)
		if err := rows.Scan(&t, &v.Value, &v.Min, &v.Max, &v.Count); err != nil {
			return nil, err
		}
		if step > 0 {
			t *= int64(step)
		}
		v.Time = time.Unix(0, t).UTC()
		pts = append(pts, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, j := 0, len(pts)-1; i < j; i, j = i+1, j-1 {
		pts[i], pts[j] = pts[j], pts[i]
	}
	return pts, nil
}

// HistoryUsage is what the history holds.
type HistoryUsage struct {
	Topics   int
	Series   int
	Points   int64
	Archived int64
	// Bytes is the estimated size on disk (PointBytes a point, an
	// archived message ArchiveEntryBytes with its payload).
	Bytes int64
}

// HistoryUsage returns the history's counts and estimated size.
func (s *Store) HistoryUsage(ctx context.Context) (HistoryUsage, error) {
	var u HistoryUsage
	err := s.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM history_topics), (SELECT count(*) FROM series),
		(SELECT COALESCE(sum(points), 0) FROM series),
		(SELECT COALESCE(sum(archived), 0) FROM history_topics),
		(SELECT COALESCE(sum(archive_bytes), 0) FROM history_topics)`).Scan(&u.Topics, &u.Series, &u.Points, &u.Archived, &u.Bytes)
	if err != nil {
		return u, fmt.Errorf("store: history usage: %w", err)
	}
	u.Bytes += u.Points * PointBytes
	return u, nil
}

// HistoryTopics returns the topics that have history, sorted.
func (s *Store) HistoryTopics(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT topic FROM history_topics ORDER BY topic`)
	if err != nil {
		return nil, fmt.Errorf("store: history topics: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("store: history topics: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: history topics: %w", err)
	}
	return out, nil
}
