package gateway

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// LimitsConfig is the `limits:` section of the configuration. The storage
// quotas are inlined into it, so their keys read `limits.retained_per_user`
// and so on.
type LimitsConfig struct {
	adapters.LimitsConfig `yaml:",inline"`
	Storage               StorageLimits `yaml:",inline"`
}

// StorageLimits are the storage quotas and the disk-pressure threshold:
// what one user (or device) may keep on the hub, and what all of them may.
// Counts are values, sizes bytes (topic and payload); 0 takes the
// default, -1 means no bound.
type StorageLimits struct {
	// RetainedPerUser and RetainedBytesPerUser bound the retained values
	// one principal set (the publisher of a value owns it); RetainedTotal
	// and RetainedBytesTotal bound all of them, which the hub keeps in
	// memory. Defaults 1,000 values and 64 MiB per user, 100,000 values
	// and 256 MiB in all.
	RetainedPerUser      int   `yaml:"retained_per_user"`
	RetainedBytesPerUser int64 `yaml:"retained_bytes_per_user"`
	RetainedTotal        int   `yaml:"retained_total"`
	RetainedBytesTotal   int64 `yaml:"retained_bytes_total"`
	// RetainedColdAbove keeps the payloads of retained values larger than
	// this many bytes on disk only, read back from the store when a
	// subscriber or a read asks for them (default 16 KiB; -1: all in
	// memory), so large values cost no memory and no read at start.
	RetainedColdAbove int `yaml:"retained_cold_above"`
	// QueuedBytesPerUser bounds the bytes in the durable queues of all of
	// one principal's sessions and subscriptions (MQTT persistent
	// sessions, XMPP topic subscriptions). Default: a quarter of the free
	// space of the data directory's file system at start, between 1 MiB
	// and 4 GiB, so that one user's quota runs out before the disk does.
	QueuedBytesPerUser int64 `yaml:"queued_bytes_per_user"`
	// OfflineBytesPerUser bounds the bytes of the XMPP chat messages kept
	// for one offline user (xmpp.DefaultOfflineMaxBytes, 16 MiB), beside
	// the count bound of 1,000.
	OfflineBytesPerUser int64 `yaml:"offline_bytes_per_user"`
	// DiskFreeMin is the free space of the data directory's file system
	// under which /healthz reports disk pressure (status "degraded").
	// Default: 64 MiB or 5% of the file system, whichever is smaller.
	DiskFreeMin int64 `yaml:"disk_free_min"`
}

// Storage quota defaults (see StorageLimits).
const (
	DefaultRetainedPerUser      = 1000
	DefaultRetainedBytesPerUser = 64 << 20
	DefaultRetainedTotal        = 100000
	DefaultRetainedBytesTotal   = 256 << 20
	DefaultRetainedColdAbove    = 16 << 10
	// The default queued-bytes quota is QueuedShareOfFree of the free
	// space at start, clamped to [MinQueuedBytesPerUser,
	// MaxQueuedBytesPerUser].
	QueuedShareOfFree     = 4
	MinQueuedBytesPerUser = 1 << 20
	MaxQueuedBytesPerUser = 4 << 30
	DefaultDiskFreeMin    = 64 << 20
	// DiskFreeMinPercent is the share of the file system under which disk
	// pressure is reported when it is smaller than DefaultDiskFreeMin.
	DiskFreeMinPercent = 5
)

// validate names the first field out of range.
func (l StorageLimits) validate() error {
	for name, v := range map[string]int64{
		"limits.retained_per_user": int64(l.RetainedPerUser), "limits.retained_bytes_per_user": l.RetainedBytesPerUser,
		"limits.retained_total": int64(l.RetainedTotal), "limits.retained_bytes_total": l.RetainedBytesTotal,
		"limits.queued_bytes_per_user": l.QueuedBytesPerUser, "limits.disk_free_min": l.DiskFreeMin,
		"limits.offline_bytes_per_user": l.OfflineBytesPerUser, "limits.retained_cold_above": int64(l.RetainedColdAbove),
	} {
		if v < -1 {
			return fmt.Errorf("%s %d: want a size, 0 for the default or -1 for no bound", name, v)
		}
	}
	return nil
}

