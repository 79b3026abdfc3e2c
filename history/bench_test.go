package history

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

func BenchmarkDecode(b *testing.B) {
	senmlCBOR, _ := cbor.Marshal([]map[int]any{{-2: "dev:", 0: "temp", 1: "Cel", 2: 23.5}, {0: "hum", 2: 40}})
	for _, c := range []struct{ name, ct, payload string }{
		{"number", "", "21.5"},
		{"json", "application/json", `{"temp":21.5,"hum":40,"air":{"co2":415}}`},
		{"senml-json", ContentTypeSenMLJSON, `[{"bn":"dev:","n":"temp","u":"Cel","v":23.5},{"n":"hum","v":40}]`},
		{"senml-cbor", ContentTypeSenMLCBOR, string(senmlCBOR)},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := []byte(c.payload)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(c.ct, p, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRecordReading is the history's whole cost of one reading (a
// number on one of 1 000 topics): the recorder's decoding and batching
// plus its share of the batch's transaction (synchronous=FULL, archive
// included), as the bus hands it over; batch-5000 is the default (5 000
// points or 5 s), batch-500 what a busy hub with a 1 s flush_interval
// writes.
// written-B/op is what the process wrote to storage a reading
// (/proc/self/io; the WAL's pages, its checkpoints into hub.db).
func BenchmarkRecordReading(b *testing.B) {
	for _, batch := range []int{500, 5000} {
		b.Run(fmt.Sprintf("batch-%d", batch), func(b *testing.B) { benchRecord(b, batch) })
	}
}

func benchRecord(b *testing.B, batch int) {
	ctx := context.Background()
	st, err := store.Open(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	cfg := Defaults()
	cfg.BatchSize = batch
	r, err := New(Options{Config: cfg, Bus: bus, Store: st})
	if err != nil {
		b.Fatal(err)
	}
	topics := make([]string, 1000)
	for i := range topics {
		topics[i] = fmt.Sprintf("sensors/%d/temp", i)
	}
	base := time.Now()
	// A first round so that the series exist and the cache is warm.
	for i := range len(topics) {
		_ = r.handle(ctx, &broker.Envelope{ID: broker.NewID(), Topic: topics[i], Payload: []byte("1"), Time: base})
	}
	r.Flush(ctx)
	written := ioCounter("write_bytes")
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		e := &broker.Envelope{ID: broker.NewID(), Topic: topics[i%len(topics)], Payload: []byte(strconv.Itoa(i % 40)),
			Time: base.Add(time.Duration(i+1) * time.Microsecond)}
		_ = r.handle(ctx, e)
		i++
		if i%cfg.BatchSize == 0 {
			r.Flush(ctx)
		}
	}
	r.Flush(ctx)
	if w := ioCounter("write_bytes"); w > 0 && i > 0 {
		b.ReportMetric(float64(w-written)/float64(i), "written-B/op")
	}
}

// ioCounter reads a counter of /proc/self/io (0 where there is none).
func ioCounter(key string) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

var sizeRun = flag.Bool("history.size", false, "measure the store size and RSS with 1,000 topics of 10,000 points each (several minutes)")

// TestHistorySize is the measurement behind README's figures: 1 000
// topics × 10 000 points (and the 1 000 last payloads of each topic in
// the archive, the default bound), written in 5 000-point batches; then
// the file size, RSS, a read and a retention pass. Run with
// go test -run TestHistorySize -history.size -v ./history/
func TestHistorySize(t *testing.T) {
	if !*sizeRun {
		t.Skip("run with -history.size")
	}
	const topics, points, batch, archived = 1000, 10000, 5000, 1000
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base := time.Now().Add(-points * time.Minute).Truncate(time.Minute)
	start := time.Now()
	recs := make([]store.HistoryRecord, 0, batch)
	for i := range points {
		at := base.Add(time.Duration(i) * time.Minute)
		for tp := range topics {
			topic := fmt.Sprintf("sensors/%d/temp", tp)
			v := 20 + float64((i+tp)%100)/10
			rec := store.HistoryRecord{Topic: topic, Points: []store.HistoryPoint{{Field: DefaultField, Time: at, Value: v}}}
			if i >= points-archived {
				rec.Archive = &store.ArchivedMessage{ID: broker.NewID(), Time: at, ContentType: "text/plain", Payload: []byte(strconv.FormatFloat(v, 'f', -1, 64))}
			}
			recs = append(recs, rec)
			if len(recs) == batch {
				if err := st.WriteHistory(ctx, recs); err != nil {
					t.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	write := time.Since(start)
	u, err := st.HistoryUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	size := fileSizes(t, dir)
	t.Logf("wrote %d points (%d series) and %d archived messages in %v: %.1f µs a point; estimated %d MiB",
		u.Points, u.Series, u.Archived, write.Round(time.Second), float64(write.Microseconds())/float64(u.Points), u.Bytes>>20)
	t.Logf("store on disk: %d MiB (%.1f bytes a point, archive included); RSS %d MiB (peak %d MiB), Go heap %d MiB",
		size>>20, float64(size)/float64(u.Points), rss("VmRSS")>>10, rss("VmHWM")>>10, heap()>>20)

	start = time.Now()
	hs, err := st.ReadHistory(ctx, store.HistoryQuery{Topic: "sensors/500/temp", Limit: 1000})
	if err != nil || len(hs[0].Points) != 1000 {
		t.Fatalf("read: %v", err)
	}
	read := time.Since(start)
	start = time.Now()
	hs, err = st.ReadHistory(ctx, store.HistoryQuery{Topic: "sensors/500/temp", Limit: 1000, Step: time.Hour})
	if err != nil || len(hs[0].Points) == 0 {
		t.Fatalf("read with step: %v", err)
	}
	step := time.Since(start)
	start = time.Now()
	page, err := st.QueryArchive(ctx, store.ArchiveQuery{Topic: "sensors/500/temp", Max: 50, Last: true})
	if err != nil || len(page.Messages) != 50 {
		t.Fatalf("archive: %v", err)
	}
	mam := time.Since(start)
	t.Logf("read 1 000 points of one topic in %v; all 10 000 in 1 h buckets (%d) in %v; last MAM page of 50 in %v", read, len(hs[0].Points), step, mam)

	limits := func(string) store.HistoryLimits {
		return store.HistoryLimits{MaxPoints: points, MaxAge: 30 * 24 * time.Hour, MaxArchive: archived}
	}
	start = time.Now()
	n, err := st.ApplyRetention(ctx, nil, limits, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("retention pass over the 1 000 topics (nothing due): %v, %d removed", time.Since(start).Round(time.Millisecond), n)
	start = time.Now()
	n, err = st.TrimHistory(ctx, int64(Defaults().MaxBytes), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	after, _ := st.HistoryUsage(ctx)
	t.Logf("size bound of %v: %d oldest points and messages removed in %v, estimated %d MiB left; RSS peak %d MiB",
		Defaults().MaxBytes, n, time.Since(start).Round(time.Millisecond), after.Bytes>>20, rss("VmHWM")>>10)
}

func fileSizes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, f := range []string{store.FileName, store.FileName + "-wal"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// rss reads a kB figure of /proc/self/status (VmRSS, VmHWM); 0 elsewhere.
func rss(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func heap() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
