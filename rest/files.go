package rest

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/files"
)

// Headers of file uploads and downloads.
const (
	// HeaderChecksum carries a file's SHA-256 in hex, declared on upload
	// and sent on download (the name Artifactory and Nexus use).
	HeaderChecksum = "X-Checksum-SHA256"
	// HeaderReprDigest is RFC 9530's digest of the whole file
	// ("sha-256=:base64:"), sent on download and read on upload (with
	// Content-Digest and RFC 3230's Digest).
	HeaderReprDigest = "Repr-Digest"
)

// maxFormField bounds a multipart field other than the file.
const maxFormField = 4 << 10

// multipartSlack is what a multipart upload may carry beside the file
// (boundaries, headers, small fields) before the body counts as too large.
const multipartSlack = 1 << 20

// errStalled marks an upload that sent nothing for ReadTimeout (408).
var errStalled = errors.New("upload stalled")

// errNoFiles answers the file routes of an adapter without a file store.
var errNoFiles = errors.New("the file store is not enabled")

// fileRoutes are the routes whose bodies the file store bounds itself,
// instead of limitBody's MaxBody.
var fileRoutes = map[string]bool{
	"/api/v1/files":                 true,
	files.SlotPath + ":token/:file": true,
}

// fileList is the body of GET /api/v1/files.
type fileList struct {
	Files []files.Descriptor `json:"files"`
	// Next is the after of the next page ("" on the last).
	Next string `json:"next,omitempty"`
}

func (a *Adapter) fileStore(c *gin.Context) (*files.Store, bool) {
	if a.cfg.Files == nil {
		a.fail(c, fmt.Errorf("%w: %w", errNotFound, errNoFiles))
		return nil, false
	}
	return a.cfg.Files, true
}

// fileName returns the name in the *name path parameter, checked.
func fileName(c *gin.Context) (string, error) {
	name := strings.TrimPrefix(c.Param("name"), "/")
	if err := files.ValidName(name); err != nil {
		return "", err
	}
	return name, nil
}

// uploadFile handles POST /api/v1/files: a multipart form whose "file"
// part is the file (name: ?name=, else a "name" field before the file
// part, else the part's file name), or a raw body with ?name= and its
// Content-Type. The declared SHA-256 comes from ?sha256=, a "sha256"
// field, X-Checksum-SHA256, Repr-Digest/Content-Digest or Digest; ?ttl=
// sets the lifetime. The publish right on files/{name} is needed. 201 with
// the descriptor.
func (a *Adapter) uploadFile(c *gin.Context) {
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	a.readWhileProgress(c)
	sum, err := declaredDigest(c.Request.Header, c.Query("sha256"))
	if err != nil {
		a.fail(c, err)
		return
	}
	o := files.PutOptions{SHA256: sum, Size: -1, Uploader: principal(c).Name}
	if s := c.Query("ttl"); s != "" {
		ttl, err := time.ParseDuration(s)
		if err != nil || ttl <= 0 {
			a.fail(c, badRequest("ttl %q: must be a positive duration such as 24h", trunc(s)))
			return
		}
		o.TTL = ttl
	}
	ct := c.GetHeader("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	var (
		name = c.Query("name")
		body io.Reader
	)
	if mt == "multipart/form-data" {
		name, body, o, err = a.multipartFile(c, fs, name, o)
		if err != nil {
			a.fail(c, err)
			return
		}
	} else {
		if name == "" {
			a.fail(c, badRequest("name: give ?name= for a raw upload, or send a multipart form with a \"file\" part"))
			return
		}
		o.ContentType = ct
		o.Size = c.Request.ContentLength
		body = c.Request.Body
	}
	a.storeFile(c, fs, name, body, o)
}

