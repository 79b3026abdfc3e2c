package adapters

import (
	"mime"
	"strconv"
	"testing"
)

// TestMediaType: MediaType answers as mime.ParseMediaType does, from the
// cache as on the first call; the cache stays within its bound, and a type
// asked for after it filled up is cached again.
func TestMediaType(t *testing.T) {
	for _, ct := range []string{"application/json", "Application/JSON; charset=utf-8", "text/plain; charset", ";;", "", " ", "a/b; q=\"x\"", "image/png"} {
		mt, _, err := mime.ParseMediaType(ct)
		for i := range 2 {
			got, ok := MediaType(ct)
			if ok != (err == nil) || ok && got != mt {
				t.Errorf("call %d: MediaType(%q) = %q, %v; mime says %q, %v", i, ct, got, ok, mt, err)
			}
		}
	}
	for i := range 2 * maxCachedTypes {
		ct := "x/y" + strconv.Itoa(i)
		if got, ok := MediaType(ct); !ok || got != ct {
			t.Fatalf("MediaType(%q) = %q, %v", ct, got, ok)
		}
	}
	if n := len(*mediaTypes.Load()); n > maxCachedTypes {
		t.Errorf("%d types cached, bound %d", n, maxCachedTypes)
	}
	MediaType("application/json")
	if _, ok := (*mediaTypes.Load())["application/json"]; !ok {
		t.Error("application/json not cached after the cache filled up")
	}
}

// BenchmarkMediaType: a content type the cache holds.
func BenchmarkMediaType(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := MediaType("application/json; charset=utf-8"); !ok {
			b.Fatal("not parsed")
		}
	}
}
