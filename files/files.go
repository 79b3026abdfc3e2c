// Package files is the hub's one blob store. The bytes of each file live
// under Config.Dir, content addressed by their SHA-256
// (blobs/sha256/ab/abcdef…), so the same content uploaded under two names
// is kept once; the metadata (name, size, content type, digest, uploader,
// times) is in the hub's database (store.FileRecord). A file is named like
// a topic, and its Descriptor is published retained on files/{name}, so
// every protocol sees it as a retained value: MQTT subscribers, CoAP GET
// /ps/files/{name}, XMPP PubSub.
//
// An upload is written to a temporary file (tmp/) and hashed as it comes,
// synced, checked against its declared size and digest, and only then
// renamed into place and recorded: a file is never visible before it is
// complete and verified, and an interrupted upload leaves nothing.
//
// The store enforces the size limit of one file, the quota of each
// uploader (bytes of its files) and expiry. It does not check access:
// each protocol adapter asks adapters.Auth about topic files/{name}
// (publish right: upload and delete; read right: download and stat).
package files

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// Sentinel errors, matched with errors.Is; each adapter maps them to its
// protocol's codes.
var (
	// ErrNotFound: no such file (or slot token).
	ErrNotFound = errors.New("file not found")
	// ErrTooLarge: more bytes than declared, or than the size limit.
	ErrTooLarge = errors.New("file too large")
	// ErrQuota: the upload would take the uploader past its quota.
	ErrQuota = errors.New("file quota exceeded")
	// ErrChecksum: the content does not match its declared SHA-256 (or
	// the declared digest is malformed).
	ErrChecksum = errors.New("checksum mismatch")
	// ErrInvalidName: see ValidName.
	ErrInvalidName = errors.New("invalid file name")
	// ErrExpired: the file (or slot) has expired.
	ErrExpired = errors.New("file expired")
	// ErrIncomplete: the upload ended before its declared size.
	ErrIncomplete = errors.New("upload incomplete")
	// ErrInvalidContentType: not a MIME type.
	ErrInvalidContentType = errors.New("invalid content type")
	// ErrSlot: an upload that does not fit its XEP-0363 slot (another
	// size or content type, or the slot already in use).
	ErrSlot = errors.New("upload does not match its slot")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("file store closed")
)

// Defaults of Config.
const (
	DefaultMaxFileSize       = 64 << 20
	DefaultQuotaPerPrincipal = 256 << 20
	DefaultSweepInterval     = time.Minute
	DefaultSlotTTL           = 5 * time.Minute
	DefaultMaxSlots          = 256
	DefaultListLimit         = 100
	MaxListLimit             = 1000
)

// HTTP and CoAP paths of files; rest and coap serve them, and descriptors
// and slots name them.
const (
	// HTTPPath + escaped name: GET, HEAD, DELETE (bearer auth).
	HTTPPath = "/api/v1/files/"
	// SlotPath + token + "/" + file name: the PUT URL of an XEP-0363 slot;
	// the token is the credential.
	SlotPath = "/api/v1/slots/"
	// SharedPath + token + "/" + file name: the unauthenticated GET URL of
	// a file uploaded through a slot (or shared with Share); the
	// unguessable token is the credential, as XEP-0363 clients expect.
	SharedPath = "/api/v1/shared/"
	// CoAPPath + name: block-wise GET and PUT.
	CoAPPath = "/files/"
)

// Descriptor is what is published retained on files/{name}.
type Descriptor struct {
	Name        string    `json:"name"` // file name = topic suffix, may contain '/'
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	SHA256      string    `json:"sha256"`    // hex
	URL         string    `json:"url"`       // http(s)://host:port/api/v1/files/{name}
	CoAPPath    string    `json:"coap_path"` // /files/{name}
	Uploader    string    `json:"uploader"`
	Time        time.Time `json:"time"`
	Expires     time.Time `json:"expires,omitzero"`
}

// ETag is the descriptor's entity tag for HTTP and CoAP: its quoted
// SHA-256, so a download carries the digest end to end.
func (d Descriptor) ETag() string { return `"` + d.SHA256 + `"` }

// Config configures a Store.
type Config struct {
	// Dir holds blobs/ and tmp/ (required; the hub uses {data-dir}/files).
	Dir string
	// DB keeps the metadata (required).
	DB *store.Store
	// Bus is where descriptors are published retained (required).
	Bus broker.Bus
	// MaxFileSize bounds one file in bytes (0: DefaultMaxFileSize; < 0:
	// no bound).
	MaxFileSize int64
	// QuotaPerPrincipal bounds the bytes of one uploader's files (0:
	// DefaultQuotaPerPrincipal; < 0: no quota). Anonymous uploads share
	// the quota of the empty principal.
	QuotaPerPrincipal int64
	// DefaultTTL is how long a file lives when PutOptions.TTL is 0 (0:
	// forever).
	DefaultTTL time.Duration
	// SweepInterval is how often expired files and slots are removed (0:
	// DefaultSweepInterval; < 0: never, call Sweep).
	SweepInterval time.Duration
	// SlotTTL is how long an XEP-0363 slot may wait for its PUT (0:
	// DefaultSlotTTL); MaxSlots bounds the slots waiting (0:
	// DefaultMaxSlots).
	SlotTTL  time.Duration
	MaxSlots int
	// BaseURL returns the HTTP listener's base URL
	// ("http://127.0.0.1:8080") for descriptors and slots; nil or "":
	// URLs are paths only.
	BaseURL func() string
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
}