// multipartFile reads the form up to its "file" part and returns the
// name, that part and the options the fields gave.
func (a *Adapter) multipartFile(c *gin.Context, fs *files.Store, name string, o files.PutOptions) (string, io.Reader, files.PutOptions, error) {
	if max := fs.MaxFileSize(); max >= 0 {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, max+multipartSlack)
	}
	mr, err := c.Request.MultipartReader()
	if err != nil {
		return "", nil, o, badRequest("multipart form: %v", err)
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return "", nil, o, badRequest("multipart form: no \"file\" part")
		}
		if err != nil {
			return "", nil, o, badRequest("multipart form: %v", err)
		}
		field := part.FormName()
		if field == "file" {
			if name == "" {
				name = part.FileName()
			}
			if name == "" {
				return "", nil, o, badRequest("name: give ?name=, a \"name\" field before the file, or a file name in the part")
			}
			o.ContentType = part.Header.Get("Content-Type")
			return name, part, o, nil
		}
		b, err := io.ReadAll(io.LimitReader(part, maxFormField+1))
		if err != nil {
			return "", nil, o, badRequest("multipart form: field %q: %v", trunc(field), err)
		}
		if len(b) > maxFormField {
			return "", nil, o, badRequest("multipart form: field %q: longer than %d bytes", trunc(field), maxFormField)
		}
		switch field {
		case "name":
			if name == "" {
				name = string(b)
			}
		case "sha256":
			sum, err := mergeDigest(o.SHA256, string(b), "field sha256")
			if err != nil {
				return "", nil, o, err
			}
			o.SHA256 = sum
		}
	}
}

// storeFile checks the publish right on files/{name}, stores body and
// answers 201 with the descriptor.
func (a *Adapter) storeFile(c *gin.Context, fs *files.Store, name string, body io.Reader, o files.PutOptions) {
	ctx := c.Request.Context()
	if err := files.ValidName(name); err != nil {
		a.fail(c, err)
		return
	}
	if err := a.cfg.Auth.Authorize(ctx, principal(c), adapters.ActionUpload, files.Topic(name)); err != nil {
		a.fail(c, err)
		return
	}
	d, err := fs.Put(ctx, name, body, o)
	if err != nil {
		a.fail(c, uploadError(err))
		return
	}
	c.Header("Location", fileURL(d.Name))
	c.Header("ETag", d.ETag())
	c.JSON(http.StatusCreated, d)
}

// uploadError turns the body limit's error into the store's own, so the
// message names the file size limit rather than MaxBody.
func uploadError(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("%w: the form is larger than the file size limit allows", files.ErrTooLarge)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: nothing was stored: %w", errStalled, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The client went away or sent less than its Content-Length.
		return fmt.Errorf("%w: the upload ended early, nothing was stored: %w", errBadRequest, err)
	}
	return err
}

