package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestPprofServer: --pprof-addr serves the profile index and the
// goroutine profile on an address of its own, and stops.
func TestPprofServer(t *testing.T) {
	p := &pprofServer{addr: "127.0.0.1:0", log: slog.New(slog.DiscardHandler)}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.Addrs()["pprof"]
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "goroutine") {
			t.Fatalf("GET %s: %d %.80s", path, resp.StatusCode, b)
		}
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/debug/pprof/"); err == nil {
		t.Fatal("still serving after Stop")
	}
}
