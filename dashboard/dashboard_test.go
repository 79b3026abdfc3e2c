package dashboard

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBuildIsCurrent holds the committed build to the committed sources:
// the stamp the build wrote must be the hash of web/ now. It needs no
// Node, so CI runs it everywhere.
func TestBuildIsCurrent(t *testing.T) {
	t.Parallel()
	want, err := Stamp("../web")
	if err != nil {
		t.Fatal(err)
	}
	if got := BuildStamp(); got != want {
		t.Fatalf("dashboard/dist was built from other sources than web/ (stamp %q, sources %q): run go generate ./dashboard and commit dashboard/dist", got, want)
	}
}

// TestBuildIsComplete checks that both pages exist and that every asset
// they reference is embedded.
func TestBuildIsComplete(t *testing.T) {
	t.Parallel()
	fsys := FS()
	ref := regexp.MustCompile(`(?:src|href)="/(assets/[^"]+)"`)
	for _, page := range []string{"index.html", "login.html"} {
		b, err := fs.ReadFile(fsys, page)
		if err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		refs := ref.FindAllSubmatch(b, -1)
		if len(refs) == 0 {
			t.Errorf("%s references no assets", page)
		}
		for _, m := range refs {
			if _, err := fs.Stat(fsys, string(m[1])); err != nil {
				t.Errorf("%s references %s: %v", page, m[1], err)
			}
		}
	}
}

// TestStamp checks the hash rule on a directory of its own: content and
// names count; node_modules and dot files do not.
func TestStamp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stamp := func() string {
		t.Helper()
		s, err := Stamp(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	write("a.ts", "1")
	write("src/b.ts", "2")
	s0 := stamp()
	steps := []struct {
		name    string
		do      func()
		changes bool
	}{
		{"node_modules ignored", func() { write("node_modules/x/y.js", "z") }, false},
		{"dot file ignored", func() { write(".gitignore", "z") }, false},
		{"content counts", func() { write("src/b.ts", "3") }, true},
		{"new file counts", func() { write("src/c.ts", "") }, true},
	}
	prev := s0
	for _, s := range steps {
		s.do()
		got := stamp()
		if (got != prev) != s.changes {
			t.Errorf("%s: stamp changed %v, want %v", s.name, got != prev, s.changes)
		}
		prev = got
	}
}
