package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// walk follows the Link rel="next" pages from path and returns every
// item's key and the size of each page.
func walk[T any](t *testing.T, h *testHub, path, auth string, key func(T) string) (keys []string, pages []int) {
	t.Helper()
	for path != "" {
		status, hdr, body := h.do("GET", path, auth, "", "")
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, body)
		}
		var items []T
		if err := json.Unmarshal([]byte(body), &items); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		for _, it := range items {
			keys = append(keys, key(it))
		}
		pages = append(pages, len(items))
		path = ""
		if l := hdr.Get("Link"); l != "" {
			next, ok := strings.CutPrefix(l, "<")
			next, _, ok2 := strings.Cut(next, `>; rel="next"`)
			if !ok || !ok2 {
				t.Fatalf("Link %q", l)
			}
			if hdr.Get(HeaderNext) != keys[len(keys)-1] {
				t.Fatalf("%s %q, last key %q", HeaderNext, hdr.Get(HeaderNext), keys[len(keys)-1])
			}
			path = next
		}
		if len(pages) > 100 {
			t.Fatal("more than 100 pages")
		}
	}
	return keys, pages
}

// TestRetainedFilterPages checks that a filter read is paginated: limit
// (default and max), the Link and X-Hub-Next of every page but the last,
// every value once and in topic order, pages cut by bytes, and bad limits
// refused with 400.
func TestRetainedFilterPages(t *testing.T) {
	t.Parallel()
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain bus %v", plain), func(t *testing.T) {
			t.Parallel()
			testRetainedFilterPages(t, startHub(t, hubOpts{plainBus: plain}))
		})
	}
}

func testRetainedFilterPages(t *testing.T, h *testHub) {
	ctx := context.Background()
	for i := range 250 {
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: fmt.Sprintf("p/%03d", i), Payload: []byte("v"), Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	// 10 values of 1 MiB: MaxPageBytes (4 MiB) holds 4 a page.
	big := strings.Repeat("b", 1<<20)
	for i := range 10 {
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: fmt.Sprintf("big/%02d", i), Payload: []byte(big), Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	topic := func(e EnvelopeJSON) string { return e.Topic }
	for _, tc := range []struct {
		name, path string
		pages      []int
		first      string
	}{
		{"default limit", "/api/v1/topics/p/%23", []int{100, 100, 50}, "p/000"},
		{"limit 120", "/api/v1/topics/p/%23?limit=120", []int{120, 120, 10}, "p/000"},
		{"after", "/api/v1/topics/p/%23?after=p/199&limit=1000", []int{50}, "p/200"},
		{"one page", "/api/v1/topics/p/%2B?limit=1000", []int{250}, "p/000"},
		{"bytes", "/api/v1/topics/big/%23", []int{4, 4, 2}, "big/00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, pages := walk(t, h, tc.path, "", topic)
			if fmt.Sprint(pages) != fmt.Sprint(tc.pages) {
				t.Errorf("pages %v, want %v", pages, tc.pages)
			}
			seen := map[string]bool{}
			for i, k := range keys {
				if seen[k] || i > 0 && k <= keys[i-1] {
					t.Fatalf("key %q out of order or twice", k)
				}
				seen[k] = true
			}
			if keys[0] != tc.first {
				t.Errorf("first %q, want %q", keys[0], tc.first)
			}
		})
	}
	for _, bad := range []string{"0", "1001", "x", "-1", ""} {
		status, _, body := h.do("GET", "/api/v1/topics/p/%23?limit="+bad, "", "", "")
		if status != http.StatusBadRequest || !strings.Contains(errorOf(t, body), "limit") {
			t.Errorf("limit=%q: %d %s, want 400 naming limit", bad, status, body)
		}
	}
}

// TestListPages checks the pagination of the users and devices lists.
func TestListPages(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	ctx := context.Background()
	if err := h.st.AddUser(ctx, "admin", "adminpw", adapters.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	for i := range 14 {
		if err := h.st.AddUser(ctx, fmt.Sprintf("u%02d", i), "pw-long-enough", adapters.RoleUser); err != nil {
			t.Fatal(err)
		}
		status, _, body := h.do("POST", "/api/v1/devices", "admin:adminpw", "application/json", fmt.Sprintf(`{"id":"d%02d"}`, i))
		if status != http.StatusCreated {
			t.Fatalf("add device: %d %s", status, body)
		}
	}
	users, pages := walk(t, h, "/api/v1/users?limit=5", "admin:adminpw", func(u struct{ Name string }) string { return u.Name })
	if len(users) != 15 || fmt.Sprint(pages) != "[5 5 5]" {
		t.Errorf("users %v in pages %v, want 15 in [5 5 5]", users, pages)
	}
	devs, pages := walk(t, h, "/api/v1/devices?limit=10", "admin:adminpw", func(d struct{ ID string }) string { return d.ID })
	if len(devs) != 14 || fmt.Sprint(pages) != "[10 4]" {
		t.Errorf("devices %v in pages %v, want 14 in [10 4]", devs, pages)
	}
	if status, _, _ := h.do("GET", "/api/v1/devices?limit=5000", "admin:adminpw", "", ""); status != http.StatusBadRequest {
		t.Errorf("devices limit=5000: %d, want 400", status)
	}
}

// FuzzParsePageLimit: a limit is accepted only as the decimal form of
// 1..MaxPageLimit, and a refusal is a bad request naming limit.
func FuzzParsePageLimit(f *testing.F) {
	for _, s := range []string{"1", "100", "1000", "0", "1001", "-1", "+5", "05", "x", "", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parsePageLimit(s)
		if err != nil {
			if httpStatus(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "limit") {
				t.Fatalf("%q: %v is not a 400 naming limit", s, err)
			}
			return
		}
		if n < 1 || n > MaxPageLimit || fmt.Sprint(n) != s {
			t.Fatalf("%q accepted as %d", s, n)
		}
	})
}
