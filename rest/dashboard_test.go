package rest

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// testDashboard is a small build of the dashboard's shape: the app, the
// sign-in page, their scripts (the app's large enough to be gzipped).
func testDashboard() fstest.MapFS {
	return fstest.MapFS{
		"index.html":         {Data: []byte(`<!doctype html><script type="module" src="/assets/app-1.js"></script><div id="app"></div>`)},
		"login.html":         {Data: []byte(`<!doctype html><script type="module" src="/assets/login-1.js"></script><link rel="stylesheet" href="/assets/style-1.css"><form id="login"></form>`)},
		"assets/app-1.js":    {Data: bytes.Repeat([]byte("console.log('the app');\n"), 100)},
		"assets/login-1.js":  {Data: []byte("console.log('sign in');")},
		"assets/style-1.css": {Data: []byte("body{}")},
	}
}

type dashReq struct {
	method, path string
	header       map[string]string
	cookie       string
}

func (h *testHub) dash(r dashReq) (int, http.Header, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(r.method, h.base+r.path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: dashCookie, Value: r.cookie})
	}
	// Plain transport: no automatic gzip, no redirects followed.
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestDashboardServing(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{dashboard: testDashboard()})
	_, hdr, _ := h.dash(dashReq{method: "GET", path: "/"})
	indexTag := hdr.Get("ETag")
	for _, c := range []struct {
		name    string
		r       dashReq
		status  int
		has     string
		headers map[string]string
	}{
		{"app", dashReq{method: "GET", path: "/"}, 200, `<div id="app">`,
			map[string]string{"Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8", "X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'"}},
		{"deep link is the app", dashReq{method: "GET", path: "/devices/therm1"}, 200, `<div id="app">`, nil},
		{"sign-in page", dashReq{method: "GET", path: "/login"}, 200, `id="login"`, nil},
		{"asset", dashReq{method: "GET", path: "/assets/app-1.js"}, 200, "the app",
			map[string]string{"Cache-Control": "public, max-age=31536000, immutable", "Content-Type": "text/javascript; charset=utf-8", "Content-Encoding": ""}},
		{"asset gzipped", dashReq{method: "GET", path: "/assets/app-1.js", header: map[string]string{"Accept-Encoding": "br, gzip"}}, 200, "",
			map[string]string{"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}},
		{"gzip refused", dashReq{method: "GET", path: "/assets/app-1.js", header: map[string]string{"Accept-Encoding": "gzip;q=0"}}, 200, "the app",
			map[string]string{"Content-Encoding": ""}},
		{"small asset not gzipped", dashReq{method: "GET", path: "/assets/login-1.js", header: map[string]string{"Accept-Encoding": "gzip"}}, 200, "sign in",
			map[string]string{"Content-Encoding": ""}},
		{"not modified", dashReq{method: "GET", path: "/", header: map[string]string{"If-None-Match": indexTag}}, 304, "", nil},
		{"HEAD", dashReq{method: "HEAD", path: "/"}, 200, "", nil},
		{"missing asset", dashReq{method: "GET", path: "/assets/nope.js"}, 404, `"error"`, nil},
		{"POST is no page", dashReq{method: "POST", path: "/"}, 404, `"error"`, nil},
		{"unknown API path is JSON", dashReq{method: "GET", path: "/api/v1/nothing"}, 404, `"error"`, nil},
		{"API root is JSON", dashReq{method: "GET", path: "/api"}, 404, `"error"`, nil},
		{"healthz unchanged", dashReq{method: "GET", path: "/healthz"}, 200, `"status":"ok"`, nil},
	} {
		s, hdr, b := h.dash(c.r)
		if s != c.status || !bytes.Contains(b, []byte(c.has)) {
			t.Errorf("%s: %s %s: %d %.120q, want %d with %q", c.name, c.r.method, c.r.path, s, b, c.status, c.has)
		}
		for k, v := range c.headers {
			if got := hdr.Get(k); (v == "" && got != "") || !strings.HasPrefix(got, v) {
				t.Errorf("%s: %s: %q, want %q", c.name, k, got, v)
			}
		}
		if c.name == "asset gzipped" {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("gzip: %v", err)
			}
			plain, _ := io.ReadAll(zr)
			if !bytes.Equal(plain, testDashboard()["assets/app-1.js"].Data) {
				t.Errorf("gzipped asset does not decompress to the asset")
			}
		}
	}
}

