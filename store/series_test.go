package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

var histBase = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// fill writes n points of field "value" to topic, one a second from
// histBase, values 0..n-1, each with an archived message.
func fill(t testing.TB, s *Store, topic string, n int) {
	t.Helper()
	var recs []HistoryRecord
	for i := range n {
		at := histBase.Add(time.Duration(i) * time.Second)
		recs = append(recs, HistoryRecord{
			Topic:   topic,
			Points:  []HistoryPoint{{Field: "value", Time: at, Value: float64(i)}},
			Archive: &ArchivedMessage{ID: fmt.Sprintf("e%04d", i), Time: at, ContentType: "text/plain", Payload: []byte(fmt.Sprint(i))},
		})
	}
	if err := s.WriteHistory(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func values(hs []HistorySeries) map[string][]float64 {
	out := map[string][]float64{}
	for _, s := range hs {
		vs := []float64{}
		for _, p := range s.Points {
			vs = append(vs, p.Value)
		}
		out[s.Field] = vs
	}
	return out
}

func TestReadHistory(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	recs := []HistoryRecord{}
	for i := range 10 {
		at := histBase.Add(time.Duration(i) * time.Second)
		recs = append(recs, HistoryRecord{Topic: "home/t", Points: []HistoryPoint{
			{Field: "temp", Unit: "Cel", Time: at, Value: float64(i)},
			{Field: "hum", Time: at, Value: float64(100 - i)},
		}})
	}
	// A second point at a time its series has already is left out.
	recs = append(recs, HistoryRecord{Topic: "home/t", Points: []HistoryPoint{{Field: "temp", Time: histBase, Value: 99}}})
	if err := s.WriteHistory(ctx, recs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    HistoryQuery
		want map[string][]float64
	}{
		{"all", HistoryQuery{Limit: 100}, map[string][]float64{"temp": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "hum": {100, 99, 98, 97, 96, 95, 94, 93, 92, 91}}},
		{"field and limit keep the newest, oldest first", HistoryQuery{Field: "temp", Limit: 3}, map[string][]float64{"temp": {7, 8, 9}}},
		{"since included, until excluded", HistoryQuery{Field: "temp", Limit: 100, Since: histBase.Add(2 * time.Second), Until: histBase.Add(5 * time.Second)},
			map[string][]float64{"temp": {2, 3, 4}}},
		{"empty range", HistoryQuery{Field: "temp", Limit: 100, Since: histBase.Add(time.Hour)}, map[string][]float64{"temp": {}}},
		{"step averages", HistoryQuery{Field: "temp", Limit: 100, Step: 4 * time.Second}, map[string][]float64{"temp": {1.5, 5.5, 8.5}}},
		{"step and limit", HistoryQuery{Field: "temp", Limit: 1, Step: 4 * time.Second}, map[string][]float64{"temp": {8.5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Topic = "home/t"
			hs, err := s.ReadHistory(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := values(hs); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("values = %v; want %v", got, tt.want)
			}
		})
	}
	hs, err := s.ReadHistory(ctx, HistoryQuery{Topic: "home/t", Field: "temp", Limit: 10, Step: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// histBase is a multiple of 4 s since the epoch: buckets start there.
	b := hs[0].Points[0]
	if !b.Time.Equal(histBase) || b.Min != 0 || b.Max != 3 || b.Count != 4 || hs[0].Unit != "Cel" {
		t.Errorf("first bucket = %+v (unit %q); want %v, min 0, max 3, count 4, unit Cel", b, hs[0].Unit, histBase)
	}
	for _, q := range []HistoryQuery{{Topic: "nope", Limit: 1}, {Topic: "home/t", Field: "nope", Limit: 1}} {
		if _, err := s.ReadHistory(ctx, q); !errors.Is(err, ErrNotFound) {
			t.Errorf("ReadHistory(%+v) = %v; want ErrNotFound", q, err)
		}
	}
	for _, q := range []HistoryQuery{{Topic: "home/t", Limit: 0}, {Topic: "home/t", Limit: maxHistoryLimit + 1}, {Topic: "home/t", Limit: 1, Step: -1}} {
		if _, err := s.ReadHistory(ctx, q); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("ReadHistory(%+v) = %v; want a validation error", q, err)
		}
	}
	u, err := s.HistoryUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Topics != 1 || u.Series != 2 || u.Points != 20 || u.Bytes != 20*PointBytes {
		t.Errorf("usage = %+v; want 1 topic, 2 series, 20 points", u)
	}
}

func TestApplyRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := histBase.Add(100 * time.Second)
	tests := []struct {
		name        string
		limits      HistoryLimits
		wantFirst   float64 // oldest value left
		wantPoints  int64
		wantArchive int64
	}{
		{"count", HistoryLimits{MaxPoints: 30}, 70, 30, 100},
		{"age", HistoryLimits{MaxAge: 20 * time.Second}, 80, 20, 20},
		{"archive count", HistoryLimits{MaxArchive: 5}, 0, 100, 5},
		{"count and age, the tighter wins", HistoryLimits{MaxPoints: 50, MaxAge: 10 * time.Second, MaxArchive: 50}, 90, 10, 10},
		{"none", HistoryLimits{}, 0, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			fill(t, s, "a", 100)
			fill(t, s, "b", 100)
			limits := func(topic string) HistoryLimits {
				if topic == "a" {
					return tt.limits
				}
				return HistoryLimits{}
			}
			if _, err := s.ApplyRetention(ctx, nil, limits, now); err != nil {
				t.Fatal(err)
			}
			hs, err := s.ReadHistory(ctx, HistoryQuery{Topic: "a", Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			pts := hs[0].Points
			if int64(len(pts)) != tt.wantPoints || pts[0].Value != tt.wantFirst {
				t.Errorf("%d points from %v; want %d from %v", len(pts), pts[0].Value, tt.wantPoints, tt.wantFirst)
			}
			page, err := s.QueryArchive(ctx, ArchiveQuery{Topic: "a", Max: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if int64(page.Count) != tt.wantArchive {
				t.Errorf("%d archived; want %d", page.Count, tt.wantArchive)
			}
			u, err := s.HistoryUsage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if u.Points != tt.wantPoints+100 || u.Archived != tt.wantArchive+100 {
				t.Errorf("usage %+v; want %d points, %d archived (counts kept beside the rows)", u, tt.wantPoints+100, tt.wantArchive+100)
			}
		})
	}
}

func TestTrimHistory(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	// "old" has the oldest entries: it goes first.
	fill(t, s, "old", 100)
	var recs []HistoryRecord
	for i := range 100 {
		at := histBase.Add(time.Hour + time.Duration(i)*time.Second)
		recs = append(recs, HistoryRecord{Topic: "new", Points: []HistoryPoint{{Field: "value", Time: at, Value: float64(i)}}})
	}
	if err := s.WriteHistory(ctx, recs); err != nil {
		t.Fatal(err)
	}
	u, err := s.HistoryUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := histBase.Add(2 * time.Hour)
	if n, err := s.TrimHistory(ctx, u.Bytes, now); err != nil || n != 0 {
		t.Fatalf("TrimHistory at the bound = %d, %v; want nothing trimmed", n, err)
	}
	max := u.Bytes / 2
	n, err := s.TrimHistory(ctx, max, now)
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.HistoryUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || after.Bytes > max*95/100 || after.Bytes < max*85/100 {
		t.Fatalf("trimmed %d, %d bytes left; want at most %d, and not much less", n, after.Bytes, max*95/100)
	}
	hs, err := s.ReadHistory(ctx, HistoryQuery{Topic: "new", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs[0].Points) != 100 {
		t.Errorf("the newer topic lost points (%d left) while older ones remained", len(hs[0].Points))
	}
	old, err := s.ReadHistory(ctx, HistoryQuery{Topic: "old", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if after.Points != int64(100+len(old[0].Points)) {
		t.Errorf("usage says %d points, rows are %d", after.Points, 100+len(old[0].Points))
	}
}

func TestQueryArchive(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	fill(t, s, "a", 10)
	payloads := func(p ArchivePage) string {
		out := ""
		for _, m := range p.Messages {
			out += string(m.Payload)
		}
		return out
	}
	first, err := s.QueryArchive(ctx, ArchiveQuery{Topic: "a", Max: 3})
	if err != nil {
		t.Fatal(err)
	}
	if payloads(first) != "012" || first.Count != 10 || first.FirstIndex != 0 || first.Complete {
		t.Fatalf("first page %q count %d index %d complete %v", payloads(first), first.Count, first.FirstIndex, first.Complete)
	}
	tests := []struct {
		name     string
		q        ArchiveQuery
		want     string
		index    int
		count    int
		complete bool
	}{
		{"after", ArchiveQuery{After: first.Messages[2].ArchiveID, Max: 3}, "345", 3, 10, false},
		{"after to the end", ArchiveQuery{After: first.Messages[2].ArchiveID, Max: 7}, "3456789", 3, 10, true},
		{"last page", ArchiveQuery{Last: true, Max: 4}, "6789", 6, 10, false},
		{"before", ArchiveQuery{Before: first.Messages[2].ArchiveID, Max: 5}, "01", 0, 10, true},
		{"time range, both ends included", ArchiveQuery{Start: histBase.Add(2 * time.Second), End: histBase.Add(4 * time.Second), Max: 10}, "234", 0, 3, true},
		{"start and last page", ArchiveQuery{Start: histBase.Add(5 * time.Second), Last: true, Max: 2}, "89", 3, 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Topic = "a"
			p, err := s.QueryArchive(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if payloads(p) != tt.want || p.FirstIndex != tt.index || p.Count != tt.count || p.Complete != tt.complete {
				t.Errorf("page %q index %d count %d complete %v; want %q %d %d %v",
					payloads(p), p.FirstIndex, p.Count, p.Complete, tt.want, tt.index, tt.count, tt.complete)
			}
		})
	}
	if p, err := s.QueryArchive(ctx, ArchiveQuery{Topic: "none", Max: 5}); err != nil || len(p.Messages) != 0 || !p.Complete {
		t.Errorf("archive of a topic without one = %+v, %v; want an empty complete page", p, err)
	}
	for _, q := range []ArchiveQuery{
		{Topic: "a", Max: 5, After: "123-nope"},
		{Topic: "a", Max: 5, Before: "1-x"},
	} {
		if _, err := s.QueryArchive(ctx, q); !errors.Is(err, ErrNotFound) {
			t.Errorf("QueryArchive(%+v) = %v; want ErrNotFound", q, err)
		}
	}
	for _, q := range []ArchiveQuery{{Topic: "a", Max: 0}, {Topic: "a", Max: 5, After: "garbage"}} {
		if _, err := s.QueryArchive(ctx, q); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("QueryArchive(%+v) = %v; want a validation error", q, err)
		}
	}
}
