package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseSyncInterval(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", DefaultSyncInterval, false},
		{"always", SyncAlways, false},
		{" Always ", SyncAlways, false},
		{"1s", time.Second, false},
		{"250ms", 250 * time.Millisecond, false},
		{"2m", 2 * time.Minute, false},
		{"0", 0, true},
		{"0s", 0, true},
		{"-1s", 0, true},
		{"never", 0, true},
		{"10", 0, true},
	} {
		got, err := ParseSyncInterval(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("ParseSyncInterval(%q): error %v, want error %v", c.in, err, c.wantErr)
			continue
		}
		if err == nil && got != c.want {
			t.Errorf("ParseSyncInterval(%q) = %v, want %v", c.in, got, c.want)
		}
		if err == nil && FormatSyncInterval(got) != FormatSyncInterval(c.want) {
			t.Errorf("FormatSyncInterval(%v) = %q", got, FormatSyncInterval(got))
		}
	}
}

func FuzzParseSyncInterval(f *testing.F) {
	for _, s := range []string{"", "always", "1s", "-1s", "0", "1h2m", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseSyncInterval(s)
		if err != nil {
			return
		}
		if d != SyncAlways && d <= 0 {
			t.Fatalf("ParseSyncInterval(%q) = %v: neither always nor positive", s, d)
		}
		back, err := ParseSyncInterval(FormatSyncInterval(d))
		if err != nil || back != d {
			t.Fatalf("round trip of %q: %v, %v", s, back, err)
		}
	})
}

func TestOpenWithBadSyncInterval(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{-2, -time.Second} {
		if s, err := OpenWith(context.Background(), t.TempDir(), Options{SyncInterval: d}); err == nil {
			s.Close()
			t.Errorf("OpenWith(SyncInterval %v) succeeded, want an error", d)
		}
	}
}

// syncRecorder stands in for (*os.File).Sync: it counts the syncs of
// each file by name and really syncs.
type syncRecorder struct {
	mu    sync.Mutex
	names map[string]int
}

func (r *syncRecorder) sync(f *os.File) error {
	r.mu.Lock()
	if r.names == nil {
		r.names = map[string]int{}
	}
	r.names[f.Name()]++
	r.mu.Unlock()
	return f.Sync()
}

func (r *syncRecorder) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[name]
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWALSyncedAfterCommit: with an interval, what the writer commits is
// fsynced through the WAL file within about that interval, and what is
// committed before Close is synced by Close; with SyncAlways nothing of
// the syncer runs.
func TestWALSyncedAfterCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		interval time.Duration
		atClose  bool // only Close syncs within the test
	}{
		{"interval", 20 * time.Millisecond, false},
		{"close", time.Hour, true},
		{"always", SyncAlways, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rec := &syncRecorder{}
			dir := t.TempDir()
			s, err := OpenWith(ctx, dir, Options{SyncInterval: c.interval, syncFile: rec.sync})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			wal := filepath.Join(dir, FileName) + "-wal"
			if err := s.KVPut(ctx, "b", "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			if c.interval == SyncAlways {
				if s.syncer != nil {
					t.Fatal("a WAL syncer runs with SyncAlways")
				}
				return
			}
			if !c.atClose {
				// The recorder sees the sync begin; the counter, its end.
				waitUntil(t, "a sync of the WAL, counted", func() bool { return rec.count(wal) > 0 && s.syncer.syncs.Load() > 0 })
				if rec.count(dir) != 1 {
					t.Errorf("directory synced %d times, want once (when the WAL was opened)", rec.count(dir))
				}
			}
			before := rec.count(wal)
			if err := s.KVPut(ctx, "b", "k2", []byte("v")); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if rec.count(wal) <= before {
				t.Errorf("Close did not sync the WAL after a write (%d syncs before, %d after)", before, rec.count(wal))
			}
		})
	}
}

// TestWALSyncDoesNotBlockWriter: while a WAL sync hangs (a slow card),
// writes keep committing.
func TestWALSyncDoesNotBlockWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	wal := filepath.Join(dir, FileName) + "-wal"
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	hook := func(f *os.File) error {
		if f.Name() == wal {
			once.Do(func() { close(entered) })
			<-release
		}
		return f.Sync()
	}
	s, err := OpenWith(ctx, dir, Options{SyncInterval: 5 * time.Millisecond, syncFile: hook})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer close(release)
	if err := s.KVPut(ctx, "b", "first", []byte("v")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no WAL sync started")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i := range 50 {
		if err := s.KVPut(wctx, "b", fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatalf("write %d while a WAL sync hangs: %v", i, err)
		}
	}
}

