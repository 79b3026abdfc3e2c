package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
)

// Backup writes a consistent copy of the database to path (VACUUM INTO),
// while the hub keeps running. path must not exist yet.
func (s *Store) Backup(ctx context.Context, path string) error {
	if path == "" {
		return errors.New("store: backup: empty path")
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("store: backup to %s: %w", path, os.ErrExist)
	}
	// A connection of its own: VACUUM cannot run inside the writer's
	// transactions, and the reader pool is query-only.
	// FULL, as before sync_interval: the copy is synced as it is written.
	db, err := sql.Open("sqlite", dsn(s.path, false, SyncAlways))
	if err != nil {
		return fmt.Errorf("store: backup to %s: %w", path, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("store: backup to %s: %w", path, err)
	}
	return nil
}
