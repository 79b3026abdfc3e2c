package store

import (
	"errors"
	"strings"
	"sync"
	"time"
)

// WriteHealth is what the store's writer knows of its own health: the
// last write that failed for a reason of the store rather than of the
// write (the disk full, an I/O error, a read-only file), and whether a
// write succeeded since.
type WriteHealth struct {
	// LastError is the last such failure ("" : none since start) and
	// LastErrorAt its time.
	LastError   string
	LastErrorAt time.Time
	// Failing is true while no write has succeeded since LastError, and
	// for FaultWindow after it whatever succeeded since (on a full disk
	// small writes may still fit while the others fail).
	Failing bool
	// ReadOnly is true when that failure said the database is read-only.
	ReadOnly bool
	// Failed counts the writes that failed, for whatever reason.
	Failed uint64
}

// FaultWindow is how long a store fault keeps WriteHealth.Failing set.
const FaultWindow = 30 * time.Second

// writeHealth is the writer's record behind WriteHealth.
type writeHealth struct {
	mu       sync.Mutex
	last     string
	at       time.Time
	failing  bool
	readOnly bool
}

// SQLite primary result codes that say the store itself is in trouble.
const (
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteCorrupt  = 11
	sqliteFull     = 13
	sqliteCantOpen = 14
)

// storeFault reports whether err is the store's fault, not the write's,
// and whether it says read-only.
func storeFault(err error) (fault, readOnly bool) {
	var c interface{ Code() int }
	if errors.As(err, &c) {
		switch c.Code() & 0xff {
		case sqliteReadOnly:
			return true, true
		case sqliteIOErr, sqliteCorrupt, sqliteFull, sqliteCantOpen:
			return true, false
		}
		return false, false
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "readonly database"), strings.Contains(msg, "read-only file system"):
		return true, true
	case strings.Contains(msg, "disk is full"), strings.Contains(msg, "disk I/O error"),
		strings.Contains(msg, "no space left on device"):
		return true, false
	}
	return false, false
}

// note records the outcome of one committed or failed batch: batchErr
// fails the batch, results are the ops' own.
func (h *writeHealth) note(batchErr error, results []error) {
	var fault error
	ok := false // some write committed
	if batchErr != nil {
		fault = batchErr // a begin, a savepoint or a commit failed: the store's
	}
	for _, r := range results {
		if r == nil {
			ok = batchErr == nil
			continue
		}
		if f, _ := storeFault(r); f {
			fault = r
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if fault != nil {
		h.last, h.at, h.failing = fault.Error(), time.Now(), true
		_, h.readOnly = storeFault(fault)
		return
	}
	if ok {
		h.failing, h.readOnly = false, false
	}
}

// fault records a failure of the store outside any write: a WAL sync
// that failed (sync.go), after which acknowledged writes may not survive
// a power loss.
func (h *writeHealth) fault(err error) {
	_, readOnly := storeFault(err)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last, h.at, h.failing, h.readOnly = err.Error(), time.Now(), true, readOnly
}

// WriteHealth returns the writer's health (the zero value for a store
// opened read-only).
func (s *Store) WriteHealth() WriteHealth {
	if s.wr == nil {
		return WriteHealth{}
	}
	h := &s.wr.health
	h.mu.Lock()
	defer h.mu.Unlock()
	failing := h.failing || !h.at.IsZero() && time.Since(h.at) < FaultWindow
	return WriteHealth{LastError: h.last, LastErrorAt: h.at, Failing: failing, ReadOnly: h.readOnly,
		Failed: s.wr.failed.Load()}
}
