package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		e := env("sensors/t", fmt.Sprint(i), 0)
		e.Time = base.Add(time.Duration(i) * time.Minute)
		if err := s.AppendHistory(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendHistory(ctx, env("other", "x", 0)); err != nil {
		t.Fatal(err)
	}
	payloads := func(since, until time.Time, limit int) string {
		t.Helper()
		es, err := s.History(ctx, "sensors/t", since, until, limit)
		if err != nil {
			t.Fatal(err)
		}
		var p []string
		for _, e := range es {
			p = append(p, string(e.Payload))
		}
		return strings.Join(p, ",")
	}
	for _, tc := range []struct {
		since, until time.Time
		limit        int
		want         string
	}{
		{time.Time{}, time.Time{}, 3, "9,8,7"},
		{time.Time{}, time.Time{}, 100, "9,8,7,6,5,4,3,2,1,0"},
		{base.Add(2 * time.Minute), base.Add(5 * time.Minute), 100, "4,3,2"},
		{base.Add(time.Hour), time.Time{}, 10, ""},
	} {
		if got := payloads(tc.since, tc.until, tc.limit); got != tc.want {
			t.Errorf("History(%v, %v, %d) = %s, want %s", tc.since, tc.until, tc.limit, got, tc.want)
		}
	}
	n, err := s.PruneHistory(ctx, base.Add(5*time.Minute))
	// Five of sensors/t, and the other topic's (its time is in 2023).
	if err != nil || n != 6 {
		t.Errorf("PruneHistory = %d, %v; want 6", n, err)
	}
	if got := payloads(time.Time{}, time.Time{}, 100); got != "9,8,7,6,5" {
		t.Errorf("after prune: %s", got)
	}
	if _, err := s.History(ctx, "sensors/t", time.Time{}, time.Time{}, 0); err == nil {
		t.Error("limit 0 accepted")
	}
	for _, bad := range []string{"", "a/#"} {
		if err := s.AppendHistory(ctx, env(bad, "x", 0)); err == nil {
			t.Errorf("AppendHistory(%q) succeeded", bad)
		}
	}
}

func TestBackup(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddUser(ctx, "alice", "alicepw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(ctx, filepath.Join(dst, FileName)); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(ctx, filepath.Join(dst, FileName)); err == nil {
		t.Error("Backup over an existing file succeeded")
	}
	c := openDir(t, dst)
	if role, err := c.VerifyPassword(ctx, "alice", "alicepw"); err != nil || role != adapters.RoleUser {
		t.Errorf("backup: VerifyPassword = %q, %v", role, err)
	}
}
