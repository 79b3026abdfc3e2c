package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// FileName is the database file's name inside the data directory.
const FileName = "hub.db"

// busyTimeoutMS bounds how long a connection waits for a lock held by
// another connection (another process, or the writer during a reader's
// WAL checkpoint) before SQLITE_BUSY.
const busyTimeoutMS = 10000

// maxReaders is the size of the read-only connection pool.
const maxReaders = 4

// impl is the state behind a Store: one writer connection, so that writes
// queue in Go instead of failing with SQLITE_BUSY, and a pool of read-only
// connections that WAL lets run beside it.
type impl struct {
	w      *sql.DB // exactly one connection; every write goes here
	wr     *writer // the goroutine that owns w after Open
	r      *sql.DB // read-only pool
	path   string
	logger atomic.Pointer[slog.Logger]
	auth   authCache
	// iterations is the PBKDF2 count of new credentials (0: SCRAMIterations).
	iterations atomic.Int64
	check      CheckResult // of the integrity check at Open
	// onPrincipal is called after principal changes (replica.go).
	onPrincipal atomic.Pointer[func()]
	// insQueued is the hot path's statement (an envelope queued for one
	// subscriber), prepared once on the write connection.
	insQueued *sql.Stmt
	// rmRange deletes a run of acknowledged queue entries (removeRange),
	// the other half of the hot path, prepared once too.
	rmRange *sql.Stmt
	// kvGet is KVGet's statement, prepared on the readers: every MQTT
	// connection reads its client id's session record, and parsing the
	// query took about 60 µs of each (modernc's SQLite parser).
	kvGet *sql.Stmt
	// hist caches the history's topic and series ids (series.go).
	hist histIDs
	// syncInterval is Options.SyncInterval, validated; syncer fsyncs the
	// WAL unless it is SyncAlways (sync.go).
	syncInterval time.Duration
	syncer       *walSyncer

	closeOnce sync.Once
	closeErr  error
}

// dsn builds the connection string. The pragmas in it run on every new
// connection of the pool, not just the first.
func dsn(path string, readOnly bool, interval time.Duration) string {
	// FULL: a commit is fsynced before it returns, so an acknowledged
	// QoS >= 1 message survives a power loss. NORMAL: a commit returns
	// once it is written to the WAL, which survives kill -9; the WAL is
	// fsynced by walSyncer (and by SQLite before each checkpoint).
	sync := "NORMAL"
	if interval == SyncAlways {
		sync = "FULL"
	}
	q := []string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(" + sync + ")",
		"_pragma=foreign_keys(1)",
		// IMMEDIATE takes the write lock at BEGIN, so a transaction
		// never fails half-way with SQLITE_BUSY on lock upgrade.
		"_txlock=immediate",
	}
	if readOnly {
		q = append(q, "_query_only=1")
	}
	return path + "?" + strings.Join(q, "&")
}

