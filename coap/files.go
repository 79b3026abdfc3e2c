package coap

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/files"
)

// FilesRoot is the first URI-Path segment of the file resources: file
// a/b.bin is /files/a/b.bin, one segment per name level.
const FilesRoot = "files"

// Defaults of the file uploads in progress (Config.MaxFileUploads,
// Config.FileUploadTimeout).
const (
	DefaultMaxFileUploads    = 16
	DefaultFileUploadTimeout = 2 * time.Minute
)

// optFileBlock1 carries a /files request's Block1 option past go-coap's
// block-wise layer (which would buffer the whole body in memory and lose
// it after its own timeout) to the handler, which streams each block into
// the file store and lets a client resume at any block. 65000 is in the
// experimental range and elective (even), so it never leaves the hub.
const optFileBlock1 message.OptionID = 65000

// Errors of block-wise uploads.
var (
	// errIncomplete: a block other than the next one, or none in
	// progress (4.08 Request Entity Incomplete).
	errIncomplete = errors.New("request entity incomplete")
	// errBusy: too many uploads in progress (5.03).
	errBusy = errors.New("too many file uploads in progress")
	// errNoFiles: the adapter has no file store (4.04).
	errNoFiles = errors.New("the file store is not enabled")
)

// fileErrorCodes are the file store's errors in CoAP terms; a quota is
// 4.03 (the request is refused, not malformed), a bad digest 4.00.
var fileErrorCodes = []struct {
	err  error
	code codes.Code
}{
	{files.ErrInvalidName, codes.BadRequest},
	{files.ErrInvalidContentType, codes.BadRequest},
	{files.ErrChecksum, codes.BadRequest},
	{files.ErrSlot, codes.BadRequest},
	{files.ErrIncomplete, codes.RequestEntityIncomplete},
	{errIncomplete, codes.RequestEntityIncomplete},
	{files.ErrTooLarge, codes.RequestEntityTooLarge},
	{files.ErrQuota, codes.Forbidden},
	{files.ErrNotFound, codes.NotFound},
	{files.ErrExpired, codes.NotFound},
	{errNoFiles, codes.NotFound},
	{files.ErrClosed, codes.ServiceUnavailable},
	{errBusy, codes.ServiceUnavailable},
}

// fileUpload is one block-wise PUT in progress.
type fileUpload struct {
	mu   sync.Mutex
	u    *files.Upload
	seen time.Time
	// done is the result once committed, for a repeated last block.
	done    *files.Descriptor
	created bool
}

// fileUploads are the block-wise PUTs in progress, by uploadKey.
type fileUploads struct {
	mu sync.Mutex
	m  map[string]*fileUpload
}

// uploadKey names an upload: the principal, the client's identity (its
// c= client id, device id, or else its address) and the file, so a client
// that names itself resumes the same upload from another port.
func uploadKey(req *request, name string) string {
	return req.principal.Name + "\x00" + req.clientID + "\x00" + name
}

// isFilesRequest reports whether r is for /files/...
func isFilesRequest(r *pool.Message) bool {
	for _, o := range r.Options() {
		if o.ID == message.URIPath {
			return string(o.Value) == FilesRoot
		}
	}
	return false
}

// stashBlock1 moves the Block1 option of a /files request to
// optFileBlock1 (see there); an optFileBlock1 a client sent is dropped
// first. It reports whether r is a /files request, which MaxPayload does
// not bound (the file store's limits do).
func (a *Adapter) stashBlock1(r *pool.Message) bool {
	r.Remove(optFileBlock1)
	if a.cfg.Files == nil || !isFilesRequest(r) {
		return false
	}
	if v, err := r.GetOptionUint32(message.Block1); err == nil {
		r.Remove(message.Block1)
		r.SetOptionUint32(optFileBlock1, v)
	}
	return true
}

