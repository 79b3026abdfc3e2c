package gateway

import (
	"context"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/xmpp"
)

// FilesConfig configures the file store (YAML files:).
type FilesConfig struct {
	// Dir holds the blobs ("": {data_dir}/files; off: no file store,
	// and the file routes answer 404).
	Dir string `yaml:"dir"`
	// MaxFileSize bounds one file (default 64MiB; -1: no bound).
	MaxFileSize ByteSize `yaml:"max_file_size"`
	// QuotaPerPrincipal bounds the bytes of one uploader's files (default
	// 256MiB; -1: none).
	QuotaPerPrincipal ByteSize `yaml:"quota_per_principal"`
	// DefaultTTL is how long a file lives unless its upload says (0:
	// forever).
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// BaseURL is the HTTP URL devices and chat users reach the hub at, for
	// descriptors and XEP-0363 slots ("http://gw.example:8080"); "": the
	// HTTP listener's address (with a wildcard host, this machine's first
	// non-loopback address).
	BaseURL string `yaml:"base_url"`
	// SlotTTL is how long an XEP-0363 slot waits for its PUT (default
	// 5m); MaxSlots bounds the slots waiting (default 256).
	SlotTTL  time.Duration `yaml:"slot_ttl"`
	MaxSlots int           `yaml:"max_slots"`
	// MaxCoAPUploads bounds the block-wise CoAP PUTs in progress (default
	// 16); one idle for CoAPUploadTimeout is discarded (default 2m).
	MaxCoAPUploads    int           `yaml:"max_coap_uploads"`
	CoAPUploadTimeout time.Duration `yaml:"coap_upload_timeout"`
}

// ByteSize is a size in bytes; YAML takes a number or a number with a
// unit: B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (powers of 1024).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

// ParseByteSize reads "64MiB", "1.5 GB", "4096" or "-1".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n != 0 && (n > (1<<63-1)/mult || n < -(1<<63-1)/mult) {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return ByteSize(n * mult), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || f > float64(1<<62)/float64(mult) || f < -float64(1<<62)/float64(mult) {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with a unit (KiB, MiB, GiB, KB, MB, GB)", s)
	}
	return ByteSize(f * float64(mult)), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a number or a string such as 64MiB", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: whole MiB and KiB keep their
// unit.
func (b ByteSize) MarshalYAML() (any, error) {
	switch {
	case b != 0 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b/(1<<20)), nil
	case b != 0 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b/(1<<10)), nil
	}
	return int64(b), nil
}

// defaultFiles are the file store's defaults.
func defaultFiles() FilesConfig {
	return FilesConfig{MaxFileSize: files.DefaultMaxFileSize, QuotaPerPrincipal: files.DefaultQuotaPerPrincipal}
}

// validate checks the file store's settings.
func (f *FilesConfig) validate() error {
	for name, d := range map[string]time.Duration{
		"files.default_ttl": f.DefaultTTL, "files.slot_ttl": f.SlotTTL, "files.coap_upload_timeout": f.CoAPUploadTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%s %v: must not be negative (0: the default)", name, d)
		}
	}
	for name, v := range map[string]ByteSize{"files.max_file_size": f.MaxFileSize, "files.quota_per_principal": f.QuotaPerPrincipal} {
		if v < -1 {
			return fmt.Errorf("%s %d: want a size, 0 for the default or -1 for none", name, v)
		}
	}
	if f.MaxSlots < 0 || f.MaxCoAPUploads < 0 {
		return fmt.Errorf("files.max_slots %d, files.max_coap_uploads %d: must not be negative (0: the default)", f.MaxSlots, f.MaxCoAPUploads)
	}
	if f.BaseURL != "" && !strings.HasPrefix(f.BaseURL, "http://") && !strings.HasPrefix(f.BaseURL, "https://") {
		return fmt.Errorf("files.base_url %q: want http://host:port or https://host:port", f.BaseURL)
	}
	return nil
}

// openFiles opens the file store unless files.dir is off; the HTTP
// listener's URL is asked for lazily, once it is bound.
func (h *Hub) openFiles() error {
	c := h.cfg.Files
	if c.Dir == Off {
		return nil
	}
	dir := c.Dir
	if dir == "" {
		dir = filepath.Join(h.cfg.DataDir, "files")
	}
	fs, err := files.Open(context.Background(), files.Config{
		Dir: dir, DB: h.Store, Bus: h.Bus,
		MaxFileSize: int64(c.MaxFileSize), QuotaPerPrincipal: int64(c.QuotaPerPrincipal), DefaultTTL: c.DefaultTTL,
		SlotTTL: c.SlotTTL, MaxSlots: c.MaxSlots, BaseURL: h.filesBaseURL,
		Logger: h.log.With("component", "files"),
	})
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	h.Files = fs
	return nil
}

// filesBaseURL is files.base_url, else the HTTPS listener's address, else
// the HTTP one's.
func (h *Hub) filesBaseURL() string {
	if u := h.cfg.Files.BaseURL; u != "" {
		return strings.TrimSuffix(u, "/")
	}
	// HTTPS first: XEP-0363 clients (Conversations) want https URLs.
	scheme, addr := "https", h.Addrs()["rest.https"]
	if addr == "" {
		scheme, addr = "http", h.Addrs()["rest.http"]
	}
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = outwardHost()
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// outwardHost is this machine's first non-loopback unicast address (IPv4
// first), for the URLs of a hub listening on a wildcard address; set
// files.base_url when it is not the one devices reach.
func outwardHost() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "127.0.0.1"
	}
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	if v6 != "" {
		return v6
	}
	return "127.0.0.1"
}

// xmppFiles is the file store as the XMPP adapter takes it (XEP-0363
// slots, XEP-0096 transfers, XEP-0066 links): nil, not a nil *files.Store,
// when the store is off.
func (h *Hub) xmppFiles() xmpp.FileStore {
	if h.Files == nil {
		return nil
	}
	return h.Files
}
