package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPutStatOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	body := bytes.Repeat([]byte("firmware"), 1000)
	for _, tc := range []struct {
		name, ct, wantCT string
		uploader         string
	}{
		{"fw/esp32/v1.bin", "application/octet-stream", "application/octet-stream", "alice"},
		{"notes.txt", "", "text/plain; charset=utf-8", "bob"},
		{"a/b/c/d/e", "", "text/plain; charset=utf-8", ""},
		// The store checks no access: any principal may store under
		// any name; the adapters ask adapters.Auth first.
		{"devices/other/secret", "application/json", "application/json", "nobody"},
	} {
		d := put(t, e.fs, tc.name, body, PutOptions{ContentType: tc.ct, Size: int64(len(body)), Uploader: tc.uploader, SHA256: sum(body)})
		if d.Name != tc.name || d.Size != int64(len(body)) || d.SHA256 != sum(body) || d.ContentType != tc.wantCT ||
			d.Uploader != tc.uploader || d.CoAPPath != "/files/"+tc.name ||
			d.URL != "http://127.0.0.1:8080/api/v1/files/"+tc.name || d.Time.IsZero() || !d.Expires.IsZero() {
			t.Errorf("Put(%q) = %+v", tc.name, d)
		}
		st, err := e.fs.Stat(ctx, tc.name)
		if err != nil || st != d {
			t.Errorf("Stat(%q) = %+v, %v; want %+v", tc.name, st, err, d)
		}
		if got := e.read(t, tc.name); !bytes.Equal(got, body) {
			t.Errorf("Open(%q): %d bytes, want %d", tc.name, len(got), len(body))
		}
		if r, ok := e.retained(t, tc.name); !ok || r != d {
			t.Errorf("retained on %s = %+v (%v); want %+v", Topic(tc.name), r, ok, d)
		}
	}
	if n := e.entries(t, "blobs"); n != 1 {
		t.Errorf("%d blobs for one content, want 1", n)
	}
	if d := put(t, e.fs, "empty", nil, PutOptions{Size: 0}); d.Size != 0 || d.SHA256 != sum(nil) {
		t.Errorf("empty file: %+v", d)
	}
}

func TestDedupAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	a, b := []byte("same content"), []byte("other content")
	put(t, e.fs, "x/1", a, PutOptions{Size: -1})
	put(t, e.fs, "x/2", a, PutOptions{Size: -1})
	put(t, e.fs, "x/3", b, PutOptions{Size: -1})
	if n := e.entries(t, "blobs"); n != 2 {
		t.Fatalf("%d blobs, want 2 (x/1 and x/2 share one)", n)
	}
	steps := []struct {
		del   string
		blobs int
	}{
		{"x/1", 2}, // x/2 still has the content
		{"x/2", 1},
		{"x/3", 0},
	}
	for _, s := range steps {
		if err := e.fs.Delete(ctx, s.del); err != nil {
			t.Fatalf("Delete(%s): %v", s.del, err)
		}
		if n := e.entries(t, "blobs"); n != s.blobs {
			t.Errorf("after deleting %s: %d blobs, want %d", s.del, n, s.blobs)
		}
		if _, err := e.fs.Stat(ctx, s.del); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%s) after delete: %v, want ErrNotFound", s.del, err)
		}
		if _, ok := e.retained(t, s.del); ok {
			t.Errorf("descriptor of %s still retained after delete", s.del)
		}
	}
	if err := e.fs.Delete(ctx, "x/1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	// Replacing a file with other content collects the old blob.
	put(t, e.fs, "r", a, PutOptions{Size: -1})
	put(t, e.fs, "r", b, PutOptions{Size: -1})
	if n := e.entries(t, "blobs"); n != 1 {
		t.Errorf("after a replacement: %d blobs, want 1", n)
	}
	if got := e.read(t, "r"); !bytes.Equal(got, b) {
		t.Errorf("replaced file reads %q", got)
	}
}

func TestOpenSurvivesDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	put(t, e.fs, "f", []byte("still readable"), PutOptions{Size: -1})
	_, f, err := e.fs.Open(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := e.fs.Delete(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "still readable" {
		t.Errorf("read of a file open before its delete: %q, %v", b, err)
	}
}

func TestVerifyBeforeVisible(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	body := []byte("0123456789")
	u, err := e.fs.Begin(ctx, "partial", PutOptions{Size: int64(len(body)), SHA256: sum(body)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(body[:5]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fs.Stat(ctx, "partial"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of an upload in progress: %v, want ErrNotFound", err)
	}
	if _, ok := e.retained(t, "partial"); ok {
		t.Error("descriptor retained before the upload is complete")
	}
	if ds, _, _ := e.fs.List(ctx, "", 0); len(ds) != 0 {
		t.Errorf("List shows an upload in progress: %+v", ds)
	}
	if e.entries(t, "blobs") != 0 || e.entries(t, "tmp") != 1 {
		t.Errorf("during upload: %d blobs, %d temporary files; want 0, 1", e.entries(t, "blobs"), e.entries(t, "tmp"))
	}
	if _, err := u.Write(body[5:]); err != nil {
		t.Fatal(err)
	}
	if u.Written() != int64(len(body)) {
		t.Errorf("Written = %d", u.Written())
	}
	d, err := u.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := e.retained(t, "partial"); !ok || r != d {
		t.Errorf("retained after commit: %+v, %v", r, ok)
	}
	if e.entries(t, "tmp") != 0 {
		t.Errorf("%d temporary files after commit", e.entries(t, "tmp"))
	}
	if _, err := u.Write([]byte("x")); err == nil {
		t.Error("Write after Commit succeeded")
	}
	u.Abort() // after Commit: nothing
	if _, err := e.fs.Stat(ctx, "partial"); err != nil {
		t.Errorf("Abort after Commit removed the file: %v", err)
	}

	// An aborted upload (an interrupted transfer) leaves nothing.
	u, err = e.fs.Begin(ctx, "aborted", PutOptions{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(body); err != nil {
		t.Fatal(err)
	}
	u.Abort()
	if _, err := e.fs.Stat(ctx, "aborted"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after Abort: %v", err)
	}
	if e.entries(t, "tmp") != 0 || e.entries(t, "blobs") != 1 {
		t.Errorf("after abort: %d temporary files, %d blobs; want 0, 1", e.entries(t, "tmp"), e.entries(t, "blobs"))
	}
}

// failingReader yields some bytes and then fails, as a dropped connection.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	k := min(len(p), r.n)
	r.n -= k
	for i := range p[:k] {
		p[i] = 'x'
	}
	return k, nil
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxFileSize = 1000; c.QuotaPerPrincipal = 1500 })
	ctx := context.Background()
	put(t, e.fs, "used", bytes.Repeat([]byte("u"), 1000), PutOptions{Size: 1000, Uploader: "carol"})
	before := e.entries(t, "blobs")
	ok := bytes.Repeat([]byte("k"), 100)
	for _, tc := range []struct {
		desc string
		name string
		r    io.Reader
		o    PutOptions
		want error
		msg  string
	}{
		{"checksum mismatch", "c", bytes.NewReader(ok), PutOptions{Size: -1, SHA256: sum([]byte("other"))}, ErrChecksum, "declared sha256"},
		{"malformed checksum", "c", bytes.NewReader(ok), PutOptions{Size: -1, SHA256: "abc"}, ErrChecksum, "64 hex digits"},
		{"declared over the limit", "big", bytes.NewReader(ok), PutOptions{Size: 1001}, ErrTooLarge, "the limit is 1000"},
		{"streamed over the limit", "big", bytes.NewReader(make([]byte, 1001)), PutOptions{Size: -1}, ErrTooLarge, "limit of 1000"},
		{"more than declared", "more", bytes.NewReader(ok), PutOptions{Size: 50}, ErrTooLarge, "50 bytes declared"},
		{"fewer than declared", "fewer", bytes.NewReader(ok), PutOptions{Size: 200}, ErrIncomplete, "100 of 200"},
		{"declared over the quota", "q", bytes.NewReader(ok), PutOptions{Size: 600, Uploader: "carol"}, ErrQuota, "carol has 1000 of 1500"},
		{"streamed over the quota", "q", bytes.NewReader(make([]byte, 600)), PutOptions{Size: -1, Uploader: "carol"}, ErrQuota, "carol"},
		{"invalid name", "a//b", bytes.NewReader(ok), PutOptions{Size: -1}, ErrInvalidName, "empty"},
		{"wildcard name", "a/+", bytes.NewReader(ok), PutOptions{Size: -1}, ErrInvalidName, "+"},
		{"invalid content type", "ct", bytes.NewReader(ok), PutOptions{Size: -1, ContentType: "not a type/"}, ErrInvalidContentType, "not a type"},
		{"interrupted", "cut", &failingReader{n: 50}, PutOptions{Size: 100}, io.ErrUnexpectedEOF, "read"},
	} {
		_, err := e.fs.Put(ctx, tc.name, tc.r, tc.o)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Put = %v; want %v with %q", tc.desc, err, tc.want, tc.msg)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "files: put ") {
			t.Errorf("%s: error %q does not say what failed", tc.desc, err)
		}
		if _, err := e.fs.Stat(ctx, tc.name); ValidName(tc.name) == nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Stat after a refused put: %v", tc.desc, err)
		}
		if _, ok := e.retained(t, tc.name); ok {
			t.Errorf("%s: descriptor retained", tc.desc)
		}
		if n, m := e.entries(t, "tmp"), e.entries(t, "blobs"); n != 0 || m != before {
			t.Errorf("%s: %d temporary files, %d blobs left; want 0, %d", tc.desc, n, m, before)
		}
	}
	// Within the quota; another principal has its own.
	put(t, e.fs, "q", ok, PutOptions{Size: -1, Uploader: "carol"})
	put(t, e.fs, "d", make([]byte, 1000), PutOptions{Size: -1, Uploader: "dave"})
	// Replacing one's own file frees what it replaces.
	put(t, e.fs, "used", make([]byte, 1000), PutOptions{Size: 1000, Uploader: "carol"})
	if used, quota, err := e.fs.Usage(ctx, "carol"); err != nil || used != 1100 || quota != 1500 {
		t.Errorf("Usage(carol) = %d, %d, %v; want 1100, 1500", used, quota, err)
	}
}

func TestQuotaConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.QuotaPerPrincipal = 1000 })
	ctx := context.Background()
	// Two uploads that each fit but not both: begun together, the
	// commit's check inside the transaction refuses the second.
	u1, err := e.fs.Begin(ctx, "one", PutOptions{Size: 600, Uploader: "p"})
	if err != nil {
		t.Fatal(err)
	}
	u2, err := e.fs.Begin(ctx, "two", PutOptions{Size: 600, Uploader: "p"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []*Upload{u1, u2} {
		if _, err := u.Write(make([]byte, 600)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := u1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := u2.Commit(ctx); !errors.Is(err, ErrQuota) {
		t.Errorf("second commit past the quota: %v, want ErrQuota", err)
	}
	if _, err := e.fs.Stat(ctx, "two"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(two): %v", err)
	}
	if n := e.entries(t, "tmp"); n != 0 {
		t.Errorf("%d temporary files left", n)
	}
}

func TestExpirySweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.SweepInterval = -1 })
	ctx := context.Background()
	short := put(t, e.fs, "short", []byte("short-lived"), PutOptions{Size: -1, TTL: time.Millisecond})
	put(t, e.fs, "shared", []byte("short-lived"), PutOptions{Size: -1}) // same content, forever
	long := put(t, e.fs, "long", []byte("long-lived"), PutOptions{Size: -1, TTL: time.Hour})
	if short.Expires.IsZero() || long.Expires.Sub(long.Time) != time.Hour {
		t.Errorf("expiry: short %v, long %v after %v", short.Expires, long.Expires, long.Time)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := e.fs.Stat(ctx, "short")
		if errors.Is(err, ErrExpired) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stat of an expired file: %v, want ErrExpired", err)
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, err := e.fs.Open(ctx, "short"); !errors.Is(err, ErrExpired) {
		t.Errorf("Open of an expired file: %v", err)
	}
	if n, err := e.fs.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1", n, err)
	}
	if _, err := e.fs.Stat(ctx, "short"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after the sweep: %v", err)
	}
	if _, ok := e.retained(t, "short"); ok {
		t.Error("expired descriptor still retained")
	}
	for _, n := range []string{"long", "shared"} {
		if _, err := e.fs.Stat(ctx, n); err != nil {
			t.Errorf("Stat(%s) after the sweep: %v", n, err)
		}
	}
	if n := e.entries(t, "blobs"); n != 2 {
		t.Errorf("%d blobs after the sweep, want 2 (shared keeps its content)", n)
	}
	if n, err := e.fs.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v", n, err)
	}
}

