package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// PutOptions describe an upload.
type PutOptions struct {
	// ContentType is the file's MIME type; "" guesses it from the name's
	// extension, then from the first bytes.
	ContentType string
	// SHA256 is the declared hex digest; a mismatch refuses the upload
	// (ErrChecksum).
	SHA256 string
	// Size is the declared size, -1 unknown (0 is an empty file); more
	// bytes than declared or than the limit: ErrTooLarge; fewer:
	// ErrIncomplete.
	Size int64
	// Uploader is the principal, for quotas and the descriptor.
	Uploader string
	// TTL is how long the file lives: 0 the store's default expiry, < 0
	// forever.
	TTL time.Duration
}

// sniffLen is how many first bytes content sniffing looks at.
const sniffLen = 512

// Upload is one file being received, block by block (CoAP Block1, XMPP
// IBB) or from a reader (Put). Nothing of it is visible until Commit
// succeeds; Abort, or Commit failing, removes what was written. An Upload
// is safe for concurrent use, though its writes must come in order.
type Upload struct {
	s     *Store
	name  string
	o     PutOptions
	share string

	mu    sync.Mutex
	f     *os.File
	h     hash.Hash
	n     int64
	limit int64 // < 0: none
	quota int64 // bytes left in the uploader's quota; < 0: none
	head  []byte
	err   error // sticky: the first write error
	done  bool
}

// Begin starts an upload of name: it checks the name, the declared size
// against the limit and the quota, and creates the temporary file.
func (s *Store) Begin(ctx context.Context, name string, o PutOptions) (*Upload, error) {
	u, err := s.begin(ctx, name, o, "")
	if err != nil {
		return nil, fmt.Errorf("files: put %s: %w", trunc(name), err)
	}
	return u, nil
}

func (s *Store) begin(ctx context.Context, name string, o PutOptions, share string) (*Upload, error) {
	select {
	case <-s.closed:
		return nil, ErrClosed
	default:
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if o.ContentType != "" {
		if _, _, err := mime.ParseMediaType(o.ContentType); err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrInvalidContentType, o.ContentType, err)
		}
	}
	if o.SHA256 != "" {
		o.SHA256 = strings.ToLower(o.SHA256)
		if b, err := hex.DecodeString(o.SHA256); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%w: declared sha256 %q is not 64 hex digits", ErrChecksum, trunc(o.SHA256))
		}
	}
	if o.Size < -1 {
		o.Size = -1
	}
	limit := s.cfg.MaxFileSize
	if o.Size >= 0 && limit >= 0 && o.Size > limit {
		return nil, fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrTooLarge, o.Size, limit)
	}
	if o.Size >= 0 && (limit < 0 || o.Size < limit) {
		limit = o.Size
	}
	quota := int64(-1)
	if q := s.cfg.QuotaPerPrincipal; q >= 0 {
		used, err := s.cfg.DB.FileUsage(ctx, o.Uploader)
		if err != nil {
			return nil, err
		}
		if old, err := s.cfg.DB.File(ctx, name); err == nil && old.Uploader == o.Uploader {
			used -= old.Size // a replacement frees what it replaces
		}
		quota = max(q-used, 0)
		if o.Size >= 0 && o.Size > quota {
			return nil, quotaErr(o.Uploader, used, o.Size, q)
		}
	}
	f, err := os.CreateTemp(s.tmp, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return &Upload{s: s, name: name, o: o, share: share, f: f, h: sha256.New(), limit: limit, quota: quota}, nil
}

func quotaErr(uploader string, used, more, quota int64) error {
	who := uploader
	if who == "" {
		who = "anonymous"
	}
	return fmt.Errorf("%w: %s has %d of %d bytes in use, %d more do not fit", ErrQuota, who, used, quota, more)
}

// Name is the name the upload will have.
func (u *Upload) Name() string { return u.name }

// Written returns how many bytes were written so far.
func (u *Upload) Written() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

