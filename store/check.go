package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// maxCheckProblems bounds the problems an integrity check reports.
const maxCheckProblems = 20

// CheckResult is the outcome of the integrity check Open runs.
type CheckResult struct {
	OK       bool
	Problems []string      // SQLite's quick_check messages when not OK
	Took     time.Duration // how long the check took
}

// Check returns the result of the integrity check run when the store was
// opened.
func (s *Store) Check() CheckResult { return s.check }

// checkCacheKiB is the page cache of the integrity check's connection.
// The check reads every page of the database once; through a connection
// with SQLite's default cache (2 MiB) a database of more than 2 MiB left
// the hub 2-4 MB of memory larger for good, since SQLite's allocator
// (modernc.org/libc) keeps what it freed.
const checkCacheKiB = 256

// quickCheckOnce runs quickCheck on a connection of its own with a small
// page cache (checkCacheKiB), closed afterwards.
func quickCheckOnce(ctx context.Context, path string, interval time.Duration) (CheckResult, error) {
	db, err := sql.Open("sqlite", dsn(path, false, interval))
	if err != nil {
		return CheckResult{}, fmt.Errorf("integrity check: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the pragma below holds for this connection only
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size=-%d", checkCacheKiB)); err != nil {
		return CheckResult{}, fmt.Errorf("integrity check: %w", err)
	}
	return quickCheck(ctx, db)
}

// quickCheck runs SQLite's quick_check: the structure of every page and
// index (not the contents, which envelopes' CRC-32C covers; see
// broker/codec.go). SQLite has replayed the WAL by then, so it checks
// what a crash or power cut left.
func quickCheck(ctx context.Context, db *sql.DB) (CheckResult, error) {
	start := time.Now()
	rows, err := db.QueryContext(ctx, fmt.Sprintf("PRAGMA quick_check(%d)", maxCheckProblems))
	if err != nil {
		return CheckResult{}, fmt.Errorf("integrity check: %w", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return CheckResult{}, fmt.Errorf("integrity check: %w", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return CheckResult{}, fmt.Errorf("integrity check: %w", err)
	}
	res := CheckResult{OK: len(msgs) == 1 && msgs[0] == "ok", Took: time.Since(start)}
	if !res.OK {
		res.Problems = msgs
	}
	return res, nil
}
