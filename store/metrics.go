package store

import (
	"context"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descWrites = prometheus.NewDesc("hub_store_writes_total",
		"Writes committed to the store.", nil, nil)
	descWriteErrors = prometheus.NewDesc("hub_store_write_errors_total",
		"Writes that failed (constraint, disk full, closed store).", nil, nil)
	descWithdrawn = prometheus.NewDesc("hub_store_writes_withdrawn_total",
		"Durable queue writes withdrawn before they began: the one subscriber had acknowledged the envelope, so nothing was written.", nil, nil)
	descBatches = prometheus.NewDesc("hub_store_transactions_total",
		"Transactions committed; writes per transaction shows group commit at work.", nil, nil)
	descQueued = prometheus.NewDesc("hub_store_queued_envelopes",
		"Envelopes waiting in durable subscriber queues.", nil, nil)
	descBytes = prometheus.NewDesc("hub_store_file_bytes",
		"Size of the database files on disk.", []string{"file"}, nil)
	descIntegrity = prometheus.NewDesc("hub_store_integrity_ok",
		"1 when the database passed its integrity check at start, 0 when it did not (see the log).", nil, nil)
	descSyncInterval = prometheus.NewDesc("hub_store_sync_interval_seconds",
		"sync_interval: the longest a commit waits for its fsync after it returned; 0 for always (fsynced before it returns).", nil, nil)
	descWALSyncs = prometheus.NewDesc("hub_store_wal_syncs_total",
		"Periodic fsyncs of the WAL (sync_interval other than always).", nil, nil)
	descWALSyncFailures = prometheus.NewDesc("hub_store_wal_sync_failures_total",
		"Periodic fsyncs of the WAL that failed: what was committed since the last good one may not survive a power loss.", nil, nil)
)

// Collector returns a Prometheus collector for the store: writes,
// transactions, commit latency, durable queue depth and file sizes.
// Register it once (the commit latency histogram is created here).
func (s *Store) Collector() prometheus.Collector {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hub_store_commit_seconds",
		Help:    "Time to run and commit one write transaction (with its fsync when sync_interval is always).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12),
	})
	s.wr.setObserver(func(d time.Duration) { h.Observe(d.Seconds()) })
	return &collector{s: s, commit: h}
}

type collector struct {
	s      *Store
	commit prometheus.Histogram
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWrites
	ch <- descWriteErrors
	ch <- descWithdrawn
	ch <- descBatches
	ch <- descQueued
	ch <- descBytes
	ch <- descIntegrity
	ch <- descSyncInterval
	ch <- descWALSyncs
	ch <- descWALSyncFailures
	c.commit.Describe(ch)
}

// Collect implements prometheus.Collector; the queue depth costs one
// COUNT over the queue index per scrape.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	w := c.s.wr
	ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(w.writes.Load()))
	ch <- prometheus.MustNewConstMetric(descWriteErrors, prometheus.CounterValue, float64(w.failed.Load()))
	ch <- prometheus.MustNewConstMetric(descWithdrawn, prometheus.CounterValue, float64(w.withdrawn.Load()))
	ch <- prometheus.MustNewConstMetric(descBatches, prometheus.CounterValue, float64(w.batches.Load()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n int
	if err := c.s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM queue`).Scan(&n); err == nil {
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(n))
	}
	for _, f := range []struct{ label, path string }{{"db", c.s.path}, {"wal", c.s.path + "-wal"}} {
		var size int64
		if fi, err := os.Stat(f.path); err == nil {
			size = fi.Size()
		}
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(size), f.label)
	}
	ok := 0.0
	if c.s.check.OK {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(descIntegrity, prometheus.GaugeValue, ok)
	interval := 0.0
	var syncs, failures uint64
	if sy := c.s.syncer; sy != nil {
		interval = c.s.syncInterval.Seconds()
		syncs, failures = sy.syncs.Load(), sy.failures.Load()
	}
	ch <- prometheus.MustNewConstMetric(descSyncInterval, prometheus.GaugeValue, interval)
	ch <- prometheus.MustNewConstMetric(descWALSyncs, prometheus.CounterValue, float64(syncs))
	ch <- prometheus.MustNewConstMetric(descWALSyncFailures, prometheus.CounterValue, float64(failures))
	c.commit.Collect(ch)
}