func TestDefaultTTLAndSweeper(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.DefaultTTL = time.Millisecond; c.SweepInterval = 5 * time.Millisecond })
	ctx := context.Background()
	put(t, e.fs, "gone", []byte("x"), PutOptions{Size: -1})
	put(t, e.fs, "kept", []byte("y"), PutOptions{Size: -1, TTL: -1})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := e.db.File(ctx, "gone")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not remove an expired file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d, err := e.fs.Stat(ctx, "kept"); err != nil || !d.Expires.IsZero() {
		t.Errorf("Stat(kept) = %+v, %v", d, err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	names := []string{"a", "b/1", "b/2", "c", "d/e/f"}
	for _, n := range names {
		put(t, e.fs, n, []byte(n), PutOptions{Size: -1})
	}
	put(t, e.fs, "b/0-expired", []byte("x"), PutOptions{Size: -1, TTL: time.Nanosecond})
	for _, limit := range []int{1, 2, 3, 5, 100} {
		var got []string
		after := ""
		for range 10 {
			ds, next, err := e.fs.List(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(ds))
			}
			for _, d := range ds {
				got = append(got, d.Name)
			}
			if next == "" {
				break
			}
			after = next
		}
		if strings.Join(got, ",") != strings.Join(names, ",") {
			t.Errorf("limit %d: listed %v, want %v", limit, got, names)
		}
	}
}

