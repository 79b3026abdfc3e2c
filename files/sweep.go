package files

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hubsmith/hub/store"
)

// sweepBatch bounds the expired files one pass of Sweep looks at per
// query.
const sweepBatch = 100

func (s *Store) sweeper(ctx context.Context, every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("files: expiry sweep", "err", err)
			}
		}
	}
}

// Sweep removes the files whose expiry has passed (record, blob when no
// other file shares it, retained descriptor) and the slots past their
// time, and returns how many files went. It runs every
// Config.SweepInterval by itself.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	now := time.Now()
	s.slotMu.Lock()
	s.expireSlotsLocked(now)
	s.slotMu.Unlock()
	n := 0
	for {
		rs, err := s.cfg.DB.ExpiredFiles(ctx, now, sweepBatch)
		if err != nil {
			return n, err
		}
		gone := 0
		for _, r := range rs {
			// Only the expired upload, not one of the same name that
			// replaced it since the query.
			err := s.remove(ctx, r.Name, func(c store.FileRecord) bool {
				return c.SHA256 == r.SHA256 && c.Created.Equal(r.Created)
			})
			if err != nil && ctx.Err() != nil {
				return n, ctx.Err()
			}
			if err == nil {
				n++
				gone++
				s.log.Info("files: expired", "name", r.Name, "expired", r.Expires)
			}
		}
		if len(rs) < sweepBatch {
			return n, nil
		}
		if gone == 0 {
			// Every one failed: the next pass tries again.
			return n, fmt.Errorf("files: sweep: none of %d expired files could be removed", len(rs))
		}
	}
}

// sweepOrphanBlobs removes blobs no file refers to: a crash between the
// rename of a blob into place and its record's commit leaves one.
func (s *Store) sweepOrphanBlobs(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs, err := s.cfg.DB.FileBlobs(ctx)
	if err != nil {
		return err
	}
	return filepath.WalkDir(s.blobs, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !refs[d.Name()] {
			s.log.Info("files: removing a blob no file refers to", "path", p)
			return os.Remove(p)
		}
		return nil
	})
}
