package gateway

import (
	"strings"
	"testing"
)

// TestStorageLimits checks the defaults, -1 as no bound, the default
// queued-bytes quota taken from the free space, and the refusal of a
// value below -1 naming its key.
func TestStorageLimits(t *testing.T) {
	dir := t.TempDir()
	q := StorageLimits{}.quotas(dir)
	if q.RetainedPerPrincipal != DefaultRetainedPerUser || q.RetainedBytesPerPrincipal != DefaultRetainedBytesPerUser ||
		q.RetainedTotal != DefaultRetainedTotal || q.RetainedBytesTotal != DefaultRetainedBytesTotal {
		t.Errorf("default quotas %+v", q)
	}
	free, _, err := diskSpace(dir)
	if err == nil {
		want := min(max(int64(free/QueuedShareOfFree), MinQueuedBytesPerUser), MaxQueuedBytesPerUser)
		if q.QueuedBytesPerPrincipal != want {
			t.Errorf("default queued bytes %d, want %d (a quarter of %d free)", q.QueuedBytesPerPrincipal, want, free)
		}
	}
	q = StorageLimits{RetainedPerUser: -1, QueuedBytesPerUser: -1, RetainedBytesTotal: 5}.quotas(dir)
	if q.RetainedPerPrincipal != 0 || q.QueuedBytesPerPrincipal != 0 || q.RetainedBytesTotal != 5 {
		t.Errorf("-1 and explicit values: %+v", q)
	}
	for _, tc := range []struct {
		total uint64
		l     StorageLimits
		want  uint64
	}{
		{1 << 40, StorageLimits{}, DefaultDiskFreeMin},
		{100 << 20, StorageLimits{}, 5 << 20},
		{1 << 40, StorageLimits{DiskFreeMin: 1 << 30}, 1 << 30},
		{1 << 40, StorageLimits{DiskFreeMin: -1}, 0},
	} {
		if got := tc.l.diskFreeMin(tc.total); got != tc.want {
			t.Errorf("disk_free_min of %+v on %d bytes: %d, want %d", tc.l, tc.total, got, tc.want)
		}
	}
	for key, l := range map[string]StorageLimits{
		"limits.retained_per_user":      {RetainedPerUser: -2},
		"limits.queued_bytes_per_user":  {QueuedBytesPerUser: -7},
		"limits.disk_free_min":          {DiskFreeMin: -2},
		"limits.offline_bytes_per_user": {OfflineBytesPerUser: -3},
	} {
		c := Defaults()
		c.Limits.Storage = l
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%+v: err %v, want one naming %s", l, err, key)
		}
	}
}