func TestReopen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	put(t, e.fs, "kept", []byte("kept"), PutOptions{Size: -1})
	u, err := e.fs.Begin(ctx, "crashed", PutOptions{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("half")); err != nil {
		t.Fatal(err)
	}
	e.fs.Close()
	// A blob placed by a commit that crashed before its record.
	orphan := sum([]byte("orphan"))
	if err := os.MkdirAll(filepath.Join(e.dir, "blobs", "sha256", orphan[:2]), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "blobs", "sha256", orphan[:2], orphan), []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.open(t, nil)
	if n, m := e.entries(t, "tmp"), e.entries(t, "blobs"); n != 0 || m != 1 {
		t.Errorf("after reopening: %d temporary files, %d blobs; want 0, 1", n, m)
	}
	if got := e.read(t, "kept"); string(got) != "kept" {
		t.Errorf("kept reads %q", got)
	}
	if _, err := u.Commit(ctx); err == nil {
		t.Error("Commit of an upload whose temporary file was cleared succeeded")
	}
	if _, err := e.fs.Stat(ctx, "crashed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(crashed) = %v", err)
	}
}

func TestOpenConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{DB: e.db, Bus: e.bus}, "dir: empty"},
		{Config{Dir: t.TempDir(), Bus: e.bus}, "db: nil"},
		{Config{Dir: t.TempDir(), DB: e.db}, "bus: nil"},
		{Config{Dir: t.TempDir(), DB: e.db, Bus: e.bus, DefaultTTL: -time.Second}, "default ttl"},
	} {
		if fs, err := Open(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			if fs != nil {
				fs.Close()
			}
			t.Errorf("Open(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.fs.Close()
	if _, err := e.fs.Put(context.Background(), "x", strings.NewReader("x"), PutOptions{Size: -1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
}

func TestBlobReader(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789"), 100)
	put(t, e.fs, "r", body, PutOptions{Size: -1})
	d, r, err := e.fs.Reader(ctx, "r")
	if err != nil || d.Size != 1000 || r.Size() != 1000 {
		t.Fatalf("Reader = %+v, %v", d, err)
	}
	if _, err := r.Seek(995, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, body[995:]) {
		t.Errorf("read from 995: %q, %v", b, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, body) {
		t.Errorf("whole read: %d bytes, %v", len(b), err)
	}
	p := make([]byte, 16)
	if n, err := r.ReadAt(p, 990); n != 10 || err != io.EOF || string(p[:n]) != "0123456789" {
		t.Errorf("ReadAt past the end = %d, %v", n, err)
	}
	if err := e.fs.Delete(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(p, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadAt after delete: %v, want ErrNotFound", err)
	}
	if _, _, err := e.fs.Reader(ctx, "r"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Reader after delete: %v", err)
	}
}

// TestConcurrentPutsSameName races uploads and deletes of one name: at
// the end the retained descriptor is the stored file's (or there is none
// when nothing is stored), and only that file's blob is left.
func TestConcurrentPutsSameName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				body := []byte(fmt.Sprintf("content %d/%d", i, j))
				if _, err := e.fs.Put(ctx, "race", bytes.NewReader(body), PutOptions{Size: -1}); err != nil {
					t.Error(err)
				}
				if i%4 == 0 {
					_ = e.fs.Delete(ctx, "race") // may find nothing: fine
				}
			}
		}()
	}
	wg.Wait()
	d, err := e.fs.Stat(ctx, "race")
	r, retained := e.retained(t, "race")
	switch {
	case errors.Is(err, ErrNotFound):
		if retained {
			t.Errorf("nothing stored, but %+v retained", r)
		}
		if n := e.entries(t, "blobs"); n != 0 {
			t.Errorf("nothing stored, %d blobs", n)
		}
	case err != nil:
		t.Fatal(err)
	default:
		if !retained || r != d {
			t.Errorf("stored %+v, retained %+v (%v)", d, r, retained)
		}
		if got := e.read(t, "race"); sum(got) != d.SHA256 {
			t.Errorf("content does not match the descriptor")
		}
		if n := e.entries(t, "blobs"); n != 1 {
			t.Errorf("%d blobs for one file", n)
		}
	}
}
