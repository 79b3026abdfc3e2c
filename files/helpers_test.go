package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

type env struct {
	fs  *Store
	db  *store.Store
	bus *broker.Memory
	dir string
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEnv opens a database, a bus and a file store on a temporary
// directory; mod changes the config before Open.
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: db, Logger: quiet()})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	e := &env{db: db, bus: bus, dir: filepath.Join(dir, "files")}
	t.Cleanup(func() {
		bus.Close()
		db.Close()
	})
	e.open(t, mod)
	return e
}

func (e *env) open(t testing.TB, mod func(*Config)) {
	t.Helper()
	cfg := Config{
		Dir: e.dir, DB: e.db, Bus: e.bus, Logger: quiet(),
		BaseURL: func() string { return "http://127.0.0.1:8080" },
	}
	if mod != nil {
		mod(&cfg)
	}
	fs, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.fs = fs
	t.Cleanup(func() { fs.Close() })
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// retained returns the descriptor retained on files/{name}, ok false when
// there is none.
func (e *env) retained(t testing.TB, name string) (Descriptor, bool) {
	t.Helper()
	rs, err := e.bus.Retained(context.Background(), Topic(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		return Descriptor{}, false
	}
	var d Descriptor
	if err := json.Unmarshal(rs[0].Payload, &d); err != nil {
		t.Fatalf("retained descriptor %q: %v", rs[0].Payload, err)
	}
	return d, true
}

// entries counts the files under sub of the store's directory.
func (e *env) entries(t testing.TB, sub string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(e.dir, sub), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// read returns the bytes of name.
func (e *env) read(t testing.TB, name string) []byte {
	t.Helper()
	_, f, err := e.fs.Open(context.Background(), name)
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t testing.TB, fs *Store, name string, b []byte, o PutOptions) Descriptor {
	t.Helper()
	if o.Size == 0 && len(b) > 0 {
		o.Size = -1
	}
	d, err := fs.Put(context.Background(), name, bytes.NewReader(b), o)
	if err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
	return d
}
