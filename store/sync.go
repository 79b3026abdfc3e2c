package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// SyncAlways, as Options.SyncInterval, fsyncs every commit before it
// returns (SQLite synchronous=FULL): an acknowledged write survives a
// power loss or a kernel crash, at the price of one fsync per group
// commit (about 2.4 ms on the development machine, more on an SD card).
const SyncAlways time.Duration = -1

// DefaultSyncInterval is the sync interval of a store opened without one.
// A second, as NATS JetStream's sync_interval is a bound of minutes and
// Mosquitto saves its state every 30 minutes: what the hub acknowledges
// survives kill -9 of the hub at once, and a power loss can take at most
// the last second of it, while a busy hub fsyncs once a second instead of
// once a commit (hundreds a second), which an SD card's wear and every
// publisher's latency both feel.
const DefaultSyncInterval = time.Second

// Options tune a store at Open. The zero value is the default.
type Options struct {
	// SyncInterval says when a committed write reaches the disk.
	// SyncAlways: before the commit returns. A positive duration: the
	// commit returns once SQLite has written it to its WAL with write(2)
	// (synchronous=NORMAL), which survives kill -9 of the process (the
	// kernel holds the data), and the WAL is fsynced at most this long
	// after, so a power loss or kernel crash loses at most the commits of
	// the last interval and leaves a consistent database. 0:
	// DefaultSyncInterval.
	SyncInterval time.Duration

	// syncFile replaces (*os.File).Sync in tests.
	syncFile func(*os.File) error
}

// interval returns the validated sync interval.
func (o Options) interval() (time.Duration, error) {
	switch {
	case o.SyncInterval == 0:
		return DefaultSyncInterval, nil
	case o.SyncInterval == SyncAlways, o.SyncInterval > 0:
		return o.SyncInterval, nil
	}
	return 0, fmt.Errorf("sync interval %v: want SyncAlways or a positive duration", o.SyncInterval)
}

// ParseSyncInterval reads the sync_interval setting: "always"
// (SyncAlways) or a positive Go duration ("1s", "250ms"); "" is
// DefaultSyncInterval.
func ParseSyncInterval(s string) (time.Duration, error) {
	v := strings.TrimSpace(s)
	switch {
	case v == "":
		return DefaultSyncInterval, nil
	case strings.EqualFold(v, "always"):
		return SyncAlways, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want always or a positive duration such as 1s or 250ms", s)
	}
	return d, nil
}

// FormatSyncInterval is the inverse of ParseSyncInterval.
func FormatSyncInterval(d time.Duration) string {
	if d == SyncAlways {
		return "always"
	}
	return d.String()
}

// walSyncer makes the commits of synchronous=NORMAL durable: from its own
// goroutine it fsyncs the WAL file at most interval after the writer
// committed something, and once more at close. It sleeps until a commit
// (no ticker: an idle hub on a battery or an SD card wakes for nothing).
//
// Under NORMAL SQLite syncs the WAL only inside a checkpoint, before it
// copies frames into the database file (wal.c, walCheckpoint), and a
// checkpoint copies, and so syncs, nothing while a reader's snapshot
// holds back the frames not yet copied; running one on the writer would
// also stall every write behind the copy. fsync(2) flushes the file, not
// the descriptor it is called on (Linux syncs the inode's dirty pages, as
// PostgreSQL's checkpointer relies on when it syncs what backends wrote),
// so a descriptor of our own on hub.db-wal syncs whatever SQLite wrote
// there, and the writer never waits for it.
type walSyncer struct {
	path      string // hub.db-wal
	interval  time.Duration
	committed func() uint64   // the writer's committed transactions
	wake      <-chan struct{} // a token after each commit (writer.committed)
	syncFile  func(*os.File) error
	log       func() *slog.Logger
	onFault   func(error) // reports a failed sync to the writer's health

	f      *os.File // open on path, nil until it exists
	synced uint64   // committed() before the last sync that succeeded
	failed bool     // the last sync failed (logged once per run of failures)

	quit chan struct{}
	done chan struct{}

	syncs    atomic.Uint64 // syncs that succeeded
	failures atomic.Uint64 // syncs that failed
}

// newWALSyncer starts the syncer of the WAL at walPath.
func newWALSyncer(walPath string, interval time.Duration, committed func() uint64, wake <-chan struct{}, syncFile func(*os.File) error,
	log func() *slog.Logger, onFault func(error)) *walSyncer {
	if syncFile == nil {
		syncFile = (*os.File).Sync
	}
	s := &walSyncer{path: walPath, interval: interval, committed: committed, wake: wake, syncFile: syncFile, log: log, onFault: onFault,
		quit: make(chan struct{}), done: make(chan struct{})}
	// Migrations and the sweep at Open wrote before the writer counted
	// anything: the first sync takes them.
	s.synced = ^uint64(0)
	go s.run()
	return s
}

func (s *walSyncer) run() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
		case <-s.quit:
			return
		}
		// Commits until then ride along with this sync; a failed one is
		// tried again an interval on, commits or not.
		for {
			if !s.sleep() {
				return // close syncs
			}
			if s.syncIfDirty() {
				break
			}
		}
	}
}

// sleep waits an interval; false when quit came first.
func (s *walSyncer) sleep() bool {
	t := time.NewTimer(s.interval)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.quit:
		return false
	}
}

// close stops the goroutine and syncs what the writer committed since the
// last sync. Call it after the writer has finished.
func (s *walSyncer) close() {
	close(s.quit)
	<-s.done
	s.syncIfDirty()
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
}

// syncIfDirty fsyncs the WAL when a transaction committed since the last
// sync that succeeded, and reports false when that sync failed.
func (s *walSyncer) syncIfDirty() bool {
	n := s.committed()
	if n == s.synced {
		return true
	}
	// Read before the sync: a commit after it is synced again next time.
	did, err := s.sync()
	if err != nil {
		s.failures.Add(1)
		if !s.failed {
			s.log().Error("store: sync the WAL: acknowledged writes since the last sync would not survive a power loss", "path", s.path, "err", err)
		}
		s.failed = true
		if s.onFault != nil {
			s.onFault(err)
		}
		return false
	}
	if s.failed {
		s.log().Info("store: the WAL syncs again", "path", s.path)
	}
	s.failed = false
	s.synced = n
	if did {
		s.syncs.Add(1)
	}
	return true
}

// sync fsyncs the WAL file, reopening it if SQLite replaced it, and
// reports whether there was one: a WAL not yet created has nothing to
// sync.
func (s *walSyncer) sync() (bool, error) {
	fi, err := os.Stat(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat: %w", err)
	}
	if s.f != nil {
		if cur, err := s.f.Stat(); err != nil || !os.SameFile(cur, fi) {
			_ = s.f.Close()
			s.f = nil
		}
	}
	if s.f == nil {
		// Read-write: some systems refuse to flush a file opened only
		// for reading. Nothing is ever written through it.
		f, err := os.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			return false, fmt.Errorf("open: %w", err)
		}
		s.f = f
		// A new WAL's directory entry is durable only once its
		// directory is synced (SQLite does it at its own first sync).
		if err := syncDir(filepath.Dir(s.path), s.syncFile); err != nil {
			return false, err
		}
	}
	if err := s.syncFile(s.f); err != nil {
		return false, fmt.Errorf("fsync: %w", err)
	}
	return true, nil
}

// syncDir fsyncs a directory.
func syncDir(dir string, syncFile func(*os.File) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer d.Close()
	if err := syncFile(d); err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	return nil
}