// pick is v, or def for 0, or 0 (no bound) for -1.
func pick[T int | int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// quotas turns the limits into the bus's, with the data directory's free
// space for the default queued-bytes quota.
func (l StorageLimits) quotas(dataDir string) broker.Quotas {
	def := int64(MaxQueuedBytesPerUser)
	if free, _, err := diskSpace(dataDir); err == nil {
		def = min(max(int64(free/QueuedShareOfFree), MinQueuedBytesPerUser), MaxQueuedBytesPerUser)
	}
	return broker.Quotas{
		RetainedPerPrincipal:      pick(l.RetainedPerUser, DefaultRetainedPerUser),
		RetainedBytesPerPrincipal: pick(l.RetainedBytesPerUser, DefaultRetainedBytesPerUser),
		RetainedTotal:             pick(l.RetainedTotal, DefaultRetainedTotal),
		RetainedBytesTotal:        pick(l.RetainedBytesTotal, DefaultRetainedBytesTotal),
		QueuedBytesPerPrincipal:   pick(l.QueuedBytesPerUser, def),
	}
}

// offlineMaxBytes is xmpp.Config.OfflineMaxBytes: 0 the default, -1 none.
func (l StorageLimits) offlineMaxBytes() int64 { return l.OfflineBytesPerUser }

// diskFreeMin is the disk-pressure threshold for a file system of total
// bytes.
func (l StorageLimits) diskFreeMin(total uint64) uint64 {
	if l.DiskFreeMin != 0 {
		return uint64(max(l.DiskFreeMin, 0))
	}
	return min(DefaultDiskFreeMin, total*DiskFreeMinPercent/100)
}

// storageHealth adds the store's write health and the disk's free space
// to r: a store that fails its writes makes the hub unavailable (QoS >= 1
// is refused everywhere); disk pressure only degrades it (everything
// still works, the operator should act).
func (h *Hub) storageHealth(r *adapters.HealthReport) {
	if h.Store == nil {
		return
	}
	if r.Store == nil {
		r.Store = &adapters.StoreHealth{}
	}
	wh := h.Store.WriteHealth()
	r.Store.WriteError, r.Store.WriteFailing, r.Store.ReadOnly = wh.LastError, wh.Failing, wh.ReadOnly
	if !wh.LastErrorAt.IsZero() {
		r.Store.WriteErrorAt = wh.LastErrorAt.UTC().Format(time.RFC3339)
	}
	if wh.Failing {
		what := "store: writes failing"
		if wh.ReadOnly {
			what = "store: read-only"
		}
		r.Errors = append(r.Errors, what+": "+wh.LastError)
	}
	free, total, err := diskSpace(h.cfg.DataDir)
	if err != nil {
		return
	}
	minFree := h.cfg.Limits.Storage.diskFreeMin(total)
	r.Store.DiskFree, r.Store.DiskTotal, r.Store.DiskFreeMin = free, total, minFree
	if free < minFree {
		r.Store.DiskPressure = true
		r.Warnings = append(r.Warnings, fmt.Sprintf("disk: %s free on the store's file system (%s), under limits.disk_free_min %s",
			sizeOf(free), h.cfg.DataDir, sizeOf(minFree)))
	}
}

// sizeOf says n bytes in KiB or MiB.
func sizeOf(n uint64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// quotaCollector exports the storage quotas' figures and the disk's.
type quotaCollector struct{ h *Hub }

var (
	quotaRefused   = prometheus.NewDesc("hub_quota_refused_total", "Publishes refused because a principal or the hub was past a storage quota.", nil, nil)
	quotaDropped   = prometheus.NewDesc("hub_quota_dropped_total", "Envelopes not queued for a subscription whose owner was past its queued-bytes quota.", nil, nil)
	retainedBytes  = prometheus.NewDesc("hub_retained_bytes", "Topic and payload bytes of the retained values.", nil, nil)
	queuedBytes    = prometheus.NewDesc("hub_queued_bytes", "Topic and payload bytes in the durable queues of principals' subscriptions.", nil, nil)
	diskFree       = prometheus.NewDesc("hub_disk_free_bytes", "Free bytes on the store's file system.", nil, nil)
	diskFreeMin    = prometheus.NewDesc("hub_disk_free_min_bytes", "Free bytes under which /healthz reports disk pressure.", nil, nil)
	storeFailing   = prometheus.NewDesc("hub_store_write_failing", "1 while the store's writes fail for the store's own reason (disk full, I/O error, read-only).", nil, nil)
	storeWriteFail = prometheus.NewDesc("hub_store_write_failures_total", "Store writes that failed.", nil, nil)
)

func (quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{quotaRefused, quotaDropped, retainedBytes, queuedBytes, diskFree, diskFreeMin, storeFailing, storeWriteFail} {
		ch <- d
	}
}

func (c quotaCollector) Collect(ch chan<- prometheus.Metric) {
	if m, ok := c.h.Bus.(interface{ QuotaStats() broker.QuotaStats }); ok { // the in-process bus, the NATS bus
		s := m.QuotaStats()
		ch <- prometheus.MustNewConstMetric(quotaRefused, prometheus.CounterValue, float64(s.Refused))
		ch <- prometheus.MustNewConstMetric(quotaDropped, prometheus.CounterValue, float64(s.Dropped))
		ch <- prometheus.MustNewConstMetric(retainedBytes, prometheus.GaugeValue, float64(s.Total.RetainedBytes))
		ch <- prometheus.MustNewConstMetric(queuedBytes, prometheus.GaugeValue, float64(s.Total.QueuedBytes))
	}
	if free, total, err := diskSpace(c.h.cfg.DataDir); err == nil {
		ch <- prometheus.MustNewConstMetric(diskFree, prometheus.GaugeValue, float64(free))
		ch <- prometheus.MustNewConstMetric(diskFreeMin, prometheus.GaugeValue, float64(c.h.cfg.Limits.Storage.diskFreeMin(total)))
	}
	if c.h.Store != nil {
		wh := c.h.Store.WriteHealth()
		failing := 0.0
		if wh.Failing {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(storeFailing, prometheus.GaugeValue, failing)
		ch <- prometheus.MustNewConstMetric(storeWriteFail, prometheus.CounterValue, float64(wh.Failed))
	}
}
