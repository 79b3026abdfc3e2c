package rest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
)

// The dashboard's pages and the cookie that carries its token.
const (
	dashIndex   = "index.html"
	dashLogin   = "login.html"
	dashCookie  = "hub_token"
	dashLoginAt = "/login"
)

// dashCSP keeps the dashboard to its own origin: its code, styles, and
// the API; nothing from elsewhere, no framing.
const dashCSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// dashFile is one file of the dashboard, ready to send.
type dashFile struct {
	body, gz []byte // gz: gzip-compressed body, nil when it does not pay
	ctype    string
	etag     string
	public   bool // part of the sign-in page: served without credentials
}

// dashboard serves the single-page app from Config.Dashboard. Off
// loopback (a listener that refuses anonymous clients), only the sign-in
// page and its assets are served without credentials; the app itself
// needs the token the sign-in page got, which it keeps in the hub_token
// cookie (or an Authorization header). Its data needs the token in every
// API call in any case.
//
// The files are read, hashed and compressed on the first request for
// one, not at start-up: a hub nobody opens the dashboard of keeps none of
// it in memory (about 0.6 MB, and 2 MB of garbage from compressing it at
// start).
type dashboard struct {
	fsys  fs.FS
	once  sync.Once
	files map[string]*dashFile
	err   error
}

// assetRef finds the assets a page refers to. It is compiled when the
// dashboard's files are first loaded, not in every hub's initialisation.
var assetRef = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?:src|href)="/(assets/[^"]+)"`) })

// newDashboard checks that fsys has the two pages the dashboard needs;
// its files are loaded on first use (see dashboard.get).
func newDashboard(fsys fs.FS) (*dashboard, error) {
	for _, p := range []string{dashIndex, dashLogin} {
		if st, err := fs.Stat(fsys, p); err != nil || st.IsDir() {
			return nil, fmt.Errorf("rest: dashboard: %s is missing", p)
		}
	}
	return &dashboard{fsys: fsys}, nil
}

// get returns the dashboard's files, loading them the first time.
func (d *dashboard) get() (map[string]*dashFile, error) {
	d.once.Do(func() { d.files, d.err = loadDashboard(d.fsys) })
	return d.files, d.err
}

// loadDashboard reads every file of fsys, with its type, ETag and gzip
// form, and marks the sign-in page and its assets public.
func loadDashboard(fsys fs.FS) (map[string]*dashFile, error) {
	files := map[string]*dashFile{}
	err := fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		f := &dashFile{body: b, ctype: mime.TypeByExtension(path.Ext(p))}
		if f.ctype == "" {
			f.ctype = http.DetectContentType(b)
		}
		sum := sha256.Sum256(b)
		f.etag = `"` + hex.EncodeToString(sum[:12]) + `"`
		if len(b) > 512 && !strings.HasPrefix(f.ctype, "image/") {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			_, _ = zw.Write(b)
			if err := zw.Close(); err == nil && buf.Len() < len(b) {
				f.gz = buf.Bytes()
			}
		}
		files[p] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rest: dashboard: %w", err)
	}
	for _, p := range []string{dashIndex, dashLogin} {
		if files[p] == nil {
			return nil, fmt.Errorf("rest: dashboard: %s is missing", p)
		}
	}
	login := files[dashLogin]
	login.public = true
	for _, m := range assetRef().FindAllSubmatch(login.body, -1) {
		if f := files[string(m[1])]; f != nil {
			f.public = true
		}
	}
	return files, nil
}

// serveDashboard answers GET and HEAD requests no route took, outside
// /api/: assets by name, /login with the sign-in page, anything else with
// the app (its own router reads the rest), or, without credentials where
// they are needed, a redirect to /login. It reports whether it answered.
func (a *Adapter) serveDashboard(c *gin.Context) bool {
	r := c.Request
	p := r.URL.Path
	if a.dash == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) || p == "/api" || strings.HasPrefix(p, "/api/") {
		return false
	}
	files, err := a.dash.get()
	if err != nil {
		a.fail(c, err)
		return true
	}
	w := c.Writer
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if strings.HasPrefix(p, "/assets/") {
		f := files[strings.TrimPrefix(p, "/")]
		if f == nil {
			return false
		}
		if !f.public && !a.dashboardAllowed(c) {
			a.fail(c, fmt.Errorf("%w: sign in at %s first", adapters.ErrAuthRequired, dashLoginAt))
			return true
		}
		// Names carry their content's hash: cache them for good.
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		sendDashFile(c, f)
		return true
	}
	page := dashIndex
	if p == dashLoginAt || p == "/"+dashLogin {
		page = dashLogin
	} else if !a.dashboardAllowed(c) {
		c.Redirect(http.StatusSeeOther, dashLoginAt+"?next="+url.QueryEscape(r.URL.RequestURI()))
		c.Abort()
		return true
	}
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", dashCSP)
	h.Set("X-Frame-Options", "DENY")
	sendDashFile(c, files[page])
	return true
}

// dashboardAllowed says whether the request may have the app's code: on a
// listener that lets anonymous clients in, always; otherwise with a valid
// token in the hub_token cookie, or credentials in the Authorization
// header.
func (a *Adapter) dashboardAllowed(c *gin.Context) bool {
	if a.anonFor(c).Allowed() {
		return true
	}
	if ck, err := c.Request.Cookie(dashCookie); err == nil && ck.Value != "" {
		if _, err := a.cfg.Store.VerifyToken(c.Request.Context(), ck.Value); err == nil {
			return true
		}
	}
	if c.GetHeader("Authorization") != "" {
		if p, err := a.credentials(c); err == nil && !p.Anonymous {
			return true
		}
	}
	return false
}

func sendDashFile(c *gin.Context, f *dashFile) {
	h := c.Writer.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	h.Add("Vary", "Accept-Encoding")
	if inm := c.GetHeader("If-None-Match"); inm != "" && strings.Contains(inm, f.etag) {
		c.Status(http.StatusNotModified)
		c.Writer.WriteHeaderNow()
		c.Abort()
		return
	}
	body := f.body
	if f.gz != nil && acceptsGzip(c.GetHeader("Accept-Encoding")) {
		body = f.gz
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	c.Status(http.StatusOK)
	c.Writer.WriteHeaderNow()
	if c.Request.Method != http.MethodHead {
		_, _ = c.Writer.Write(body)
	}
	c.Abort()
}

// acceptsGzip reads an Accept-Encoding header: gzip is listed without
// q=0.
func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
