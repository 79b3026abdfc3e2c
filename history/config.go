package history

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// Config is the history's configuration: the `history:` section of the
// YAML file. Zero limits mean no bound of that kind; Defaults are kind to
// a Raspberry Pi's SD card.
type Config struct {
	// Enabled records the readings of every topic that no rule turns off.
	Enabled bool `yaml:"enabled"`
	// MaxPoints bounds the points of each series (a topic's field).
	MaxPoints int `yaml:"max_points"`
	// MaxAge drops points and archived messages older than that.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes bounds the whole history's estimated size on disk; past
	// it the oldest points and archived messages of all topics go first.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// MaxArchive bounds the archived messages (for XEP-0313) per topic.
	MaxArchive int `yaml:"max_archive"`
	// MaxPayload is the largest payload archived; larger readings keep
	// their points only.
	MaxPayload ByteSize `yaml:"max_payload"`
	// BatchSize and FlushInterval say when points are written: a batch is
	// one transaction, of BatchSize points or what FlushInterval gathered.
	BatchSize     int           `yaml:"batch_size"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	// PruneInterval is how often the age and size bounds are applied to
	// every topic (count bounds apply as points come).
	PruneInterval time.Duration `yaml:"prune_interval"`
	// Rules set other limits (or turn history off) for the topics of a
	// filter; the first rule whose filter matches a topic applies, and its
	// zero fields take the values above.
	Rules []Rule `yaml:"rules"`
}

// Rule is the history's configuration for the topics of one filter.
type Rule struct {
	// Filter is an MQTT topic filter.
	Filter string `yaml:"filter"`
	// Enabled, when set, turns history on or off for these topics.
	Enabled    *bool         `yaml:"enabled"`
	MaxPoints  int           `yaml:"max_points"`
	MaxAge     time.Duration `yaml:"max_age"`
	MaxArchive int           `yaml:"max_archive"`
}

// Defaults: 10 000 points a series (a reading a minute for a week), 30
// days, 256 MiB in all, 1 000 archived messages a topic of at most 4 KiB,
// written every 5 000 points or every 5 seconds. SQLite writes every page
// a transaction touches, about one per series, so fewer, larger batches
// spare an SD card: a reading costs about 1.4 KB of writes in batches of
// 500 and 0.35 KB in batches of 5 000 (BenchmarkRecordReading).
func Defaults() Config {
	return Config{
		Enabled:       true,
		MaxPoints:     10000,
		MaxAge:        30 * 24 * time.Hour,
		MaxBytes:      256 << 20,
		MaxArchive:    1000,
		MaxPayload:    4 << 10,
		BatchSize:     5000,
		FlushInterval: 5 * time.Second,
		PruneInterval: time.Minute,
	}
}

// maxBatch bounds BatchSize: one transaction stays short.
const maxBatch = 100000

// Validate checks c, naming the field at fault ("history.max_points ...").
func (c *Config) Validate() error {
	for name, v := range map[string]int64{
		"history.max_points": int64(c.MaxPoints), "history.max_bytes": int64(c.MaxBytes),
		"history.max_archive": int64(c.MaxArchive), "history.max_payload": int64(c.MaxPayload),
		"history.max_age": int64(c.MaxAge),
	} {
		if v < 0 {
			return fmt.Errorf("%s %d: must not be negative (0: no bound)", name, v)
		}
	}
	if c.BatchSize < 0 || c.BatchSize > maxBatch {
		return fmt.Errorf("history.batch_size %d: want 1..%d (0: the default, %d)", c.BatchSize, maxBatch, Defaults().BatchSize)
	}
	if c.FlushInterval < 0 || c.PruneInterval < 0 {
		return fmt.Errorf("history.flush_interval %v, history.prune_interval %v: must not be negative (0: the default)", c.FlushInterval, c.PruneInterval)
	}
	for i, r := range c.Rules {
		where := fmt.Sprintf("history.rules[%d] (filter %q)", i, r.Filter)
		if err := broker.ValidateFilter(r.Filter); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if strings.HasPrefix(r.Filter, "$") {
			return fmt.Errorf("%s: $ topics are the hub's own and have no history", where)
		}
		if r.MaxPoints < 0 || r.MaxAge < 0 || r.MaxArchive < 0 {
			return fmt.Errorf("%s: max_points, max_age and max_archive must not be negative", where)
		}
	}
	return nil
}

// withDefaults fills the zero batching fields.
func (c Config) withDefaults() Config {
	d := Defaults()
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = d.FlushInterval
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = d.PruneInterval
	}
	return c
}

// policy is what applies to one topic.
type policy struct {
	enabled bool
	limits  store.HistoryLimits
}

// policyFor returns the first matching rule's settings for topic, or the
// defaults of c. $ topics never have history.
func (c *Config) policyFor(topic string) policy {
	p := policy{enabled: c.Enabled, limits: store.HistoryLimits{MaxPoints: c.MaxPoints, MaxAge: c.MaxAge, MaxArchive: c.MaxArchive}}
	if strings.HasPrefix(topic, "$") {
		p.enabled = false
		return p
	}
	for _, r := range c.Rules {
		if !broker.Match(r.Filter, topic) {
			continue
		}
		if r.Enabled != nil {
			p.enabled = *r.Enabled
		}
		if r.MaxPoints > 0 {
			p.limits.MaxPoints = r.MaxPoints
		}
		if r.MaxAge > 0 {
			p.limits.MaxAge = r.MaxAge
		}
		if r.MaxArchive > 0 {
			p.limits.MaxArchive = r.MaxArchive
		}
		break
	}
	return p
}

// anyEnabled reports whether some topic can have history.
func (c *Config) anyEnabled() bool {
	if c.Enabled {
		return true
	}
	for _, r := range c.Rules {
		if r.Enabled != nil && *r.Enabled {
			return true
		}
	}
	return false
}

// ByteSize is a size in bytes, written in YAML as a number or with a unit:
// 256MiB, 1GiB, 500KB, 4096.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseByteSize parses a size as ByteSize's YAML form.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || (n > 0 && mult > (1<<63-1)/n) {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with KiB, MiB, GiB, KB, MB or GB", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a number or a string like 256MiB", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// String formats the size in the largest binary unit that divides it.
func (b ByteSize) String() string {
	for i := 3; i >= 0; i-- {
		u := byteUnits[i]
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
