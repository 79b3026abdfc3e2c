package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIntegrityCheck: a sound store passes the check at Open; one whose
// pages were damaged on disk (a power cut on a card without write
// barriers) still opens, reports the damage, and keeps serving what is
// intact.
func TestIntegrityCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Check(); !c.OK || len(c.Problems) != 0 {
		t.Fatalf("fresh store: %+v", c)
	}
	if err := s.AddUser(ctx, "alice", "alicepw", "user"); err != nil {
		t.Fatal(err)
	}
	big := []byte(strings.Repeat("x", 3000))
	for i := range 200 {
		if err := s.KVPut(ctx, "bulk", fmt.Sprintf("k%04d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Smash pages in the middle of the bulk data (page size 4096), not the
	// schema or the users at the start.
	const page = 4096
	if len(b) < 40*page {
		t.Fatalf("database only %d bytes", len(b))
	}
	for i := 30 * page; i < 32*page; i++ {
		b[i] = 0xA5
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, dir)
	if err != nil {
		t.Fatalf("a damaged store must still open: %v", err)
	}
	defer s.Close()
	c := s.Check()
	if c.OK || len(c.Problems) == 0 {
		t.Fatalf("damaged store passed its check: %+v", c)
	}
	t.Logf("check took %v, problems: %q", c.Took, c.Problems)
	if _, err := s.VerifyPassword(ctx, "alice", "alicepw"); err != nil {
		t.Errorf("an intact user after the damage: %v", err)
	}
}
