package rest

import (
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"
)

// countingFS counts the files opened (not stats) in an fs.FS; failing
// names fail to open.
type countingFS struct {
	fs.FS
	mu      sync.Mutex
	opened  map[string]int
	failing string
}

func (c *countingFS) Open(name string) (fs.File, error) {
	if name != "." {
		c.mu.Lock()
		c.opened[name]++
		c.mu.Unlock()
	}
	if name == c.failing {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("device gone")}
	}
	return c.FS.Open(name)
}

// Stat answers without opening, as embed.FS does for a file it knows.
func (c *countingFS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(c.FS, name) }

func (c *countingFS) opens(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened[name]
}

// TestDashboardLoadsOnFirstRequest: a hub keeps none of the dashboard in
// memory until it is asked for a page; then it reads each file once.
func TestDashboardLoadsOnFirstRequest(t *testing.T) {
	t.Parallel()
	fsys := &countingFS{FS: testDashboard(), opened: map[string]int{}}
	h := startHub(t, hubOpts{dashboard: fsys})
	for _, name := range []string{"index.html", "login.html", "assets/app-1.js"} {
		if n := fsys.opens(name); n != 0 {
			t.Fatalf("%s opened %d times before any request", name, n)
		}
	}
	for range 3 {
		if s, _, b := h.dash(dashReq{method: "GET", path: "/assets/app-1.js"}); s != 200 || !strings.Contains(string(b), "the app") {
			t.Fatalf("GET /assets/app-1.js: %d %.80s", s, b)
		}
	}
	if s, _, b := h.dash(dashReq{method: "GET", path: "/login"}); s != 200 || !strings.Contains(string(b), `id="login"`) {
		t.Fatalf("GET /login: %d %.80s", s, b)
	}
	for _, name := range []string{"index.html", "login.html", "assets/app-1.js", "assets/style-1.css"} {
		if n := fsys.opens(name); n != 1 {
			t.Errorf("%s opened %d times, want once", name, n)
		}
	}
}

// TestDashboardLoadFailure: a file that cannot be read when the dashboard
// is first asked for gives an error that names it, not an empty page.
func TestDashboardLoadFailure(t *testing.T) {
	t.Parallel()
	fsys := &countingFS{FS: testDashboard(), opened: map[string]int{}, failing: "assets/app-1.js"}
	h := startHub(t, hubOpts{dashboard: fsys})
	s, _, b := h.dash(dashReq{method: "GET", path: "/"})
	if s != 500 || !strings.Contains(string(b), "app-1.js") || !strings.Contains(string(b), "device gone") {
		t.Fatalf("GET / with an unreadable asset: %d %s", s, b)
	}
}