// Write appends p; past the size limit or the declared size it fails with
// ErrTooLarge, past the quota with ErrQuota, and the upload is then
// spoiled (Commit fails too).
func (u *Upload) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.err != nil:
		return 0, u.err
	case u.done:
		return 0, fmt.Errorf("files: put %s: write after commit or abort", trunc(u.name))
	}
	next := u.n + int64(len(p))
	if u.limit >= 0 && next > u.limit {
		if u.o.Size >= 0 && u.o.Size == u.limit {
			u.err = fmt.Errorf("files: put %s: %w: more than the %d bytes declared", trunc(u.name), ErrTooLarge, u.o.Size)
		} else {
			u.err = fmt.Errorf("files: put %s: %w: more than the limit of %d bytes", trunc(u.name), ErrTooLarge, u.limit)
		}
		return 0, u.err
	}
	if u.quota >= 0 && next > u.quota {
		u.err = fmt.Errorf("files: put %s: %w", trunc(u.name), quotaErr(u.o.Uploader, u.s.cfg.QuotaPerPrincipal-u.quota, next, u.s.cfg.QuotaPerPrincipal))
		return 0, u.err
	}
	if len(u.head) < sniffLen {
		u.head = append(u.head, p[:min(len(p), sniffLen-len(u.head))]...)
	}
	n, err := u.f.Write(p)
	u.h.Write(p[:n])
	u.n += int64(n)
	if err != nil {
		u.err = fmt.Errorf("files: put %s: write temporary file: %w", trunc(u.name), err)
		return n, u.err
	}
	return n, nil
}

// Abort discards the upload; after Commit it does nothing.
func (u *Upload) Abort() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return
	}
	u.done = true
	u.discard()
}

func (u *Upload) discard() {
	name := u.f.Name()
	_ = u.f.Close()
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		u.s.log.Warn("files: remove temporary file", "path", name, "err", err)
	}
}

// Commit verifies the upload (size, digest), moves its bytes into place,
// records it and publishes its descriptor retained on files/{name}. On any
// error nothing of the upload is left.
func (u *Upload) Commit(ctx context.Context) (Descriptor, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return Descriptor{}, fmt.Errorf("files: put %s: commit after commit or abort", trunc(u.name))
	}
	u.done = true
	d, err := u.commit(ctx)
	if err != nil {
		return Descriptor{}, fmt.Errorf("files: put %s: %w", trunc(u.name), err)
	}
	return d, nil
}

func (u *Upload) commit(ctx context.Context) (Descriptor, error) {
	s := u.s
	if u.err != nil {
		u.discard()
		return Descriptor{}, u.err
	}
	if u.o.Size >= 0 && u.n < u.o.Size {
		u.discard()
		return Descriptor{}, fmt.Errorf("%w: %d of %d bytes", ErrIncomplete, u.n, u.o.Size)
	}
	sum := hex.EncodeToString(u.h.Sum(nil))
	if u.o.SHA256 != "" && sum != u.o.SHA256 {
		u.discard()
		return Descriptor{}, fmt.Errorf("%w: declared sha256 %s, received %s", ErrChecksum, u.o.SHA256, sum)
	}
	if err := u.f.Sync(); err != nil {
		u.discard()
		return Descriptor{}, fmt.Errorf("sync temporary file: %w", err)
	}
	tmp := u.f.Name()
	if err := u.f.Close(); err != nil {
		u.discard()
		return Descriptor{}, fmt.Errorf("close temporary file: %w", err)
	}
	ct := u.o.ContentType
	if ct == "" {
		ct = mime.TypeByExtension(path.Ext(u.name))
	}
	if ct == "" {
		ct = http.DetectContentType(u.head)
	}
	now := time.Now().UTC()
	ttl := u.o.TTL
	if ttl == 0 {
		ttl = s.cfg.DefaultTTL
	}
	rec := store.FileRecord{
		Name: u.name, Size: u.n, ContentType: ct, SHA256: sum,
		Uploader: u.o.Uploader, Share: u.share, Created: now,
	}
	if ttl > 0 {
		rec.Expires = now.Add(ttl)
	}

	s.mu.Lock()
	placed, err := s.place(tmp, sum)
	if err != nil {
		s.mu.Unlock()
		_ = os.Remove(tmp)
		return Descriptor{}, err
	}
	var check func(int64) error
	if q := s.cfg.QuotaPerPrincipal; q >= 0 {
		check = func(used int64) error {
			if used+u.n > q {
				return quotaErr(u.o.Uploader, used, u.n, q)
			}
			return nil
		}
	}
	old, replaced, err := s.cfg.DB.PutFile(ctx, rec, check)
	if err != nil {
		if placed {
			s.collect(context.WithoutCancel(ctx), sum)
		}
		s.mu.Unlock()
		return Descriptor{}, err
	}
	if replaced && old.SHA256 != sum {
		s.collect(context.WithoutCancel(ctx), old.SHA256)
	}
	// Published under s.mu, so the retained descriptors of two uploads
	// (or an upload and a delete) of one name come in the order of
	// their records: the last one retained is the file stored.
	d := s.descriptor(rec)
	if err := s.publish(ctx, d); err != nil {
		// The descriptor is the file's visibility: without it, undo.
		if _, derr := s.cfg.DB.DeleteFile(context.WithoutCancel(ctx), rec.Name, func(r store.FileRecord) bool {
			return r.SHA256 == rec.SHA256 && r.Created.Equal(rec.Created)
		}); derr == nil {
			s.collect(context.WithoutCancel(ctx), sum)
		}
		s.mu.Unlock()
		return Descriptor{}, fmt.Errorf("publish descriptor: %w", err)
	}
	s.mu.Unlock()
	s.log.Debug("files: stored", "name", d.Name, "size", d.Size, "sha256", d.SHA256, "uploader", d.Uploader, "dedup", !placed)
	return d, nil
}