// Store is the blob store. It is safe for concurrent use.
type Store struct {
	cfg    Config
	log    *slog.Logger
	blobs  string
	tmp    string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu orders blob placement and collection with the metadata writes
	// that refer to blobs, so a blob is never removed while a file being
	// committed refers to it.
	mu sync.Mutex

	slotMu sync.Mutex
	slots  map[string]*slot

	closeOnce sync.Once
	closed    chan struct{}
}

// Open opens the store in cfg.Dir, creating it when needed, removes what
// interrupted uploads and commits left there (temporary files, blobs no
// file refers to), and starts the expiry sweep, which runs until ctx ends
// or Close.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	switch {
	case cfg.Dir == "":
		return nil, errors.New("files: open: dir: empty")
	case cfg.DB == nil:
		return nil, errors.New("files: open: db: nil")
	case cfg.Bus == nil:
		return nil, errors.New("files: open: bus: nil")
	}
	if cfg.MaxFileSize == 0 {
		cfg.MaxFileSize = DefaultMaxFileSize
	}
	if cfg.QuotaPerPrincipal == 0 {
		cfg.QuotaPerPrincipal = DefaultQuotaPerPrincipal
	}
	if cfg.DefaultTTL < 0 {
		return nil, fmt.Errorf("files: open: default ttl %v: must not be negative", cfg.DefaultTTL)
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.SlotTTL <= 0 {
		cfg.SlotTTL = DefaultSlotTTL
	}
	if cfg.MaxSlots <= 0 {
		cfg.MaxSlots = DefaultMaxSlots
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "files"),
		blobs:  filepath.Join(cfg.Dir, "blobs", "sha256"),
		tmp:    filepath.Join(cfg.Dir, "tmp"),
		slots:  map[string]*slot{},
		closed: make(chan struct{}),
	}
	// What tmp/ holds at start is from uploads a crash interrupted.
	if err := os.RemoveAll(s.tmp); err != nil {
		return nil, fmt.Errorf("files: open: clear %s: %w", s.tmp, err)
	}
	for _, d := range []string{s.blobs, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("files: open: %w", err)
		}
	}
	if err := s.sweepOrphanBlobs(ctx); err != nil {
		// Not fatal: an orphan costs disk, never a wrong download.
		s.log.Warn("files: sweep blobs no file refers to", "err", err)
	}
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if cfg.SweepInterval > 0 {
		s.wg.Add(1)
		go s.sweeper(ctx, cfg.SweepInterval)
	}
	return s, nil
}

// Close stops the sweep and waits for it; uploads in progress fail.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// MaxFileSize is the size limit of one file (< 0: none).
func (s *Store) MaxFileSize() int64 { return s.cfg.MaxFileSize }

// Usage returns the bytes uploader's files take and its quota (< 0:
// none).
func (s *Store) Usage(ctx context.Context, uploader string) (used, quota int64, err error) {
	used, err = s.cfg.DB.FileUsage(ctx, uploader)
	if err != nil {
		return 0, 0, fmt.Errorf("files: usage of %q: %w", uploader, err)
	}
	return used, s.cfg.QuotaPerPrincipal, nil
}

func (s *Store) baseURL() string {
	if s.cfg.BaseURL == nil {
		return ""
	}
	return s.cfg.BaseURL()
}

// blobPath is where the content with digest sum (hex) is kept.
func (s *Store) blobPath(sum string) string {
	return filepath.Join(s.blobs, sum[:2], sum)
}

func (s *Store) descriptor(r store.FileRecord) Descriptor {
	d := Descriptor{
		Name:        r.Name,
		Size:        r.Size,
		ContentType: r.ContentType,
		SHA256:      r.SHA256,
		URL:         s.baseURL() + HTTPPath + EscapePath(r.Name),
		CoAPPath:    CoAPPath + r.Name,
		Uploader:    r.Uploader,
		Time:        r.Created.UTC(),
	}
	if !r.Expires.IsZero() {
		d.Expires = r.Expires.UTC()
	}
	return d
}

func expired(r store.FileRecord, now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// record returns the live record of name: ErrNotFound, or ErrExpired for
// one past its expiry that the sweep has not removed yet.
func (s *Store) record(ctx context.Context, name string) (store.FileRecord, error) {
	if err := ValidName(name); err != nil {
		return store.FileRecord{}, err
	}
	r, err := s.cfg.DB.File(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.FileRecord{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return store.FileRecord{}, err
	}
	if expired(r, time.Now()) {
		return store.FileRecord{}, fmt.Errorf("%w: %q expired at %s", ErrExpired, name, r.Expires.UTC().Format(time.RFC3339))
	}
	return r, nil
}