// serveFiles serves /files/{name}: block-wise GET (Block2, Size2, ETag)
// and PUT (Block1, Size1), and DELETE. Access is that of topic
// files/{name}: read for GET, publish for PUT and DELETE.
func (a *Adapter) serveFiles(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request) codes.Code {
	if a.cfg.Files == nil {
		return a.failFile(w, fmt.Errorf("%w: /%s", errNoFiles, FilesRoot))
	}
	name := strings.Join(req.path[1:], "/")
	if err := files.ValidName(name); err != nil {
		return a.failFile(w, err)
	}
	switch req.msg.Code() {
	case codes.GET:
		return a.getFile(w, req, name)
	case codes.PUT:
		return a.putFile(w, req, name)
	case codes.DELETE:
		if err := a.authorize(req, adapters.ActionUpload, files.Topic(name)); err != nil {
			return a.failFile(w, err)
		}
		ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
		defer cancel()
		if err := a.cfg.Files.Delete(ctx, name); err != nil {
			return a.failFile(w, err)
		}
		return a.respond(w, codes.Deleted, nil, nil)
	}
	return a.failFile(w, fmt.Errorf("%w: %v on /%s (use GET, PUT or DELETE)", errMethod, req.msg.Code(), FilesRoot))
}

// etag is a descriptor's CoAP ETag: the first 8 bytes of its SHA-256 (an
// ETag option holds at most 8).
func etag(d files.Descriptor) []byte {
	b, err := hex.DecodeString(d.SHA256)
	if err != nil || len(b) < 8 {
		return []byte{0}
	}
	return b[:8]
}

// getFile answers with the file's bytes; go-coap's block-wise layer cuts
// them into the block the request asks for (any block, so a client may
// resume anywhere) and sets Size2. A request whose ETag matches gets 2.03.
func (a *Adapter) getFile(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request, name string) codes.Code {
	if err := a.canRead(req.principal, files.Topic(name)); err != nil {
		return a.failFile(w, err)
	}
	ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
	defer cancel()
	d, rd, err := a.cfg.Files.Reader(ctx, name)
	if err != nil {
		return a.failFile(w, err)
	}
	tag := etag(d)
	for _, o := range req.msg.Options() {
		if o.ID == message.ETag && bytes.Equal(o.Value, tag) {
			if err := w.SetResponse(codes.Valid, message.TextPlain, nil, message.Option{ID: message.ETag, Value: tag}); err == nil {
				w.Message().Remove(message.ContentFormat)
			}
			return codes.Valid
		}
	}
	cf, ok := ContentFormat(d.ContentType)
	if !ok {
		cf = uint16(message.AppOctets)
	}
	if err := w.SetResponse(codes.Content, message.MediaType(cf), rd, message.Option{ID: message.ETag, Value: tag}); err != nil {
		return codes.Content // suppressed by a No-Response option
	}
	w.Message().SetOptionUint32(message.Size2, uint32(min(d.Size, 1<<32-1)))
	return codes.Content
}