// TestDashboardOffLoopback: without a token only the sign-in page and
// its assets; a token in the hub_token cookie or the Authorization header
// opens the app.
func TestDashboardOffLoopbackServing(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{addr: "0.0.0.0:0", dashboard: testDashboard()})
	ctx := context.Background()
	if err := h.st.AddUser(ctx, "admin", "adminpw", adapters.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	tok, err := h.st.CreateToken(ctx, "admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		r        dashReq
		status   int
		location string
	}{
		{"app", dashReq{method: "GET", path: "/"}, http.StatusSeeOther, "/login?next=%2F"},
		{"deep link", dashReq{method: "GET", path: "/a?b=c"}, http.StatusSeeOther, "/login?next=%2Fa%3Fb%3Dc"},
		{"bad cookie", dashReq{method: "GET", path: "/", cookie: "nope"}, http.StatusSeeOther, "/login?next=%2F"},
		{"sign-in page", dashReq{method: "GET", path: "/login"}, 200, ""},
		{"its script", dashReq{method: "GET", path: "/assets/login-1.js"}, 200, ""},
		{"its style", dashReq{method: "GET", path: "/assets/style-1.css"}, 200, ""},
		{"the app's script", dashReq{method: "GET", path: "/assets/app-1.js"}, 401, ""},
		{"app with cookie", dashReq{method: "GET", path: "/", cookie: tok}, 200, ""},
		{"script with cookie", dashReq{method: "GET", path: "/assets/app-1.js", cookie: tok}, 200, ""},
		{"app with bearer", dashReq{method: "GET", path: "/", header: map[string]string{"Authorization": "Bearer " + tok}}, 200, ""},
		{"app with a bad bearer", dashReq{method: "GET", path: "/", header: map[string]string{"Authorization": "Bearer x"}}, http.StatusSeeOther, "/login?next=%2F"},
	} {
		s, hdr, b := h.dash(c.r)
		if s != c.status || hdr.Get("Location") != c.location {
			t.Errorf("%s: %d Location %q (%.80q), want %d %q", c.name, s, hdr.Get("Location"), b, c.status, c.location)
		}
	}
}

// TestScriptedChallenge: a browser script's 401 names Bearer only, so
// the browser opens no password dialog; other clients get Basic too.
func TestScriptedChallenge(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{addr: "0.0.0.0:0"})
	for _, c := range []struct {
		name  string
		r     dashReq
		basic bool
	}{
		{"plain client", dashReq{method: "GET", path: "/api/v1/users"}, true},
		{"script", dashReq{method: "GET", path: "/api/v1/users", header: map[string]string{"X-Requested-With": "XMLHttpRequest"}}, false},
		{"query token", dashReq{method: "GET", path: "/api/v1/subscribe?filter=a&access_token=nope"}, false},
	} {
		s, hdr, _ := h.dash(c.r)
		ch := strings.Join(hdr.Values("WWW-Authenticate"), ", ")
		if s != 401 || !strings.Contains(ch, "Bearer") || strings.Contains(ch, "Basic") != c.basic {
			t.Errorf("%s: %d %q, want 401 with Bearer, Basic %v", c.name, s, ch, c.basic)
		}
	}
}

func TestNoDashboard(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	if s, _, b := h.do("GET", "/", "", "", ""); s != 404 || !strings.Contains(b, `"error"`) {
		t.Errorf("GET / without a dashboard: %d %s", s, b)
	}
	if s, _, b := h.do("GET", "/api/v1/admin/overview", "", "", ""); s != 404 || !strings.Contains(b, "no overview") {
		t.Errorf("overview without one: %d %s", s, b)
	}
}

func TestNewDashboardNeedsPages(t *testing.T) {
	t.Parallel()
	fsys := testDashboard()
	delete(fsys, "login.html")
	if _, err := newDashboard(fsys); err == nil || !strings.Contains(err.Error(), "login.html") {
		t.Fatalf("a build without login.html: %v", err)
	}
}

func TestAcceptsGzip(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "br, gzip": true, "gzip;q=0": false, "gzip; q=0.000": false,
		"gzip;q=0.5": true, "deflate": false, "x-gzip": false, "*": false,
	} {
		if got := acceptsGzip(in); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "br;q=1, gzip;q=0", ";;,,", "gzip;q=0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := acceptsGzip(s)
		if got && !strings.Contains(strings.ToLower(s), "gzip") {
			t.Fatalf("acceptsGzip(%q) without gzip in it", s)
		}
	})
}