func open(ctx context.Context, dir string, opts Options) (*Store, error) {
	interval, err := opts.interval()
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if dir == "" {
		return nil, errors.New("store: open: empty data directory")
	}
	if strings.ContainsAny(dir, "?#") {
		return nil, fmt.Errorf("store: open %q: the data directory may not contain '?' or '#'", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open: create data directory: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: open %q: %w", dir, err)
	}
	// An absolute path never starts with "file:", which the driver would
	// take for a URI.
	path := filepath.Join(abs, FileName)
	s := &Store{}
	s.path = path
	s.syncInterval = interval
	s.logger.Store(slog.Default().With("component", "store"))
	s.auth.init()

	w, err := sql.Open("sqlite", dsn(path, false, interval))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s.w = w
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// A damaged database still opens: an edge hub that refused to start
	// would lose everything instead of what is damaged. The damage is
	// logged, reported by Check and in the metrics.
	check, err := quickCheckOnce(ctx, path, interval)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s.check = check
	if !check.OK {
		s.log().Error("store: the database failed its integrity check; damaged records may be lost: restore a backup or move the file away to start afresh",
			"path", path, "problems", check.Problems)
	}
	if err := s.migrate(ctx, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if s.insQueued, err = w.PrepareContext(ctx, `INSERT INTO queue(subscriber, seq, msg, size, envelope) VALUES (?, ?, 0, ?, ?)`); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if s.rmRange, err = w.PrepareContext(ctx, rangeDelete); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	rows, err := prepareRowInserts(ctx, w)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := sweepOrphans(ctx, w); err != nil {
		// Not fatal: what is left costs disk, never a wrong delivery.
		s.log().Warn("store: sweep queue entries of removed subscriptions", "path", path, "err", err)
	}
	s.wr = newWriter(w, rows)
	if interval != SyncAlways {
		s.syncer = newWALSyncer(path+"-wal", interval, s.wr.batches.Load, s.wr.committed, opts.syncFile, s.log, s.wr.health.fault)
	}
	r, err := sql.Open("sqlite", dsn(path, true, interval))
	if err != nil {
		s.stopWriter()
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(maxReaders)
	r.SetMaxIdleConns(maxReaders)
	s.r = r
	if err := r.PingContext(ctx); err != nil {
		s.stopWriter()
		w.Close()
		r.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if s.kvGet, err = r.PrepareContext(ctx, kvGetQuery); err != nil {
		s.stopWriter()
		w.Close()
		r.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// SetLogger sets the logger for warnings (corrupt rows); the default is
// slog.Default().
func (s *Store) SetLogger(l *slog.Logger) {
	if l != nil {
		s.logger.Store(l)
	}
}

func (s *Store) log() *slog.Logger { return s.logger.Load() }

// Close closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		s.stopWriter()
		if s.w != nil {
			// The last connection to close checkpoints the WAL into
			// hub.db and removes it (SQLite does that itself), so a
			// cleanly stopped hub leaves one self-contained file.
			errs = append(errs, s.w.Close())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return s.closeErr
}

// stopWriter lets the queued writes finish, ends the writer and then
// the WAL syncer, which syncs what they committed.
func (s *Store) stopWriter() {
	if s.wr != nil {
		s.wr.close()
	}
	if s.syncer != nil {
		s.syncer.close()
	}
}

// SyncInterval returns the store's Options.SyncInterval in effect:
// SyncAlways or a positive duration.
func (s *Store) SyncInterval() time.Duration { return s.syncInterval }

// tx runs fn in a write transaction, returning once it is committed (fn
// returned nil) or undone (fn failed). fn may share its transaction with
// other writes (see writer), so it must not commit or roll back itself,
// and it must use the context it is given, not the caller's.
func (s *Store) tx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if s.wr == nil {
		return directTx(ctx, s.w, fn)
	}
	return s.wr.do(ctx, fn, nil)
}

// exec runs one write statement through the writer.
func (s *Store) exec(ctx context.Context, query string, args ...any) error {
	return s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, query, args...)
		return err
	})
}

// directTx runs fn in its own transaction on db; used before the writer
// starts (migrations).
func directTx(ctx context.Context, db *sql.DB, fn func(ctx context.Context, tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// mapErr turns SQLite's uniqueness violations into ErrExists, without
// SQLite's text ("UNIQUE constraint failed: users.name (1555)"): callers
// say what already exists, and the message reaches users.
func mapErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return ErrExists
		}
	}
	return err
}

// mustAffect returns ErrNotFound when res changed no row.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// notFound maps sql.ErrNoRows to ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// sweepOrphans deletes queue entries whose subscription is gone (a
// publisher's write that committed just after the subscriber's removal)
// and envelopes no queue refers to.
func sweepOrphans(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `DELETE FROM queue WHERE subscriber NOT IN (SELECT id FROM subscriptions)`); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, `DELETE FROM messages WHERE id NOT IN (SELECT msg FROM queue WHERE msg <> 0)`)
	return err
}