// place moves the verified temporary file tmp to the blob of sum, or
// drops it when that content is stored already (placed false). Called
// with s.mu held.
func (s *Store) place(tmp, sum string) (placed bool, err error) {
	dst := s.blobPath(sum)
	if _, err := os.Stat(dst); err == nil {
		return false, os.Remove(tmp)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("place blob: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return false, fmt.Errorf("place blob: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return true, nil
}

// collect removes the blob of sum when no file refers to it any more.
// Called with s.mu held.
func (s *Store) collect(ctx context.Context, sum string) {
	n, err := s.cfg.DB.FileBlobRefs(ctx, sum)
	if err != nil {
		s.log.Warn("files: count references to a blob", "sha256", sum, "err", err)
		return
	}
	if n > 0 {
		return
	}
	if err := os.Remove(s.blobPath(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("files: remove blob", "sha256", sum, "err", err)
	}
}

// publish retains d on its topic at QoS 1, so it survives a restart.
func (s *Store) publish(ctx context.Context, d Descriptor) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return s.cfg.Bus.Publish(ctx, &broker.Envelope{
		Topic:       Topic(d.Name),
		Payload:     b,
		ContentType: "application/json",
		QoS:         1,
		Retain:      true,
		Origin:      broker.Origin{Protocol: broker.ProtoHub, Principal: d.Uploader},
		Expiry:      d.Expires,
	})
}

// unpublish clears the retained descriptor of name.
func (s *Store) unpublish(ctx context.Context, name string) error {
	return s.cfg.Bus.Publish(ctx, &broker.Envelope{
		Topic:  Topic(name),
		QoS:    1,
		Retain: true,
		Origin: broker.Origin{Protocol: broker.ProtoHub},
	})
}

// Put stores r's bytes as name: a temporary file hashed while written,
// synced, verified against o, renamed into the content-addressed blobs
// (kept once however many names share the content), recorded, and its
// descriptor retained on files/{name}. Nothing is visible before it is
// complete and verified. A file of the same name is replaced.
func (s *Store) Put(ctx context.Context, name string, r io.Reader, o PutOptions) (Descriptor, error) {
	return s.put(ctx, name, r, o, "")
}

func (s *Store) put(ctx context.Context, name string, r io.Reader, o PutOptions, share string) (Descriptor, error) {
	u, err := s.begin(ctx, name, o, share)
	if err != nil {
		return Descriptor{}, fmt.Errorf("files: put %s: %w", trunc(name), err)
	}
	if _, err := io.Copy(u, ctxReader{ctx, r}); err != nil {
		u.mu.Lock()
		werr := u.err
		u.mu.Unlock()
		u.Abort()
		if werr != nil {
			return Descriptor{}, werr
		}
		return Descriptor{}, fmt.Errorf("files: put %s: read: %w", trunc(name), err)
	}
	return u.Commit(ctx)
}

// ctxReader stops a copy once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// token returns a fresh unguessable token (130 random bits).
func token() string { return rand.Text() }
