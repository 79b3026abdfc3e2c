package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openTest opens a store in a fresh temporary directory and closes it at
// the end of the test.
func openTest(t testing.TB) *Store {
	t.Helper()
	return openDir(t, t.TempDir())
}

func openDir(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "hub")
	s := openDir(t, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data dir mode = %o, want 700", perm)
	}
	if got, want := s.Path(), filepath.Join(dir, FileName); got != want {
		t.Errorf("Path() = %q, want %q", got, want)
	}
	if _, err := os.Stat(s.Path()); err != nil {
		t.Errorf("database file: %v", err)
	}
}

func TestOpenBadDir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"", "a?b", filepath.Join(file, "sub")} {
		if s, err := Open(context.Background(), dir); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want error", dir)
		}
	}
}

func TestPragmas(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
		sync string // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{
		{"default", Options{}, "1"},
		{"always", Options{SyncInterval: SyncAlways}, "2"},
		{"250ms", Options{SyncInterval: 250 * time.Millisecond}, "1"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s, err := OpenWith(context.Background(), t.TempDir(), mode.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			checkPragmas(t, s, mode.sync)
		})
	}
}

func checkPragmas(t *testing.T, s *Store, sync string) {
	ctx := context.Background()
	for _, db := range []struct {
		name string
		q    func(string) (string, error)
	}{
		{"writer", func(p string) (v string, err error) {
			err = s.w.QueryRowContext(ctx, "PRAGMA "+p).Scan(&v)
			return
		}},
		{"reader", func(p string) (v string, err error) {
			err = s.r.QueryRowContext(ctx, "PRAGMA "+p).Scan(&v)
			return
		}},
	} {
		for _, c := range []struct{ pragma, want string }{
			{"journal_mode", "wal"},
			{"synchronous", sync},
			{"foreign_keys", "1"},
			{"busy_timeout", "10000"},
		} {
			got, err := db.q(c.pragma)
			if err != nil {
				t.Fatalf("%s: PRAGMA %s: %v", db.name, c.pragma, err)
			}
			if got != c.want {
				t.Errorf("%s: PRAGMA %s = %q, want %q", db.name, c.pragma, got, c.want)
			}
		}
	}
	// The reader pool is read-only.
	if _, err := s.r.ExecContext(ctx, `INSERT INTO kv(bucket, key, value) VALUES ('a','b','c')`); err == nil {
		t.Error("write through the reader pool succeeded")
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	for i := range 3 {
		s, err := Open(ctx, dir)
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		v, err := s.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v != len(migrations) {
			t.Errorf("open #%d: schema version %d, want %d", i+1, v, len(migrations))
		}
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) {
			t.Errorf("open #%d: %d schema_migrations rows, want %d", i+1, n, len(migrations))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMigrationRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES (?)`, len(migrations)+5); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("err = %v, want ErrSchemaTooNew", err)
	}
	t.Log(err)
}

func TestMigrationFailureRollsBack(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	bad := append(append([]string(nil), migrations...),
		`CREATE TABLE extra (x INTEGER)`, `THIS IS NOT SQL`)
	if err := s.migrate(ctx, bad); err == nil {
		t.Fatal("migrate with a bad migration succeeded")
	}
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) {
		t.Errorf("schema version after failed migration = %d, want %d", v, len(migrations))
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'extra'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("table from the failed migration batch was kept")
	}
}

func TestCloseTwice(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestMigrationUpgrade writes a database at schema version 1 with data in
// it, then opens it with the full migration list: it is upgraded and the
// data is kept.
func TestMigrationUpgrade(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), false, DefaultSyncInterval))
	if err != nil {
		t.Fatal(err)
	}
	old := &Store{}
	old.w = db
	if err := old.migrate(ctx, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO kv(bucket, key, value) VALUES ('b', 'k', x'01')`); err != nil {
		t.Fatal(err)
	}
	// A queued envelope from before migration 3 (sizes).
	queued, err := env("q/t", "payload", 1).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO queue(subscriber, envelope) VALUES ('s', ?)`, queued); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO subscriptions(id, filters, qos) VALUES ('s', '["q/#"]', 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openDir(t, dir)
	if v, _ := s.SchemaVersion(ctx); v != len(migrations) {
		t.Errorf("schema version after upgrade = %d, want %d", v, len(migrations))
	}
	if v, err := s.KVGet(ctx, "b", "k"); err != nil || len(v) != 1 {
		t.Errorf("data lost in upgrade: %v, %v", v, err)
	}
	if err := s.AppendHistory(ctx, env("t", "x", 0)); err != nil {
		t.Errorf("table of migration 2 missing: %v", err)
	}
	// Migration 3 counts an older row by its encoded length.
	if n, size, err := s.QueueSize(ctx, "s"); err != nil || n != 1 || size != int64(len(queued)) {
		t.Errorf("queue of s after upgrade: %d envelopes, %d bytes, %v; want 1, %d", n, size, err, len(queued))
	}
	if q, err := s.Dequeue(ctx, "s", 0, 10); err != nil || len(q) != 1 || string(q[0].Envelope.Payload) != "payload" {
		t.Errorf("queued envelope after upgrade: %v %v", q, err)
	}
}

// TestCloseLeavesOneFile: after Close the WAL is folded into hub.db.
func TestCloseLeavesOneFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.KVPut(context.Background(), "b", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+"-wal")); err != nil {
		t.Fatalf("no WAL while open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+"-wal")); !os.IsNotExist(err) {
		t.Errorf("WAL left after Close: %v", err)
	}
}

func TestOpenNotADatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a file that is not a database succeeded")
	}
	t.Log(err)
}

func TestOpenRelativeDir(t *testing.T) {
	t.Chdir(t.TempDir())
	s := openDir(t, "file:data")
	if !filepath.IsAbs(s.Path()) {
		t.Errorf("Path() = %q, want absolute", s.Path())
	}
	if _, err := os.Stat(filepath.Join("file:data", FileName)); err != nil {
		t.Error(err)
	}
}