// TestWALSyncer drives one syncer by hand: a sync only after a commit,
// a failure reported to health and retried, and a WAL file replaced under
// it reopened.
func TestWALSyncer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wal := filepath.Join(dir, "x.db-wal")
	var committed atomic.Uint64
	var fail atomic.Bool
	var faults []error
	rec := &syncRecorder{}
	s := &walSyncer{path: wal, interval: time.Hour, committed: committed.Load, log: func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		syncFile: func(f *os.File) error {
			if fail.Load() {
				return errors.New("input/output error")
			}
			return rec.sync(f)
		},
		onFault: func(err error) { faults = append(faults, err) }}

	steps := []struct {
		name      string
		do        func()
		wantSyncs int // of the WAL file, in total
		wantFault int
	}{
		{"no WAL file yet: nothing to sync", func() { committed.Add(1) }, 0, 0},
		{"the WAL appears with a commit", func() { mustWrite(t, wal, "a"); committed.Add(1) }, 1, 0},
		{"nothing committed since", func() {}, 1, 0},
		{"a commit", func() { committed.Add(1) }, 2, 0},
		{"a failing sync", func() { committed.Add(1); fail.Store(true) }, 2, 1},
		{"retried at the next tick", func() { fail.Store(false) }, 3, 1},
		{"the WAL replaced", func() {
			if err := os.Remove(wal); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, wal, "b")
			committed.Add(1)
		}, 4, 1},
	}
	for _, st := range steps {
		st.do()
		s.syncIfDirty()
		if got := rec.count(wal); got != st.wantSyncs {
			t.Errorf("%s: %d syncs of the WAL, want %d", st.name, got, st.wantSyncs)
		}
		if len(faults) != st.wantFault {
			t.Errorf("%s: %d faults reported, want %d", st.name, len(faults), st.wantFault)
		}
	}
	if got := rec.count(dir); got != 2 {
		t.Errorf("directory synced %d times, want 2 (once per WAL file opened)", got)
	}
	if s.f != nil {
		fi, _ := os.Stat(wal)
		cur, _ := s.f.Stat()
		if !os.SameFile(fi, cur) {
			t.Error("the syncer's descriptor is not on the current WAL")
		}
		s.f.Close()
	}
	if s.failures.Load() != 1 || s.syncs.Load() != 4 {
		t.Errorf("counted %d syncs and %d failures, want 4 and 1", s.syncs.Load(), s.failures.Load())
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWALSyncFaultInHealth: a failed WAL sync is a store fault.
func TestWALSyncFaultInHealth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	wal := filepath.Join(dir, FileName) + "-wal"
	hook := func(f *os.File) error {
		if f.Name() == wal {
			return errors.New("input/output error")
		}
		return f.Sync()
	}
	s, err := OpenWith(ctx, dir, Options{SyncInterval: 5 * time.Millisecond, syncFile: hook})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetLogger(slog.New(slog.DiscardHandler))
	if err := s.KVPut(ctx, "b", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the sync failure in WriteHealth", func() bool { return s.WriteHealth().Failing })
	if h := s.WriteHealth(); h.LastError == "" || s.syncer.failures.Load() == 0 {
		t.Errorf("health %+v, %d failures counted", h, s.syncer.failures.Load())
	}
}

// BenchmarkEnqueueSync: one QoS 1 envelope queued for one subscriber per
// op, by GOMAXPROCS (par=1) and 16×GOMAXPROCS (par=16) writers at once
// (group commit), in each mode: with always every commit waits for its
// fsync.
func BenchmarkEnqueueSync(b *testing.B) {
	e := env("sensors/kitchen/temp", strings.Repeat("x", 64), 1)
	for _, mode := range []struct {
		name     string
		interval time.Duration
	}{{"always", SyncAlways}, {"1s", time.Second}} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/par=%d", mode.name, writers), func(b *testing.B) {
				s, err := OpenWith(context.Background(), b.TempDir(), Options{SyncInterval: mode.interval})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				b.ReportAllocs()
				b.SetParallelism(writers)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Enqueue(ctx, e, refs("sub")); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// TestWALSyncerSleepsWhenIdle runs the syncer's goroutine: it syncs an
// interval after a commit, does not look again while nothing commits (an
// idle hub wakes for nothing), and retries a failed sync with no commit
// to wake it.
func TestWALSyncerSleepsWhenIdle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wal := filepath.Join(dir, "x.db-wal")
	mustWrite(t, wal, "a")
	var committed, looks atomic.Uint64
	var fail atomic.Bool
	rec := &syncRecorder{}
	wake := make(chan struct{}, 1)
	s := newWALSyncer(wal, time.Millisecond, func() uint64 { looks.Add(1); return committed.Load() }, wake,
		func(f *os.File) error {
			if fail.Load() {
				return errors.New("input/output error")
			}
			return rec.sync(f)
		}, func() *slog.Logger { return slog.New(slog.DiscardHandler) }, nil)
	defer s.close()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	commit := func() { committed.Add(1); wake <- struct{}{} }

	commit()
	waitFor("no sync after a commit", func() bool { return s.syncs.Load() == 1 })
	n := looks.Load()
	// 50 intervals with nothing committed: a ticker would have looked
	// about 50 times.
	time.Sleep(50 * time.Millisecond)
	if got := looks.Load() - n; got != 0 {
		t.Errorf("the syncer looked %d times while nothing committed", got)
	}

	fail.Store(true)
	commit()
	waitFor("the failing sync was not tried", func() bool { return s.failures.Load() >= 1 })
	fail.Store(false)
	waitFor("a failed sync was not retried without a commit", func() bool { return s.syncs.Load() == 2 })
}