// putFile takes one request of a PUT to /files/{name}: the whole file, or
// one block of it (RFC 7959 Block1). Blocks are written to the file
// store's temporary upload as they come; the last one commits it (size,
// digest from ?sha256=, then the descriptor on files/{name}). Block 0
// (re)starts the upload; a repeated block is acknowledged again; any other
// block than the next gets 4.08. Nothing is visible before the commit, and
// an upload left idle for FileUploadTimeout is discarded.
func (a *Adapter) putFile(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request, name string) codes.Code {
	r := req.msg
	v, err := r.GetOptionUint32(optFileBlock1)
	block := err == nil
	szx, num, more := blockwise.SZX1024, int64(0), false
	if block {
		if szx, num, more, err = blockwise.DecodeBlockOption(v); err != nil || szx > blockwise.SZX1024 {
			return a.failFile(w, fmt.Errorf("%w: Block1 option %d", errBadQuery, v))
		}
	}
	payload, err := r.ReadBody()
	if err != nil {
		return a.failFile(w, fmt.Errorf("read body: %w", err))
	}
	if more && len(payload) != int(szx.Size()) {
		return a.failFile(w, fmt.Errorf("%w: block %d has %d bytes, its size is %d", errBadQuery, num, len(payload), szx.Size()))
	}
	key := uploadKey(req, name)
	off := num * szx.Size()

	var fu *fileUpload
	if num == 0 {
		if fu, err = a.beginFileUpload(req, name, key); err != nil {
			return a.failFile(w, err)
		}
	} else {
		a.up.mu.Lock()
		fu = a.up.m[key]
		a.up.mu.Unlock()
		if fu == nil {
			return a.failFile(w, fmt.Errorf("%w: block %d of %s, but no upload is in progress: start again at block 0", errIncomplete, num, name))
		}
	}
	fu.mu.Lock()
	defer fu.mu.Unlock()
	fu.seen = time.Now()
	if fu.done != nil {
		// The last block again (its response was lost).
		if !more && off+int64(len(payload)) == fu.done.Size {
			return a.fileCreated(w, *fu.done, fu.created, block, v)
		}
		return a.failFile(w, fmt.Errorf("%w: %s is complete already: start again at block 0", errIncomplete, name))
	}
	written := fu.u.Written()
	switch {
	case off > written, off < written && off+int64(len(payload)) > written:
		return a.failFile(w, fmt.Errorf("%w: block %d starts at byte %d, the next byte is %d", errIncomplete, num, off, written))
	case off < written:
		// A block repeated (its response was lost): acknowledged again.
	default:
		if _, err := fu.u.Write(payload); err != nil {
			a.dropFileUpload(key, fu)
			return a.failFile(w, err)
		}
	}
	if more {
		if err := w.SetResponse(codes.Continue, message.TextPlain, nil, message.Option{ID: message.Block1, Value: blockValue(v)}); err == nil {
			w.Message().Remove(message.ContentFormat)
		}
		return codes.Continue
	}
	ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
	defer cancel()
	_, statErr := a.cfg.Files.Stat(ctx, name)
	d, err := fu.u.Commit(ctx)
	if err != nil {
		a.dropFileUpload(key, fu)
		return a.failFile(w, err)
	}
	a.metrics.published.Inc()
	fu.done, fu.created = &d, statErr != nil
	return a.fileCreated(w, d, fu.created, block, v)
}

// blockValue re-encodes a received Block1 value for the response.
func blockValue(v uint32) []byte {
	b := make([]byte, 4)
	n, _ := message.EncodeUint32(b, v)
	return b[:n]
}

// fileCreated answers a completed upload: 2.01 for a new file, 2.04 for
// a replaced one, with its ETag and the last Block1 echoed.
func (a *Adapter) fileCreated(w *responsewriter.ResponseWriter[*udpClient.Conn], d files.Descriptor, created, block bool, v uint32) codes.Code {
	code := codes.Changed
	if created {
		code = codes.Created
	}
	opts := message.Options{{ID: message.ETag, Value: etag(d)}}
	if block {
		opts = append(opts, message.Option{ID: message.Block1, Value: blockValue(v)})
	}
	if err := w.SetResponse(code, message.TextPlain, nil, opts...); err == nil {
		w.Message().Remove(message.ContentFormat)
	}
	return code
}

