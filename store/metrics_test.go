package store

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		if err := s.Enqueue(ctx, env("t", "x", 1), refs("a", "b")); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.AddUser(ctx, "", "pw", "user") // rejected before it reaches the writer
	if err := s.AddDevice(ctx, Device{ID: "d"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDevice(ctx, Device{ID: "d"}); err == nil {
		t.Fatal("duplicate device accepted")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			switch {
			case m.GetCounter() != nil:
				got[mf.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil && len(m.GetLabel()) == 0:
				got[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				got[mf.GetName()] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"hub_store_queued_envelopes":   6,
		"hub_store_writes_total":       4,
		"hub_store_write_errors_total": 1,
		"hub_store_integrity_ok":       1,
		// The default sync_interval.
		"hub_store_sync_interval_seconds": 1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if got["hub_store_transactions_total"] < 1 || got["hub_store_commit_seconds"] < 1 {
		t.Errorf("transactions %v, commit observations %v", got["hub_store_transactions_total"], got["hub_store_commit_seconds"])
	}
	// writes, errors, withdrawn writes, transactions, queued, 2 file
	// sizes, integrity, sync interval, WAL syncs and their failures,
	// commit histogram.
	if series != 12 {
		t.Errorf("%d series, want 12", series)
	}
}
