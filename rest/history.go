package rest

import (
	"encoding/csv"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// History read bounds: limit defaults to DefaultHistoryLimit points (or
// buckets) per series and is capped at MaxHistoryLimit.
const (
	DefaultHistoryLimit = 1000
	MaxHistoryLimit     = 10000
)

// minHistoryStep is the shortest step of a downsampled read.
const minHistoryStep = time.Millisecond

// HistoryJSON is the body of GET /api/v1/history/{topic}.
type HistoryJSON struct {
	Topic  string              `json:"topic"`
	Series []HistorySeriesJSON `json:"series"`
}

// HistorySeriesJSON is one field's series, its points oldest first.
type HistorySeriesJSON struct {
	Field  string             `json:"field"`
	Points []HistoryPointJSON `json:"points"`
}

// HistoryPointJSON is a point; with a step, a bucket: its start, the
// average of its points as value, their minimum, maximum and count.
type HistoryPointJSON struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
	Min   *float64  `json:"min,omitempty"`
	Max   *float64  `json:"max,omitempty"`
	Count *int      `json:"count,omitempty"`
}

// parseTimeParam reads since or until: RFC 3339, or Unix seconds (a
// fraction allowed). Empty is no bound.
func parseTimeParam(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e11 {
		return time.Time{}, badRequest("%s %q: want an RFC 3339 time (2026-12-01T12:00:00Z) or Unix seconds", name, trunc(s))
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// parseStep reads step: a Go duration (5m, 1h30m) or seconds.
func parseStep(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) || f > float64(math.MaxInt64)/1e9 {
			return 0, badRequest("step %q: want a duration (5m, 1h) or seconds", trunc(s))
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < minHistoryStep {
		return 0, badRequest("step %q: must be at least %v", trunc(s), minHistoryStep)
	}
	return d, nil
}

// parseLimit reads limit: 1.., DefaultHistoryLimit when absent, at most
// MaxHistoryLimit (larger values are capped).
func parseLimit(s string) (int, error) {
	if s == "" {
		return DefaultHistoryLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, badRequest("limit %q: want a positive integer (at most %d)", trunc(s), MaxHistoryLimit)
	}
	return min(n, MaxHistoryLimit), nil
}

// history handles GET /api/v1/history/{topic}?since=&until=&limit=&step=&field=:
// the topic's series as JSON, or as CSV with Accept: text/csv. Reading
// needs the topic's read right.
func (a *Adapter) history(c *gin.Context) {
	topic := topicFromPath(c.Param("topic"))
	if err := broker.ValidateTopic(topic); err != nil {
		a.fail(c, err)
		return
	}
	q := store.HistoryQuery{Topic: topic, Field: c.Query("field")}
	var err error
	if q.Since, err = parseTimeParam("since", c.Query("since")); err != nil {
		a.fail(c, err)
		return
	}
	if q.Until, err = parseTimeParam("until", c.Query("until")); err != nil {
		a.fail(c, err)
		return
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		a.fail(c, badRequest("until %s: must be after since %s", q.Until.Format(time.RFC3339Nano), q.Since.Format(time.RFC3339Nano)))
		return
	}
	if q.Limit, err = parseLimit(c.Query("limit")); err != nil {
		a.fail(c, err)
		return
	}
	if q.Step, err = parseStep(c.Query("step")); err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	if err := a.cfg.Auth.CanRead(ctx, principal(c), topic); err != nil {
		a.fail(c, err)
		return
	}
	ss, err := a.cfg.Store.ReadHistory(ctx, q)
	if err != nil {
		a.fail(c, err)
		return
	}
	if c.NegotiateFormat(gin.MIMEJSON, "text/csv") == "text/csv" {
		writeHistoryCSV(c, ss, q.Step > 0)
		return
	}
	out := HistoryJSON{Topic: topic, Series: make([]HistorySeriesJSON, 0, len(ss))}
	for _, s := range ss {
		js := HistorySeriesJSON{Field: s.Field, Points: make([]HistoryPointJSON, len(s.Points))}
		for i, p := range s.Points {
			js.Points[i] = HistoryPointJSON{Time: p.Time, Value: p.Value}
			if q.Step > 0 {
				js.Points[i].Min, js.Points[i].Max, js.Points[i].Count = &p.Min, &p.Max, &p.Count
			}
		}
		out.Series = append(out.Series, js)
	}
	c.JSON(http.StatusOK, out)
}

// writeHistoryCSV writes the series as CSV: time,field,value (and
// min,max,count for buckets), a series' rows oldest first.
func writeHistoryCSV(c *gin.Context, ss []store.HistorySeries, buckets bool) {
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Status(http.StatusOK)
	w := csv.NewWriter(c.Writer)
	header := []string{"time", "field", "value"}
	if buckets {
		header = append(header, "min", "max", "count")
	}
	_ = w.Write(header)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, s := range ss {
		for _, p := range s.Points {
			row := []string{p.Time.UTC().Format(time.RFC3339Nano), csvSafe(s.Field), f(p.Value)}
			if buckets {
				row = append(row, f(p.Min), f(p.Max), strconv.Itoa(p.Count))
			}
			_ = w.Write(row)
		}
	}
	w.Flush()
}

// csvSafe keeps a field name from being taken for a formula by a
// spreadsheet that opens the file.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@", rune(s[0])) {
		return "'" + s
	}
	return s
}