// beginFileUpload checks the publish right and starts (or restarts) the
// upload of key, within MaxFileUploads.
func (a *Adapter) beginFileUpload(req *request, name, key string) (*fileUpload, error) {
	if err := a.authorize(req, adapters.ActionUpload, files.Topic(name)); err != nil {
		return nil, err
	}
	ct, err := contentType(req.msg)
	if err != nil {
		return nil, err
	}
	o := files.PutOptions{ContentType: ct, SHA256: req.query["sha256"], Size: -1, Uploader: req.principal.Name}
	if v, err := req.msg.GetOptionUint32(message.Size1); err == nil {
		o.Size = int64(v)
	} else if !req.msg.HasOption(optFileBlock1) {
		n, _ := req.msg.BodySize()
		o.Size = n
	}
	if s, ok := req.query["ttl"]; ok {
		ttl, err := time.ParseDuration(s)
		if err != nil || ttl <= 0 {
			return nil, fmt.Errorf("%w: ttl=%q: must be a positive duration such as 24h", errBadQuery, s)
		}
		o.TTL = ttl
	}
	a.up.mu.Lock()
	old := a.up.m[key]
	if old == nil && len(a.up.m) >= a.cfg.MaxFileUploads {
		a.expireFileUploadsLocked(time.Now())
		if n := len(a.up.m); n >= a.cfg.MaxFileUploads {
			a.up.mu.Unlock()
			return nil, fmt.Errorf("%w: %d, the limit; try again later", errBusy, n)
		}
	}
	delete(a.up.m, key)
	a.up.mu.Unlock()
	if old != nil {
		old.mu.Lock()
		if old.done == nil {
			old.u.Abort()
		}
		old.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
	defer cancel()
	u, err := a.cfg.Files.Begin(ctx, name, o)
	if err != nil {
		return nil, err
	}
	fu := &fileUpload{u: u, seen: time.Now()}
	a.up.mu.Lock()
	if a.up.m == nil {
		a.up.m = make(map[string]*fileUpload)
	}
	if prev := a.up.m[key]; prev != nil {
		// Another block 0 of the same upload raced this one: it wins.
		a.up.mu.Unlock()
		u.Abort()
		return prev, nil
	}
	a.up.m[key] = fu
	a.up.mu.Unlock()
	return fu, nil
}

// dropFileUpload forgets a failed upload (its temporary file is gone).
func (a *Adapter) dropFileUpload(key string, fu *fileUpload) {
	a.up.mu.Lock()
	if a.up.m[key] == fu {
		delete(a.up.m, key)
	}
	a.up.mu.Unlock()
}

// expireFileUploadsLocked discards uploads idle for FileUploadTimeout and
// forgets completed ones as long after. Called with a.up.mu held.
func (a *Adapter) expireFileUploadsLocked(now time.Time) {
	for k, fu := range a.up.m {
		if !fu.mu.TryLock() {
			continue // a block is being handled: not idle
		}
		if now.Sub(fu.seen) >= a.cfg.FileUploadTimeout {
			if fu.done == nil {
				fu.u.Abort()
				a.log.Info("coap: discarded an idle file upload", "name", fu.u.Name(), "received", fu.u.Written())
			}
			delete(a.up.m, k)
		}
		fu.mu.Unlock()
	}
}

// sweepFileUploads runs expireFileUploadsLocked until the adapter stops,
// and then discards what is left.
func (a *Adapter) sweepFileUploads() {
	defer a.wg.Done()
	t := time.NewTicker(min(a.cfg.FileUploadTimeout/4, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			a.up.mu.Lock()
			a.expireFileUploadsLocked(now)
			a.up.mu.Unlock()
		case <-a.ctx.Done():
			a.up.mu.Lock()
			for k, fu := range a.up.m {
				fu.mu.Lock()
				if fu.done == nil {
					fu.u.Abort()
				}
				fu.mu.Unlock()
				delete(a.up.m, k)
			}
			a.up.mu.Unlock()
			return
		}
	}
}

// FileUploads returns how many block-wise file uploads are in progress
// (or completed and remembered for a repeated last block).
func (a *Adapter) FileUploads() int {
	a.up.mu.Lock()
	defer a.up.mu.Unlock()
	return len(a.up.m)
}

// failFile is fail with the file store's codes; a 4.13 carries the file
// size limit in Size1.
func (a *Adapter) failFile(w *responsewriter.ResponseWriter[*udpClient.Conn], err error) codes.Code {
	for _, e := range fileErrorCodes {
		if errors.Is(err, e.err) {
			if e.code >= codes.InternalServerError && e.code != codes.ServiceUnavailable {
				a.log.Warn("coap: file request failed", "err", err)
			}
			a.respondRaw(w, e.code, message.TextPlain, []byte(err.Error()))
			if e.code == codes.RequestEntityTooLarge && w.Message().Code() == e.code {
				if max := a.cfg.Files.MaxFileSize(); max >= 0 {
					w.Message().SetOptionUint32(message.Size1, uint32(min(max, 1<<32-1)))
				}
			}
			return e.code
		}
	}
	return a.fail(w, err)
}
