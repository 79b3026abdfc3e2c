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