// getFile handles GET and HEAD /api/v1/files/{name}: the bytes with
// Range, ETag (the quoted SHA-256), If-None-Match, Last-Modified and
// Content-Type, by http.ServeContent. The read right on files/{name} is
// needed.
func (a *Adapter) getFile(c *gin.Context) {
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	name, err := fileName(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	if err := a.cfg.Auth.CanRead(ctx, principal(c), files.Topic(name)); err != nil {
		a.fail(c, err)
		return
	}
	d, f, err := fs.Open(ctx, name)
	if err != nil {
		a.fail(c, err)
		return
	}
	defer f.Close()
	c.Header("Cache-Control", "private, no-cache")
	serveFile(c, d, f)
}

// serveFile sends f with d's headers.
func serveFile(c *gin.Context, d files.Descriptor, f io.ReadSeeker) {
	h := c.Writer.Header()
	h.Set("ETag", d.ETag())
	h.Set("Content-Type", d.ContentType)
	h.Set(HeaderChecksum, d.SHA256)
	if b, err := hex.DecodeString(d.SHA256); err == nil {
		h.Set(HeaderReprDigest, "sha-256=:"+base64.StdEncoding.EncodeToString(b)+":")
	}
	h.Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": files.BaseName(d.Name)}))
	if !d.Expires.IsZero() {
		h.Set("Expires", d.Expires.Format(http.TimeFormat))
	}
	http.ServeContent(c.Writer, c.Request, "", d.Time, f)
}

// deleteFile handles DELETE /api/v1/files/{name}: the publish right on
// files/{name} is needed; 204.
func (a *Adapter) deleteFile(c *gin.Context) {
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	name, err := fileName(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	if err := a.cfg.Auth.Authorize(ctx, principal(c), adapters.ActionUpload, files.Topic(name)); err != nil {
		a.fail(c, err)
		return
	}
	if err := fs.Delete(ctx, name); err != nil {
		a.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// listFiles handles GET /api/v1/files?after=&limit=: a page of the
// descriptors the caller may read, sorted by name, and the after of the
// next page. A page may hold fewer than limit when some are not readable.
func (a *Adapter) listFiles(c *gin.Context) {
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	limit := 0
	if s := c.Query("limit"); s != "" {
		if _, err := fmt.Sscanf(s, "%d", &limit); err != nil || limit <= 0 || limit > files.MaxListLimit || fmt.Sprint(limit) != s {
			a.fail(c, badRequest("limit %q: must be 1..%d", trunc(s), files.MaxListLimit))
			return
		}
	}
	ctx := c.Request.Context()
	ds, next, err := fs.List(ctx, c.Query("after"), limit)
	if err != nil {
		a.fail(c, err)
		return
	}
	p := principal(c)
	out := fileList{Files: []files.Descriptor{}, Next: next}
	for _, d := range ds {
		if a.cfg.Auth.CanRead(ctx, p, files.Topic(d.Name)) == nil {
			out.Files = append(out.Files, d)
		}
	}
	c.JSON(http.StatusOK, out)
}

// cors lets browser chat clients (Converse.js, Movim) PUT to a slot and
// GET a shared file from another origin, as XEP-0363 advises.
func cors(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Max-Age", "86400")
}

// slotOptions answers the CORS preflight of a slot or shared URL.
func (a *Adapter) slotOptions(c *gin.Context) {
	cors(c)
	c.Status(http.StatusNoContent)
}

// putSlot handles PUT /api/v1/slots/{token}/{file}, the upload of an
// XEP-0363 slot: no other credentials, the token is one. 201 with the
// descriptor.
func (a *Adapter) putSlot(c *gin.Context) {
	cors(c)
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	a.readWhileProgress(c)
	d, err := fs.PutSlot(c.Request.Context(), c.Param("token"), c.Request.Body, c.Request.ContentLength, c.GetHeader("Content-Type"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Header("ETag", d.ETag())
	c.JSON(http.StatusCreated, d)
}

// getShared handles GET and HEAD /api/v1/shared/{token}/{file}: a file
// uploaded through a slot (or shared by files.Store.Share), without
// credentials, as XEP-0363 receivers fetch it. The token is unguessable
// and not the PUT one.
func (a *Adapter) getShared(c *gin.Context) {
	cors(c)
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	d, f, err := fs.OpenShared(c.Request.Context(), c.Param("token"))
	if err != nil {
		a.fail(c, err)
		return
	}
	defer f.Close()
	c.Header("Cache-Control", "public, max-age=86400, immutable")
	serveFile(c, d, f)
}

// sendFile handles POST /api/v1/devices/{id}/files/{name}?timeout=: the
// device gets the command "file" with the file's descriptor as its
// params, over its own protocol, and its reply (which reports the sha256
// it received) is the answer, as for any command. The caller needs the
// command right on the device and the read right on files/{name}.
func (a *Adapter) sendFile(c *gin.Context) {
	fs, ok := a.fileStore(c)
	if !ok {
		return
	}
	id := c.Param("id")
	timeout, err := parseTimeout(c.Query("timeout"))
	if err != nil {
		a.fail(c, err)
		return
	}
	if err := devices.ValidateID(id); err != nil {
		a.fail(c, fmt.Errorf("%w %q", devices.ErrUnknownDevice, trunc(id)))
		return
	}
	name, err := fileName(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	p := principal(c)
	if err := a.cfg.Auth.Authorize(ctx, p, adapters.ActionCommand, id); err != nil {
		a.fail(c, err)
		return
	}
	if err := a.cfg.Auth.CanRead(ctx, p, files.Topic(name)); err != nil {
		a.fail(c, err)
		return
	}
	d, err := fs.Stat(ctx, name)
	if err != nil {
		a.fail(c, err)
		return
	}
	// The shared link needs no credentials: a device's default rules do
	// not cover files/..., and the sender may hand it the file anyway.
	link, err := fs.Share(ctx, name)
	if err != nil {
		a.fail(c, err)
		return
	}
	params, err := json.Marshal(struct {
		files.Descriptor
		SharedURL string `json:"shared_url"`
	}{d, link})
	if err != nil {
		a.fail(c, err)
		return
	}
	a.sendCommand(c, id, FileCommand, params, timeout)
}

// FileCommand is the device command that hands a device a file: its params
// are the files.Descriptor, and the device fetches the bytes over HTTP or
// CoAP and replies, e.g. {"sha256": "…"}.
const FileCommand = "file"

// declaredDigest returns the SHA-256 (hex) an upload declares in the
// query (?sha256=, hex) or headers: X-Checksum-SHA256 (hex),
// Repr-Digest or Content-Digest (RFC 9530, sha-256=:base64:), Digest (RFC
// 3230, SHA-256=base64). Several must agree; none is "".
func declaredDigest(h http.Header, query string) (string, error) {
	sum := ""
	add := func(v, where string) error {
		s, err := mergeDigest(sum, v, where)
		sum = s
		return err
	}
	if query != "" {
		if err := add(query, "?sha256"); err != nil {
			return "", err
		}
	}
	if v := h.Get(HeaderChecksum); v != "" {
		if err := add(v, HeaderChecksum); err != nil {
			return "", err
		}
	}
	for _, name := range []string{"Repr-Digest", "Content-Digest", "Digest"} {
		for _, v := range h.Values(name) {
			for item := range strings.SplitSeq(v, ",") {
				alg, val, ok := strings.Cut(strings.TrimSpace(item), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(alg), "sha-256") {
					continue
				}
				val = strings.TrimSpace(val)
				if name != "Digest" {
					// RFC 9530: a structured-field byte sequence.
					if len(val) < 2 || val[0] != ':' || val[len(val)-1] != ':' {
						return "", fmt.Errorf("%w: %s %q: want %s", files.ErrChecksum, name, trunc(val), "sha-256=:base64:")
					}
					val = val[1 : len(val)-1]
				}
				b, err := base64.StdEncoding.DecodeString(val)
				if err != nil || len(b) != 32 {
					return "", fmt.Errorf("%w: %s sha-256 %q is not 32 bytes in base64", files.ErrChecksum, name, trunc(val))
				}
				if err := add(hex.EncodeToString(b), name); err != nil {
					return "", err
				}
			}
		}
	}
	return sum, nil
}

// mergeDigest checks a hex digest v and that it agrees with sum (when
// set).
func mergeDigest(sum, v, where string) (string, error) {
	v = strings.ToLower(strings.TrimSpace(v))
	if b, err := hex.DecodeString(v); err != nil || len(b) != 32 {
		return "", fmt.Errorf("%w: %s %q is not 64 hex digits", files.ErrChecksum, where, trunc(v))
	}
	if sum != "" && sum != v {
		return "", fmt.Errorf("%w: %s %s disagrees with the digest declared elsewhere, %s", files.ErrChecksum, where, v, sum)
	}
	return v, nil
}

// fileURL is the path of a file's bytes.
func fileURL(name string) string { return files.HTTPPath + files.EscapePath(name) }

// readWhileProgress lets an upload outlive the server's ReadTimeout while
// its bytes keep coming: before each read of the body the read deadline
// moves ReadTimeout ahead, so a large file on a slow link is taken and a
// stalled one is still cut after ReadTimeout.
func (a *Adapter) readWhileProgress(c *gin.Context) {
	c.Request.Body = &progressBody{ReadCloser: c.Request.Body, rc: http.NewResponseController(c.Writer), d: a.cfg.ReadTimeout}
}

type progressBody struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (p *progressBody) Read(b []byte) (int, error) {
	_ = p.rc.SetReadDeadline(time.Now().Add(p.d))
	return p.ReadCloser.Read(b)
}
