package history

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

func startRecorder(t testing.TB, cfg Config) (*Recorder, broker.Bus, *store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Config: cfg, Bus: bus, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(ctx); err != nil {
			t.Error(err)
		}
		bus.Close()
		st.Close()
	})
	return r, bus, st
}

func publish(t testing.TB, bus broker.Bus, topic, ct, payload string, at time.Time) {
	t.Helper()
	if err := bus.Publish(context.Background(), &broker.Envelope{Topic: topic, ContentType: ct, Payload: []byte(payload), Time: at}); err != nil {
		t.Fatal(err)
	}
}

// waitPoints polls until topic's field has n points, and returns them.
func waitPoints(t testing.TB, st *store.Store, topic, field string, n int) []store.HistoryValue {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		hs, err := st.ReadHistory(context.Background(), store.HistoryQuery{Topic: topic, Field: field, Limit: 1000})
		if err == nil && len(hs[0].Points) == n {
			return hs[0].Points
		}
		if time.Now().After(deadline) {
			t.Fatalf("history of %s %s: %v, %v; want %d points", topic, field, hs, err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRecorder(t *testing.T) {
	t.Parallel()
	off := false
	cfg := Defaults()
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.Rules = []Rule{{Filter: "noisy/#", Enabled: &off}, {Filter: "small/#", MaxPoints: 10}}
	_, bus, st := startRecorder(t, cfg)
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	for i := range 30 {
		at := base.Add(time.Duration(i) * time.Second)
		publish(t, bus, "home/t", "", fmt.Sprint(20+i), at)
		publish(t, bus, "small/x", "application/json", fmt.Sprintf(`{"a":{"b":%d}}`, i), at)
		publish(t, bus, "noisy/x", "", "1", at)
		publish(t, bus, "$SYS/x", "", "1", at)
	}
	publish(t, bus, "home/senml", ContentTypeSenMLJSON, `[{"bn":"d:","n":"t","v":1},{"n":"h","v":2}]`, base)
	publish(t, bus, "home/text", "", "hello", base)
	pts := waitPoints(t, st, "home/t", "value", 30)
	if pts[0].Value != 20 || pts[29].Value != 49 || !pts[0].Time.Equal(base) {
		t.Errorf("home/t points from %+v to %+v", pts[0], pts[29])
	}
	waitPoints(t, st, "home/senml", "d:h", 1)
	// small/# keeps 10 points a series, pruned as points come (a tenth
	// of the bound late at most).
	deadline := time.Now().Add(5 * time.Second)
	for {
		hs, err := st.ReadHistory(context.Background(), store.HistoryQuery{Topic: "small/x", Field: "a.b", Limit: 1000})
		if err == nil && len(hs[0].Points) <= 11 && len(hs[0].Points) > 0 && hs[0].Points[len(hs[0].Points)-1].Value == 29 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("small/x: %v, %v; want at most 11 points ending with 29", hs, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	topics, err := st.HistoryTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(topics, ","); got != "home/senml,home/t,small/x" {
		t.Errorf("topics with history %s; want home/senml,home/t,small/x (no noisy/#, no $ topics, no text)", got)
	}
	page, err := st.QueryArchive(context.Background(), store.ArchiveQuery{Topic: "home/t", Max: 5, Last: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 5 || string(page.Messages[4].Payload) != "49" || page.Count != 30 {
		t.Errorf("archive of home/t: %d messages, last %q, count %d", len(page.Messages), page.Messages[4].Payload, page.Count)
	}
}

func TestRecorderStopWritesPending(t *testing.T) {
	t.Parallel()
	cfg := Defaults()
	cfg.FlushInterval = time.Hour
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	r, err := New(Options{Config: cfg, Bus: bus, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		publish(t, bus, "a", "", fmt.Sprint(i), time.Time{})
	}
	// The bus hands the envelopes over asynchronously: wait until the
	// recorder holds them, then stop.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := r.points
		r.mu.Unlock()
		if n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recorder holds %d points; want 10", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	hs, err := st.ReadHistory(ctx, store.HistoryQuery{Topic: "a", Limit: 100})
	if err != nil || len(hs[0].Points) != 10 {
		t.Fatalf("after Stop: %v, %v; want the 10 pending points written", hs, err)
	}
	if err := r.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestConfigYAML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		yaml string
		want func(c Config) bool
		err  string
	}{
		{yaml: "enabled: true\nmax_points: 5\nmax_age: 720h\nmax_bytes: 256MiB\nrules: [{filter: \"sensors/#\", max_points: 100, max_age: 1h}, {filter: \"noisy/#\", enabled: false}]",
			want: func(c Config) bool {
				p := c.policyFor("sensors/a")
				q := c.policyFor("noisy/a")
				d := c.policyFor("other")
				return c.MaxBytes == 256<<20 && p.enabled && p.limits.MaxPoints == 100 && p.limits.MaxAge == time.Hour &&
					p.limits.MaxArchive == 1000 && !q.enabled && d.enabled && d.limits.MaxPoints == 5 && d.limits.MaxAge == 720*time.Hour
			}},
		{yaml: "max_bytes: 1000", want: func(c Config) bool { return c.MaxBytes == 1000 }},
		{yaml: "max_bytes: 2GB", want: func(c Config) bool { return c.MaxBytes == 2e9 }},
		{yaml: "enabled: false\nrules: [{filter: \"a/#\", enabled: true}]",
			want: func(c Config) bool { return c.anyEnabled() && c.policyFor("a/b").enabled && !c.policyFor("b").enabled }},
		{yaml: "max_bytes: lots", err: "size"},
		{yaml: "max_points: -1", err: "history.max_points -1"},
		{yaml: "rules: [{filter: \"a/#/b\"}]", err: "history.rules[0]"},
		{yaml: "rules: [{filter: \"$SYS/#\"}]", err: "$ topics"},
		{yaml: "batch_size: 1000000", err: "history.batch_size"},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			c := Defaults()
			err := yaml.Unmarshal([]byte(tt.yaml), &c)
			if err == nil {
				err = c.Validate()
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v; want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Errorf("config %+v not as expected", c)
			}
		})
	}
	if c := Defaults(); c.policyFor("$SYS/x").enabled {
		t.Error("$ topics have history")
	}
	if _, err := ParseByteSize("9999999999999GiB"); err == nil {
		t.Error("an overflowing size parsed")
	}
	if s := ByteSize(256 << 20).String(); s != "256MiB" {
		t.Errorf("String = %s", s)
	}
}

// TestRecorderSizeBound: with a small max_bytes the history stays under
// it as readings come, the newest kept.
func TestRecorderSizeBound(t *testing.T) {
	t.Parallel()
	cfg := Defaults()
	cfg.FlushInterval = 10 * time.Millisecond
	cfg.BatchSize = 50
	cfg.MaxBytes = 8 << 10
	_, bus, st := startRecorder(t, cfg)
	base := time.Now().Add(-time.Hour)
	for i := range 400 {
		publish(t, bus, fmt.Sprintf("s/%d", i%2), "", fmt.Sprint(i), base.Add(time.Duration(i)*time.Second))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Each flush writes, then trims: wait for the trim after the last,
		// with the usage the same before and after the read.
		u0, _ := st.HistoryUsage(context.Background())
		hs, err := st.ReadHistory(context.Background(), store.HistoryQuery{Topic: "s/1", Limit: 1000})
		u, uerr := st.HistoryUsage(context.Background())
		if err == nil && uerr == nil && u == u0 && len(hs[0].Points) > 0 && hs[0].Points[len(hs[0].Points)-1].Value == 399 && u.Bytes <= int64(cfg.MaxBytes) {
			if u.Points >= 400 || hs[0].Points[0].Value < 3 {
				t.Fatalf("%d points left, s/1 from %v: nothing trimmed", u.Points, hs[0].Points[0].Value)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last reading not recorded under the bound: %v %v %+v", err, uerr, u)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
