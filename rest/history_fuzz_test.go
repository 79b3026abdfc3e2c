package rest

import (
	"net/http"
	"testing"
)

// FuzzHistoryParams: since, until, step and limit are accepted in range or
// refused with 400, never anything else.
func FuzzHistoryParams(f *testing.F) {
	for _, s := range []string{"", "0", "1764590400", "1764590400.5", "2026-12-01T12:00:00Z", "2026-12-01T12:00:00.123+01:00",
		"5m", "1h30m", "300", "0.001", "-1", "NaN", "1e300", "9223372036", "yesterday"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseTimeParam("since", s); err != nil && httpStatus(err) != http.StatusBadRequest {
			t.Fatalf("since %q: %v", s, err)
		}
		if d, err := parseStep(s); err == nil && s != "" && d < minHistoryStep {
			t.Fatalf("step %q -> %v", s, d)
		} else if err != nil && httpStatus(err) != http.StatusBadRequest {
			t.Fatalf("step %q: %v", s, err)
		}
		if n, err := parseLimit(s); err == nil && (n < 1 || n > MaxHistoryLimit) {
			t.Fatalf("limit %q -> %d", s, n)
		} else if err != nil && httpStatus(err) != http.StatusBadRequest {
			t.Fatalf("limit %q: %v", s, err)
		}
	})
}
