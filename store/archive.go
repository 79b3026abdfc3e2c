package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidArchiveID marks an archive id that is not one the store made.
var ErrInvalidArchiveID = errors.New("invalid archive id")

// maxArchivePage bounds one page of an archive query.
const maxArchivePage = 1000

// ArchiveQuery selects a page of a topic's archived messages (XEP-0313
// filters and XEP-0059 paging).
type ArchiveQuery struct {
	// Topic is the topic; required.
	Topic string
	// Start and End bound the time, both included (zero: no bound).
	Start, End time.Time
	// After and Before are archive ids: the page starts after After, or
	// ends before Before.
	After, Before string
	// Last asks for the last page (an empty XEP-0059 <before/>).
	Last bool
	// Max is the page's size, 1..1000.
	Max int
}

// ArchivePage is a page of archived messages, oldest first.
type ArchivePage struct {
	Messages []ArchivedMessage
	// Count is how many messages the time filter selects in all.
	Count int
	// FirstIndex is the position of Messages[0] among them.
	FirstIndex int
	// Complete is true when the page reaches the end of the results in
	// its direction (the newest for forward paging, the oldest for
	// backward paging).
	Complete bool
}

// archiveID is a message's id in the archive: its time and envelope id.
func archiveID(t int64, id string) string { return strconv.FormatInt(t, 10) + "-" + id }

func parseArchiveID(s string) (int64, string, error) {
	ts, id, ok := strings.Cut(s, "-")
	t, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", fmt.Errorf("%w: %q", ErrInvalidArchiveID, s)
	}
	return t, id, nil
}

// QueryArchive returns a page of q.Topic's archived messages. An After or
// Before id not in the archive is ErrNotFound; a topic without an archive
// has an empty, complete page.
func (s *Store) QueryArchive(ctx context.Context, q ArchiveQuery) (ArchivePage, error) {
	page := ArchivePage{Messages: []ArchivedMessage{}}
	if q.Max <= 0 || q.Max > maxArchivePage {
		return page, fmt.Errorf("store: archive of %q: max %d: want 1..%d", q.Topic, q.Max, maxArchivePage)
	}
	var tid int64
	err := s.r.QueryRowContext(ctx, `SELECT id FROM history_topics WHERE topic = ?`, q.Topic).Scan(&tid)
	if errors.Is(err, sql.ErrNoRows) {
		if q.After != "" || q.Before != "" {
			return page, fmt.Errorf("store: archive of %q: item: %w", q.Topic, ErrNotFound)
		}
		page.Complete = true
		return page, nil
	}
	if err != nil {
		return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
	}
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.Start.IsZero() {
		lo = q.Start.UnixNano()
	}
	if !q.End.IsZero() {
		hi = q.End.UnixNano()
	}
	base := `topic = ? AND time >= ? AND time <= ?`
	args := []any{tid, lo, hi}
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM archive WHERE `+base, args...).Scan(&page.Count); err != nil {
		return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
	}
	cond, cargs := base, append([]any(nil), args...)
	for _, ref := range []struct {
		id, op string
	}{{q.After, ">"}, {q.Before, "<"}} {
		if ref.id == "" {
			continue
		}
		t, id, err := parseArchiveID(ref.id)
		if err != nil {
			return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
		}
		var one int
		err = s.r.QueryRowContext(ctx, `SELECT 1 FROM archive WHERE topic = ? AND time = ? AND id = ?`, tid, t, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return page, fmt.Errorf("store: archive of %q: item %q: %w", q.Topic, ref.id, ErrNotFound)
		}
		if err != nil {
			return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
		}
		cond += ` AND (time, id) ` + ref.op + ` (?, ?)`
		cargs = append(cargs, t, id)
	}
	backward := q.After == "" && (q.Before != "" || q.Last)
	order := `ASC`
	if backward {
		order = `DESC`
	}
	rows, err := s.r.QueryContext(ctx, `SELECT time, id, content_type, payload FROM archive WHERE `+cond+
		` ORDER BY time `+order+`, id `+order+` LIMIT ?`, append(cargs, q.Max+1)...)
	if err != nil {
		return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			t int64
			m = ArchivedMessage{Topic: q.Topic}
		)
		if err := rows.Scan(&t, &m.ID, &m.ContentType, &m.Payload); err != nil {
			return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
		}
		m.Time = time.Unix(0, t).UTC()
		m.ArchiveID = archiveID(t, m.ID)
		page.Messages = append(page.Messages, m)
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
	}
	page.Complete = len(page.Messages) <= q.Max
	if !page.Complete {
		page.Messages = page.Messages[:q.Max]
	}
	if backward {
		ms := page.Messages
		for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
			ms[i], ms[j] = ms[j], ms[i]
		}
	}
	if len(page.Messages) > 0 {
		first := page.Messages[0]
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM archive WHERE `+base+` AND (time, id) < (?, ?)`,
			append(args, first.Time.UnixNano(), first.ID)...).Scan(&page.FirstIndex); err != nil {
			return page, fmt.Errorf("store: archive of %q: %w", q.Topic, err)
		}
	}
	return page, nil
}
