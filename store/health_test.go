package store

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hubsmith/hub/broker"
)

type codeErr int

func (c codeErr) Error() string { return fmt.Sprintf("sqlite error %d", int(c)) }
func (c codeErr) Code() int     { return int(c) }

// TestWriteHealthNote checks which write failures count as the store's
// and that a later successful write clears Failing.
func TestWriteHealthNote(t *testing.T) {
	for _, tc := range []struct {
		name              string
		batch             error
		results           []error
		failing, readOnly bool
	}{
		{"ok", nil, []error{nil}, false, false},
		{"constraint", nil, []error{codeErr(19)}, false, false},
		{"full", nil, []error{fmt.Errorf("enqueue: %w", codeErr(13))}, true, false},
		{"ioerr extended", nil, []error{nil, codeErr(10 | 3<<8)}, true, false},
		{"readonly", nil, []error{codeErr(8)}, true, true},
		{"commit failed", errors.New("commit: no space left on device"), []error{nil}, true, false},
		{"text only", nil, []error{errors.New("attempt to write a readonly database")}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h writeHealth
			h.note(tc.batch, tc.results)
			if h.failing != tc.failing || h.readOnly != tc.readOnly {
				t.Fatalf("failing %v read-only %v, want %v %v", h.failing, h.readOnly, tc.failing, tc.readOnly)
			}
			if tc.failing && h.last == "" {
				t.Error("no last error recorded")
			}
			h.note(nil, []error{nil})
			if h.failing || h.readOnly {
				t.Error("a successful write did not clear the failure")
			}
			if tc.failing && h.last == "" {
				t.Error("the last error was forgotten")
			}
		})
	}
}

// TestWriteHealthOfStore checks a healthy store's report.
func TestWriteHealthOfStore(t *testing.T) {
	s := openTest(t)
	if err := s.SaveSubscription(t.Context(), broker.DurableSubscription{ID: "h", Filters: []string{"x"}, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if h := s.WriteHealth(); h.Failing || h.LastError != "" {
		t.Errorf("healthy store reports %+v", h)
	}
}
